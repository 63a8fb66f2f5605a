"""``adam_jax.fused_adam``: the fused C++ kernel against ``adam_jax.adam`` and PyTorch."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

pytestmark = [
    pytest.mark.skipif(
        shutil.which("g++") is None, reason="fused_adam builds its kernel with g++, not found"
    ),
    pytest.mark.skipif(
        jax.default_backend() != "cpu",
        reason="fused_adam runs on the CPU only (test_other_platforms_raise checks the error)",
    ),
]

CONVENTIONS = ("pytorch", "optax", "keras", "paper")


def _params(seed=0):
    """A tree with a scalar, a matrix and a leaf larger than one kernel chunk (64 Ki)."""
    rng = np.random.default_rng(seed)
    return {
        "b": jnp.asarray(rng.standard_normal(()), jnp.float32),
        "w": jnp.asarray(rng.standard_normal((7, 13)), jnp.float32),
        "x": jnp.asarray(rng.standard_normal(70_000), jnp.float32),
    }


def _grads(params, rng, step):
    # Every 7th step the gradient is 0, so moments decay through a step without input.
    scale = 0.0 if step % 7 == 3 else 1.0
    return jax.tree.map(
        lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), jnp.float32), params
    )


def _reference_step(tx):
    @jax.jit
    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _run_both(kwargs, steps=50, lr=1e-2):
    """Runs adam_jax.adam + apply_updates and fused_adam side by side on the same gradients."""
    tx = adam_jax.adam(lr, eps_root=1e-12, **kwargs)
    fused = adam_jax.fused_adam(lr, eps_root=1e-12, **kwargs)
    params = _params()
    ref = (params, tx.init(params))
    out = (params, fused.init(params))
    ref_step = _reference_step(tx)
    fused_step = jax.jit(fused.step, donate_argnums=(0, 2))
    rng = np.random.default_rng(1)
    for t in range(steps):
        grads = _grads(params, rng, t)
        ref = ref_step(ref[0], grads, ref[1])
        out = fused_step(out[0], grads, out[1])
    return ref, out


def _adam_state(state):
    """The ScaleByAdamState inside an optax chain's state."""
    is_adam = lambda x: isinstance(x, adam_jax.ScaleByAdamState)  # noqa: E731
    (found,) = [x for x in jax.tree.leaves(state, is_leaf=is_adam) if is_adam(x)]
    return found


def _assert_trees_close(actual, expected, rtol=1e-6):
    """``actual`` = (params, fused state), ``expected`` = (params, adam_jax.adam's state).

    Elementwise ``rtol``, and an absolute tolerance of ``rtol`` times the leaf's largest
    magnitude: near a zero crossing of m a last-bit difference (an FMA that XLA forms in one
    compiled program and not in another) is large relative to the element.
    """
    actual, expected = (actual[0], actual[1]), (expected[0], _adam_state(expected[1]))
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        e = np.asarray(e)
        atol = rtol * float(np.max(np.abs(e), initial=0.0))
        np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_matches_adam_every_convention(convention, amsgrad):
    ref, out = _run_both({"convention": convention, "amsgrad": amsgrad})
    _assert_trees_close(out, ref)
    assert int(out[1].count) == 50


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"weight_decay": 0.1, "maximize": True, "amsgrad": True},
        {
            "weight_decay": 0.05,
            "decoupled_weight_decay": True,
            "amsgrad": True,
            "convention": "optax",
        },
        {"maximize": True, "convention": "keras"},
    ],
)
def test_matches_adam_weight_decay_and_maximize(kwargs):
    ref, out = _run_both(kwargs)
    _assert_trees_close(out, ref)


def test_schedule_inside_scan():
    schedule = optax.linear_schedule(1e-2, 1e-3, transition_steps=20)
    tx = adam_jax.amsgrad(schedule, convention="pytorch")
    fused = adam_jax.fused_adam(schedule, amsgrad=True)
    params = _params()
    rng = np.random.default_rng(2)
    grads = [_grads(params, rng, t) for t in range(30)]
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)

    def run(step_fn, state):
        def body(carry, g):
            return step_fn(carry[0], g, carry[1]), None

        return jax.lax.scan(body, (params, state), stacked)[0]

    ref = jax.jit(lambda s: run(_reference_step(tx), s))(tx.init(params))
    out = jax.jit(lambda s: run(fused.step, s), donate_argnums=0)(fused.init(params))
    _assert_trees_close(out, ref)


