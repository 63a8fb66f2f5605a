"""Tests written for mutants of ``scripts/mutants.py`` that no other test killed.

Each compares adam_jax with an independent reference (the real PyTorch or optax
optimizer, or ``adam_jax.adam`` for ``fused_adam``) on a case the rest of the
suite did not reach: NAdam's momentum schedule, complex params, weight-decay
masks, 16-bit params' moment dtype, ``eps_root`` and a NaN already in AMSGrad's
maximum in the fused kernel.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

STEPS = 25


def _problem(shape=(6,), dtype=np.float64, seed=0):
    """Initial params and STEPS raw gradients; the gradient also pulls towards 0."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape)
    noise = rng.standard_normal((STEPS, *shape))
    if np.issubdtype(dtype, np.complexfloating):
        p0 = p0 + 1j * rng.standard_normal(shape)
        noise = noise + 1j * rng.standard_normal((STEPS, *shape))
    return p0.astype(dtype), noise.astype(dtype)


def _run_ours(tx, p0, noise):
    """Params after each step; the gradient at p is ``noise_t + 0.5 * p``."""

    def step(carry, n):
        p, state = carry
        updates, state = tx.update(n + 0.5 * p, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    p0 = jnp.asarray(p0)
    return np.asarray(jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[1])(p0, noise))


def _run_torch(make, p0, noise):
    """torch's optimizer, with its scalar state (NAdam's mu_product) in float64 too."""
    torch = pytest.importorskip("torch")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        p = torch.tensor(p0, requires_grad=True)
        opt = make([p])
        out = []
        for n in noise:
            p.grad = torch.tensor(n) + 0.5 * p.detach()
            opt.step()
            out.append(p.detach().numpy().copy())
    finally:
        torch.set_default_dtype(default)
    return np.stack(out)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum_decay": 0.05}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled": True}],
    ids=["default", "psi", "coupled", "decoupled"],
)
def test_nadam_matches_torch(x64, kwargs):
    torch = pytest.importorskip("torch")
    p0, noise = _problem()
    wd = kwargs.get("weight_decay", 0.0)
    decoupled = kwargs.get("decoupled", False)
    psi = kwargs.get("momentum_decay", 4e-3)
    expected = _run_torch(
        lambda ps: torch.optim.NAdam(
            ps, lr=0.05, weight_decay=wd, momentum_decay=psi, decoupled_weight_decay=decoupled
        ),
        p0,
        noise,
    )
    ours = adam_jax.nadam(
        0.05,
        momentum_decay=kwargs.get("momentum_decay"),
        weight_decay=wd,
        decoupled_weight_decay=decoupled,
    )
    np.testing.assert_allclose(_run_ours(ours, p0, noise), expected, rtol=1e-12, atol=1e-14)


def test_nadam_matches_optax(x64):
    p0, noise = _problem()
    expected = _run_ours(optax.nadam(0.05), p0, noise)
    actual = _run_ours(adam_jax.nadam(0.05, convention="optax"), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_complex_params_match_torch(x64, amsgrad):
    """torch.optim.Adam steps the real and imaginary parts apart (view_as_real)."""
    torch = pytest.importorskip("torch")
    p0, noise = _problem(dtype=np.complex128)
    expected = _run_torch(lambda ps: torch.optim.Adam(ps, lr=0.05, amsgrad=amsgrad), p0, noise)
    actual = _run_ours(adam_jax.adam(0.05, amsgrad=amsgrad), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


def test_complex_params_match_optax(x64):
    """optax keeps the real v of |g|^2 for a complex gradient."""
    p0, noise = _problem(dtype=np.complex128)
    expected = _run_ours(optax.adam(0.05), p0, noise)
    actual = _run_ours(adam_jax.adam(0.05, convention="optax"), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("as_callable", [False, True])
def test_mask(x64, as_callable):
    """Masked params are not decayed, as optax.adamw(mask=...); the others are (decoupled)."""
    p0, noise = _problem()
    params = {"w": jnp.asarray(p0), "b": jnp.asarray(p0[::-1].copy())}
    mask = {"w": True, "b": False}
    mask_arg = (lambda p: mask) if as_callable else mask

    def run(tx):
        state = tx.init(params)
        p = params
        for n in noise:
            grads = {"w": jnp.asarray(n), "b": jnp.asarray(n)}
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return p

    actual = run(adam_jax.adamw(0.05, weight_decay=0.5, mask=mask_arg))
    expected = run(optax.adamw(0.05, weight_decay=0.5, mask=mask))
    for k in params:
        np.testing.assert_allclose(actual[k], expected[k], rtol=1e-12, atol=1e-14)
    undecayed = run(adam_jax.adam(0.05))
    np.testing.assert_allclose(actual["b"], undecayed["b"], rtol=1e-12)
    assert np.max(np.abs(np.asarray(actual["w"] - undecayed["w"]))) > 1e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_params_keep_float32_moments(dtype):
    state = adam_jax.amsgrad(0.1).init(jnp.zeros(3, dtype))[0]
    assert state.mu.dtype == state.nu.dtype == state.nu_max.dtype == jnp.float32


def _fused_or_skip():
    if not adam_jax.fused_available() or jax.default_backend() != "cpu":
        pytest.skip("fused_adam's kernel is not built, or this is not a CPU backend")


def _both_steps(kwargs):
    """One jitted step of fused_adam and of adam + apply_updates."""
    fused = adam_jax.fused_adam(**kwargs)
    tx = adam_jax.adam(**kwargs)

    @jax.jit
    def reference(p, g, s):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    return fused, jax.jit(fused.step), reference


def test_fused_eps_root():
    _fused_or_skip()
    fused, step, reference = _both_steps(dict(learning_rate=1e-2, eps_root=1e-3))
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.standard_normal(50), jnp.float32)
    ours, ref = (p, fused.init(p)), (p, fused.init(p))
    for _ in range(5):
        g = jnp.asarray(rng.standard_normal(50), jnp.float32)
        ours, ref = step(*ours[:1], g, ours[1]), reference(ref[0], g, ref[1])
    np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(ref[0]), rtol=1e-6, atol=0)


def test_fused_nan_in_the_maximum_stays():
    """A NaN already in nu_max (e.g. a restored state) stays NaN, as with jnp.maximum."""
    _fused_or_skip()
    fused, step, reference = _both_steps(dict(learning_rate=1e-2, amsgrad=True))
    p = jnp.asarray([1.0, -1.0])
    state = fused.init(p)
    adam_state = state[0]
    state = (adam_state._replace(nu_max=jnp.asarray([np.nan, 0.0])), *state[1:])
    g = jnp.asarray([0.5, 0.5])
    ours, ref = step(p, g, state), reference(p, g, state)
    assert np.isnan(np.asarray(ours[0])[0]) and np.isnan(np.asarray(ref[0])[0])
    assert np.isfinite(np.asarray(ours[0])[1])
