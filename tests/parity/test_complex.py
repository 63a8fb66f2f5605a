"""Complex params: "pytorch" against the real torch.optim.Adam/AdamW/NAdam, "optax" against optax.

``torch.optim`` steps a complex param as a pair of real ones
(``torch.view_as_real``): the real and imaginary parts each have their own
second moment. optax keeps one real second moment, of :math:`|g|^2`, and scales
the complex first moment by it. Each convention must be its framework's
optimizer on complex params too, in complex64 and complex128, and the two must
differ (so that the comparison can fail).

The problem is the parity problem's, in complex numbers: two arrays whose
gradient at step :math:`t` is :math:`s (a \\odot (p - c) + n_t)`, with real
curvatures :math:`a > 0`, complex centres :math:`c` and complex noise :math:`n_t`;
each side computes it from its own params.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.parity import harness as h

torch = pytest.importorskip(
    "torch", reason="the complex parity tests need torch: pip install -e '.[test]'"
)

STEPS = 50
SHAPES = {"vector": (7,), "matrix": (3, 4)}
SCALES = {"vector": 1.0, "matrix": 0.1}
REAL = {"complex64": "float32", "complex128": "float64"}
TOLERANCE = {"complex128": 1e-12, "complex64": 1e-5}
WD = 0.1

# (framework, reference optimizer, its kwargs, adam_jax factory, its kwargs)
CASES = [
    ("torch", "Adam", {}, "adam", {}),
    ("torch", "Adam", {"amsgrad": True}, "adam", {"amsgrad": True}),
    (
        "torch",
        "Adam",
        {"weight_decay": WD, "maximize": True},
        "adam",
        {"weight_decay": WD, "maximize": True},
    ),
    ("torch", "AdamW", {"weight_decay": WD}, "adamw", {"weight_decay": WD}),
    ("torch", "NAdam", {}, "nadam", {}),
    (
        "torch",
        "NAdam",
        {"weight_decay": WD, "decoupled_weight_decay": True},
        "nadam",
        {"weight_decay": WD, "decoupled_weight_decay": True},
    ),
    ("optax", "adam", {}, "adam", {}),
    ("optax", "amsgrad", {}, "adam", {"amsgrad": True}),
    ("optax", "adamw", {"weight_decay": WD}, "adamw", {"weight_decay": WD}),
    ("optax", "nadam", {}, "nadam", {}),
]
CONVENTION = {"torch": "pytorch", "optax": "optax"}


def case_id(case) -> str:
    framework, name, kwargs, _, _ = case
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    prefix = {"torch": "torch.optim.", "optax": "optax."}[framework]
    return f"{CONVENTION[framework]} = {prefix}{name}({args})"


@functools.cache
def problem() -> h.Problem:
    rng = np.random.default_rng(0)

    def unit(shape):
        return np.exp(2j * np.pi * rng.uniform(size=shape))

    p0, a, c, noise = {}, {}, {}, {}
    for k, shape in SHAPES.items():
        c[k] = rng.uniform(1.0, 2.0, size=shape) * unit(shape)
        p0[k] = c[k] + rng.uniform(0.2, 1.0, size=shape) * unit(shape)
        a[k] = rng.uniform(0.5, 2.0, size=shape)
        noise[k] = rng.normal(size=(STEPS, *shape)) + 1j * rng.normal(size=(STEPS, *shape))
    return h.Problem(p0, a, c, dict(SCALES), noise)


def relative_error(ours: dict, reference: dict) -> np.ndarray:
    """``_harness.relative_error`` of the real and imaginary parts as pairs of reals."""

    def as_real(trajectories):
        return {k: np.stack([v.real, v.imag], -1) for k, v in trajectories.items()}

    return h.relative_error(as_real(ours), as_real(reference))


def run_ours(factory: str, kwargs: dict, convention: str, dtype: str) -> dict:
    """``adam_jax.<factory>`` on the complex problem, in one jitted ``lax.scan``."""
    pr = problem()
    with h.precision(REAL[dtype]):
        tx = getattr(adam_jax, factory)(
            h.LR, h.B1, h.B2, eps=h.EPS, convention=convention, **kwargs
        )
        p0 = {k: jnp.asarray(v, dtype) for k, v in pr.p0.items()}
        a = {k: jnp.asarray(v, REAL[dtype]) for k, v in pr.a.items()}
        c = {k: jnp.asarray(v, dtype) for k, v in pr.c.items()}
        noise = {k: jnp.asarray(v, dtype) for k, v in pr.noise.items()}

        def step(carry, n):
            params, state = carry
            grads = {k: pr.s[k] * (a[k] * (params[k] - c[k]) + n[k]) for k in params}
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), noise)[1])
        out = {k: np.asarray(v) for k, v in run(p0).items()}
    assert all(v.dtype == dtype for v in out.values())
    return out


def run_optax(name: str, kwargs: dict, dtype: str) -> dict:
    """The real ``optax.<name>``, stepped as ``run_ours`` steps adam_jax."""
    pr = problem()
    with h.precision(REAL[dtype]):
        tx = getattr(optax, name)(h.LR, b1=h.B1, b2=h.B2, eps=h.EPS, **kwargs)
        p0 = {k: jnp.asarray(v, dtype) for k, v in pr.p0.items()}
        a = {k: jnp.asarray(v, REAL[dtype]) for k, v in pr.a.items()}
        c = {k: jnp.asarray(v, dtype) for k, v in pr.c.items()}
        noise = {k: jnp.asarray(v, dtype) for k, v in pr.noise.items()}

        def step(carry, n):
            params, state = carry
            grads = {k: pr.s[k] * (a[k] * (params[k] - c[k]) + n[k]) for k in params}
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), noise)[1])
        return {k: np.asarray(v) for k, v in run(p0).items()}


def run_torch(name: str, kwargs: dict, dtype: str, foreach: bool) -> dict:
    """The real ``torch.optim.<name>`` on complex tensors, default dtype the real one's."""
    pr = problem()
    cdtype, rdtype = getattr(torch, dtype), getattr(torch, REAL[dtype])
    params = {k: torch.tensor(v, dtype=cdtype).requires_grad_(True) for k, v in pr.p0.items()}
    a = {k: torch.tensor(v, dtype=rdtype) for k, v in pr.a.items()}
    c = {k: torch.tensor(v, dtype=cdtype) for k, v in pr.c.items()}
    noise = {k: torch.tensor(v, dtype=cdtype) for k, v in pr.noise.items()}
    opt = getattr(torch.optim, name)(
        list(params.values()), lr=h.LR, betas=(h.B1, h.B2), eps=h.EPS, foreach=foreach, **kwargs
    )
    out = {k: np.empty((STEPS, *v.shape), dtype) for k, v in params.items()}
    with h.torch_threads(1), h.torch_default_dtype(rdtype):
        for t in range(STEPS):
            with torch.no_grad():
                for k, p in params.items():
                    p.grad = pr.s[k] * (a[k] * (p - c[k]) + noise[k][t])
            opt.step()
            for k, p in params.items():
                out[k][t] = p.detach().numpy()
    return out


