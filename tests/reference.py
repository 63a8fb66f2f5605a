"""Float64 NumPy reference of Adam and AMSGrad, written from the equations.

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
