"""Float64 NumPy reference of Adam, AMSGrad and NAdam, written from the equations.

Independent of adam_jax (it must not import it): each convention is spelled
out as its framework or paper writes it, one coordinate array at a time.
"""

import numpy as np


class ReferenceAdam:
    """One parameter array's optimizer, stepping in float64 NumPy."""

    def __init__(
        self,
        shape,
        *,
        lr,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        eps_root=0.0,
        amsgrad=False,
        convention="pytorch",
        weight_decay=0.0,
        decoupled=False,
        maximize=False,
    ):
        self.hp = dict(lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, wd=weight_decay)
        self.amsgrad, self.convention = amsgrad, convention
        self.decoupled, self.maximize = decoupled, maximize
        self.t = 0
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.v_max = np.zeros(shape)

    def step(self, p, g):
        """Returns the new params after gradient ``g`` at params ``p``."""
        lr, b1, b2, eps, eps_root, wd = self.hp.values()
        lr = lr(self.t) if callable(lr) else lr
        self.t += 1
        t = self.t
        g = -g if self.maximize else g
        if wd and not self.decoupled:
            g = g + wd * p
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1**t, 1 - b2**t

        conv, ams = self.convention, self.amsgrad
        if conv in ("pytorch", "paper") and not (conv == "paper" and ams):
            # torch.optim.Adam; Kingma & Ba, Algorithm 1.
            if ams:
                self.v_max = np.maximum(self.v_max, self.v)
            r = self.v_max if ams else self.v
            step = (self.m / bc1) / (np.sqrt(r / bc2 + eps_root) + eps)
        elif conv == "optax":
            # optax.scale_by_adam / scale_by_amsgrad: max of bias-corrected nu.
            v_hat = self.v / bc2
            if ams:
                self.v_max = np.maximum(self.v_max, v_hat)
            r = self.v_max if ams else v_hat
            step = (self.m / bc1) / (np.sqrt(r + eps_root) + eps)
        elif conv == "keras":
            # keras.optimizers.Adam: alpha = lr * sqrt(1 - b2^t) / (1 - b1^t).
            if ams:
                self.v_max = np.maximum(self.v_max, self.v)
            r = self.v_max if ams else self.v
            step = np.sqrt(bc2) / bc1 * self.m / (np.sqrt(r + eps_root) + eps)
        elif conv == "paper":
            # Reddi, Kale & Kumar, Algorithm 2: no bias correction.
            self.v_max = np.maximum(self.v_max, self.v)
            step = self.m / (np.sqrt(self.v_max + eps_root) + eps)
        else:
            raise ValueError(conv)

        new_p = p - lr * step
        if wd and self.decoupled:
            new_p = new_p - lr * wd * p
        return new_p


class ReferenceNAdam:
    """NAdam (Dozat, 2016) for one parameter array, stepping in float64 NumPy.

    Each convention is written as its framework writes it: ``"pytorch"`` as
    ``torch.optim.NAdam``'s single-tensor loop, ``"keras"`` as
    ``keras.optimizers.Nadam.update_step``, ``"optax"`` as
    ``optax.scale_by_adam(nesterov=True)``, ``"paper"`` as Dozat's Algorithm 2
    with the schedule :math:`\\mu_t = \\beta_1 (1 - \\frac12 0.96^{t/250})`.
    ``momentum_decay`` (:math:`\\psi`) None takes the framework's: 0.004, 1
    (Keras' ``0.96 ** t``) or none (optax's constant :math:`\\mu_t = \\beta_1`).
    Coupled weight decay and ``maximize`` act on the gradient first, as in
    ``torch.optim.NAdam``; decoupled decay multiplies the params by
    :math:`1 - \\eta\\lambda` before the step, as torch (``decoupled_weight_decay``)
    and Keras (``weight_decay``) do.
    """

    DEFAULT_MOMENTUM_DECAY = {"pytorch": 4e-3, "paper": 4e-3, "keras": 1.0, "optax": None}

    def __init__(
        self,
        shape,
        *,
        lr,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        eps_root=0.0,
        momentum_decay=None,
        convention="pytorch",
        weight_decay=0.0,
        decoupled=False,
        maximize=False,
    ):
        if momentum_decay is None:
            momentum_decay = self.DEFAULT_MOMENTUM_DECAY[convention]
        self.lr, self.b1, self.b2, self.eps, self.eps_root = lr, b1, b2, eps, eps_root
        self.psi, self.convention = momentum_decay, convention
        self.wd, self.decoupled, self.maximize = weight_decay, decoupled, maximize
        self.t = 0
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.mu_product = 1.0

    def _mu(self, t):
        return self.b1 * (1.0 - 0.5 * 0.96 ** (t * self.psi))

    def step(self, p, g):
        """Returns the new params after gradient ``g`` at params ``p``."""
        lr, b1, b2, eps, eps_root = self.lr, self.b1, self.b2, self.eps, self.eps_root
        lr = lr(self.t) if callable(lr) else lr
        self.t += 1
        t = self.t
        g = -g if self.maximize else g
        if self.wd and self.decoupled:
            p = p * (1 - lr * self.wd)
        elif self.wd:
            g = g + self.wd * p

        conv = self.convention
        if conv in ("pytorch", "paper"):
            # torch.optim.NAdam; Dozat's Algorithm 2 (g' = g / (1 - prod mu_i), ...).
            mu, mu_next = self._mu(t), self._mu(t + 1)
            self.mu_product *= mu
            self.m = b1 * self.m + (1 - b1) * g
            self.v = b2 * self.v + (1 - b2) * g * g
            denom = np.sqrt(self.v / (1 - b2**t) + eps_root) + eps
            g_hat = g / (1 - self.mu_product)
            m_hat = self.m / (1 - self.mu_product * mu_next)
            m_bar = (1 - mu) * g_hat + mu_next * m_hat
            return p - lr * m_bar / denom
        if conv == "keras":
            # keras.optimizers.Nadam: u_product advanced before update_step.
            u_t, u_t_1 = self._mu(t), self._mu(t + 1)
            self.mu_product *= u_t
            self.m = self.m + (g - self.m) * (1 - b1)
            self.v = self.v + (g * g - self.v) * (1 - b2)
            m_hat = u_t_1 * self.m / (1 - self.mu_product * u_t_1) + (1 - u_t) * g / (
                1 - self.mu_product
            )
            v_hat = self.v / (1 - b2**t)
            return p - m_hat * lr / (np.sqrt(v_hat + eps_root) + eps)
        if conv == "optax":
            # optax.scale_by_adam(nesterov=True): mu_t = b1 throughout.
            if self.psi is not None:
                raise ValueError("optax's NAdam has no momentum schedule")
            self.m = b1 * self.m + (1 - b1) * g
            self.v = b2 * self.v + (1 - b2) * g * g
            mu_hat = b1 * self.m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            nu_hat = self.v / (1 - b2**t)
            return p - lr * mu_hat / (np.sqrt(nu_hat + eps_root) + eps)
        raise ValueError(conv)