@functools.cache
def ours(index: int, dtype: str, convention: str | None = None) -> dict:
    framework, _, _, factory, kwargs = CASES[index]
    return run_ours(factory, kwargs, convention or CONVENTION[framework], dtype)


@functools.cache
def reference(index: int, dtype: str, foreach: bool = False) -> dict:
    framework, name, kwargs, _, _ = CASES[index]
    if framework == "torch":
        return run_torch(name, kwargs, dtype, foreach)
    return run_optax(name, kwargs, dtype)


def torch_indices():
    return [i for i, c in enumerate(CASES) if c[0] == "torch"]


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("index", torch_indices(), ids=lambda i: case_id(CASES[i]))
def test_pytorch_convention_matches_torch_on_complex(index, foreach, dtype):
    err = relative_error(ours(index, dtype), reference(index, dtype, foreach))
    assert err.max() <= TOLERANCE[dtype], f"{err.max():.3g} at step {err.argmax() + 1}"


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
@pytest.mark.parametrize(
    "index", [i for i, c in enumerate(CASES) if c[0] == "optax"], ids=lambda i: case_id(CASES[i])
)
def test_optax_convention_matches_optax_on_complex(index, dtype):
    err = relative_error(ours(index, dtype), reference(index, dtype))
    assert err.max() <= TOLERANCE[dtype], f"{err.max():.3g} at step {err.argmax() + 1}"


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_torch_and_optax_differ_on_complex(dtype):
    """The comparisons can fail: on complex params the two conventions are two optimizers.

    On real params Adam is the same in both; here "optax" (one moment of |g|^2,
    what adam_jax did for every convention before) is far from torch.optim.Adam,
    and "pytorch" far from optax.adam.
    """
    torch_case = next(
        i for i, c in enumerate(CASES) if c[0] == "torch" and c[3] == "adam" and not c[4]
    )
    optax_case = next(
        i for i, c in enumerate(CASES) if c[0] == "optax" and c[3] == "adam" and not c[4]
    )
    tol = 1e3 * TOLERANCE[dtype]
    assert (
        relative_error(ours(torch_case, dtype, "optax"), reference(torch_case, dtype)).max() > tol
    )
    assert (
        relative_error(ours(optax_case, dtype, "pytorch"), reference(optax_case, dtype)).max() > tol
    )