def test_matches_pytorch_amsgrad():
    torch = pytest.importorskip("torch", reason="needs PyTorch for the reference")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = rng.standard_normal((20, 1000)).astype(np.float32)
    p = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1e-2, amsgrad=True, weight_decay=0.1)
    fused = adam_jax.fused_adam(1e-2, amsgrad=True, weight_decay=0.1)
    params, state = jnp.asarray(p0), fused.init(jnp.asarray(p0))
    step = jax.jit(fused.step)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        params, state = step(params, jnp.asarray(g), state)
    np.testing.assert_allclose(np.asarray(params), p.detach().numpy(), rtol=1e-5, atol=1e-6)
    # PyTorch rounds 1 - b2 from a Python float (0.001), JAX from float32 b2 (1.00005e-3).
    torch_max = opt.state[p]["max_exp_avg_sq"].numpy()
    np.testing.assert_allclose(np.asarray(state.nu_max), torch_max, rtol=1e-4)


def test_in_place_with_donation():
    fused = adam_jax.fused_adam(amsgrad=True)
    params = jnp.zeros(100_000)
    state = fused.init(params)
    compiled = jax.jit(fused.step, donate_argnums=(0, 2)).lower(params, params, state).compile()
    memory = compiled.memory_analysis()
    # p, m, v, v_max are written over their inputs; nothing array-sized is allocated.
    assert memory.alias_size_in_bytes >= 4 * 100_000 * 4
    assert memory.temp_size_in_bytes < 1000
    assert " copy(" not in compiled.as_text()


def test_state_works_with_epsilon_report():
    fused = adam_jax.fused_adam(1e-2)
    params = _params()
    state = fused.init(params)
    state = jax.jit(fused.step)(params, _grads(params, np.random.default_rng(4), 0), state)[1]
    report = adam_jax.epsilon_report(state, 1e-8)
    assert 0.0 <= float(report["dominated_fraction"]) <= 1.0


@pytest.mark.parametrize("amsgrad", [False, True])
def test_zero_gradients_give_zero_steps_even_with_eps_0(amsgrad):
    fused = adam_jax.fused_adam(1.0, eps=0.0, amsgrad=amsgrad)
    params = jnp.array([1.0, -2.0, 3.0])
    state = fused.init(params)
    for _ in range(3):
        new, state = jax.jit(fused.step)(params, jnp.zeros(3), state)
        np.testing.assert_array_equal(np.asarray(new), np.asarray(params))
    assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(state))


def test_rejects_other_dtypes():
    fused = adam_jax.fused_adam()
    with pytest.raises(TypeError, match="float32 only.*bfloat16"):
        fused.init(jnp.zeros(3, jnp.bfloat16))
    params = jnp.zeros(3)
    with pytest.raises(TypeError, match="grads has a leaf of dtype int32"):
        fused.step(params, jnp.zeros(3, jnp.int32), fused.init(params))


def test_validates_hyperparameters():
    with pytest.raises(ValueError, match="b1 must be in"):
        adam_jax.fused_adam(b1=1.0)
    with pytest.raises(ValueError, match="convention must be one of"):
        adam_jax.fused_adam(convention="torch")
    with pytest.raises(ValueError, match="amsgrad must be a bool"):
        adam_jax.fused_adam(amsgrad=1)
    fused = adam_jax.fused_adam()
    with pytest.raises(ValueError, match="grads's tree does not match"):
        fused.step({"a": jnp.zeros(2)}, {"b": jnp.zeros(2)}, fused.init({"a": jnp.zeros(2)}))


def test_missing_compiler_is_named(monkeypatch):
    from adam_jax import _fused

    monkeypatch.setenv("CXX", "no-such-compiler-adam-jax")
    with pytest.raises(RuntimeError, match="'no-such-compiler-adam-jax' was not found"):
        _fused._build()


def test_other_platforms_raise(monkeypatch):
    from adam_jax import _fused

    monkeypatch.setattr(_fused.jax, "default_backend", lambda: "gpu")
    fused = adam_jax.fused_adam()
    params = jnp.zeros(3)
    state = fused.init(params)
    with pytest.raises(RuntimeError, match=r"CPU only, got arrays on \['gpu'\]; use adam_jax.adam"):
        jax.jit(fused.step)(params, params, state)
