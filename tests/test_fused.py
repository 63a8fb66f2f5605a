"""``adam_jax.fused_adam``: bitwise ``adam_jax.adam`` + ``optax.apply_updates``, and PyTorch."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

pytestmark = [
    pytest.mark.skipif(
        not adam_jax.fused_available(),
        reason="fused_adam's kernel was not built at install time (no C++ compiler); "
        "tests/test_fused_missing.py covers that case",
    ),
    pytest.mark.skipif(
        jax.default_backend() != "cpu",
        reason="fused_adam runs on the CPU only (test_other_platforms_raise checks the error)",
    ),
]

STEPS = 50
LR, WD = 1e-2, 0.1
SCHEDULE = optax.linear_schedule(1e-2, 1e-3, transition_steps=20)
WEIGHT_DECAY = {"none": (0.0, False), "coupled": (WD, False), "decoupled": (WD, True)}
# How the learning rate reaches both optimizers: a Python float, an optax schedule, or a jnp
# array traced by jit (given to adam_jax.adam, to optax.inject_hyperparams(adam_jax.adam) and
# to fused_adam).
LEARNING_RATES = ("constant", "schedule", "traced")
CONVENTIONS = sorted(adam_jax.CONVENTIONS)
# Every convention (its step coefficients) with every kernel instantiation (amsgrad x weight
# decay); maximize (a sign among the kernel's scalars) and the learning rate's form (how that
# scalar is made) rotate through these 24 rows so that any two values of any two options meet
# in some row (asserted below). The full product, 144 compilations, tested no other code path.
CASES = [
    (convention, amsgrad, decay, (c + a + d) % 2 == 0, LEARNING_RATES[(c + a + d) % 3])
    for (c, convention), (a, amsgrad), (d, decay) in itertools.product(
        enumerate(CONVENTIONS), enumerate([False, True]), enumerate(WEIGHT_DECAY)
    )
]
OPTIONS = (CONVENTIONS, [False, True], list(WEIGHT_DECAY), [False, True], LEARNING_RATES)
assert all(
    {(row[i], row[j]) for row in CASES} == set(itertools.product(OPTIONS[i], OPTIONS[j]))
    for i, j in itertools.combinations(range(len(OPTIONS)), 2)
), "every pair of option values must occur in CASES"
FLAGS = ("amsgrad", "convention", "decoupled_weight_decay", "maximize")


def _params(seed=0):
    """A scalar, a matrix and a leaf larger than one kernel chunk (64 Ki elements)."""
    rng = np.random.default_rng(seed)
    return {
        "b": jnp.asarray(rng.standard_normal(()), jnp.float32),
        "w": jnp.asarray(rng.standard_normal((7, 13)), jnp.float32),
        "x": jnp.asarray(rng.standard_normal(66_000), jnp.float32),
    }


def _grads(params, steps, seed=1):
    """``steps`` gradients, stacked; every 7th is 0, so moments decay without input."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(steps) % 7 == 3, 0.0, 1.0)

    def leaf(p):
        g = rng.standard_normal((steps, *p.shape)) * scale.reshape((steps,) + (1,) * p.ndim)
        return jnp.asarray(g, jnp.float32)

    return jax.tree.map(leaf, params)


@pytest.fixture(scope="module")
def problem():
    params = _params()
    return params, _grads(params, STEPS)


def _adam_state(state):
    """The ScaleByAdamState inside an optax chain's (or inject_hyperparams') state."""
    is_adam = lambda x: isinstance(x, adam_jax.ScaleByAdamState)  # noqa: E731
    (found,) = [x for x in jax.tree.leaves(state, is_leaf=is_adam) if is_adam(x)]
    return found


def _reference_step(tx):
    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _scan(step, params, state, grads):
    """Every step's params and ScaleByAdamState, in one lax.scan."""

    def body(carry, g):
        params, state = step(carry[0], g, carry[1])
        return (params, state), (params, _adam_state(state))

    return jax.lax.scan(body, (params, state), grads)


def _run(kwargs, lr_kind, params, grads):
    """(reference, fused[, inject_hyperparams]) trajectories of one configuration, one jit.

    Params and gradients are arguments: closed over, they would be constants of the program,
    and slow to compile.
    """
    if lr_kind in ("constant", "schedule"):
        lr = LR if lr_kind == "constant" else SCHEDULE
        tx, fused = adam_jax.adam(lr, **kwargs), adam_jax.fused_adam(lr, **kwargs)

        def trajectories(params, grads, traced_lr):
            del traced_lr
            return (
                _scan(_reference_step(tx), params, tx.init(params), grads),
                _scan(fused.step, params, fused.init(params), grads),
            )

    else:  # traced: a jit argument, for adam_jax.adam and optax.inject_hyperparams(adam)

        def trajectories(params, grads, traced_lr):
            flags = {k: v for k, v in kwargs.items() if k in FLAGS}
            numbers = {k: v for k, v in kwargs.items() if k not in FLAGS}
            inject = optax.inject_hyperparams(adam_jax.adam, static_args=FLAGS)(
                learning_rate=traced_lr, **flags, **numbers
            )
            tx = adam_jax.adam(traced_lr, **kwargs)
            fused = adam_jax.fused_adam(traced_lr, **kwargs)
            state = adam_jax.adam(LR, **kwargs).init(params)
            return (
                _scan(_reference_step(tx), params, tx.init(params), grads),
                _scan(fused.step, params, state, grads),
                _scan(_reference_step(inject), params, inject.init(params), grads),
            )

    return jax.jit(trajectories)(params, grads, jnp.asarray(LR))


def _assert_bitwise(actual, expected):
    """Every step's params and moments are the same bits (NaN equal to NaN)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        a, e = np.asarray(a), np.asarray(e)
        differ = np.count_nonzero(a.view(np.uint32) != e.view(np.uint32)) if a.size else 0
        assert differ == 0, f"{differ} of {a.size} elements differ"


@pytest.mark.parametrize("convention,amsgrad,decay,maximize,lr", CASES)
def test_bitwise_equal_to_adam(problem, convention, amsgrad, decay, maximize, lr):
    weight_decay, decoupled = WEIGHT_DECAY[decay]
    kwargs = dict(
        eps_root=1e-12,
        amsgrad=amsgrad,
        convention=convention,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
    )
    (ref_final, ref_steps), (out_final, out_steps), *injected = _run(kwargs, lr, *problem)
    _assert_bitwise(out_steps, ref_steps)
    _assert_bitwise(out_final[0], ref_final[0])
    assert int(_adam_state(out_final[1]).count) == STEPS
    for _, inject_steps in injected:
        _assert_bitwise(out_steps, inject_steps)


def test_bitwise_in_a_python_loop_with_donation(problem):
    """Step by step, as users call it: a jitted, donated step per call."""
    params, grads = problem
    kwargs = dict(learning_rate=SCHEDULE, amsgrad=True, weight_decay=WD)
    tx, fused = adam_jax.adam(**kwargs), adam_jax.fused_adam(**kwargs)
    ref_step = jax.jit(_reference_step(tx))
    fused_step = jax.jit(fused.step, donate_argnums=(0, 2))
    ref = (params, tx.init(params))
    out = (jax.tree.map(jnp.copy, params), fused.init(params))
    for t in range(20):
        g = jax.tree.map(lambda x: x[t], grads)  # noqa: B023
        ref = ref_step(ref[0], g, ref[1])
        out = fused_step(out[0], g, out[1])
        _assert_bitwise(out, ref)


def test_weight_decay_schedule(problem):
    params, grads = problem
    kwargs = dict(weight_decay=optax.exponential_decay(0.1, 10, 0.5), decoupled_weight_decay=True)
    tx, fused = adam_jax.adam(SCHEDULE, **kwargs), adam_jax.fused_adam(SCHEDULE, **kwargs)
    ref = jax.jit(lambda s: _scan(_reference_step(tx), params, s, grads))(tx.init(params))
    out = jax.jit(lambda s: _scan(fused.step, params, s, grads))(fused.init(params))
    _assert_bitwise(out, ref)


@pytest.mark.parametrize("mask", ["tree", "callable"])
@pytest.mark.parametrize("decoupled", [False, True])
def test_masked_weight_decay(problem, mask, decoupled):
    """Leaves masked out of the decay run in their own kernel call, bitwise adam's."""
    params, grads = problem
    tree = {k: k != "b" for k in params}  # the scalar "bias" is not decayed
    kwargs = dict(
        weight_decay=0.1,
        decoupled_weight_decay=decoupled,
        mask=tree if mask == "tree" else (lambda p: {k: k != "b" for k in p}),
    )
    tx, fused = adam_jax.adam(LR, **kwargs), adam_jax.fused_adam(LR, **kwargs)
    ref = jax.jit(lambda s: _scan(_reference_step(tx), params, s, grads))(tx.init(params))
    out = jax.jit(lambda s: _scan(fused.step, params, s, grads))(fused.init(params))
    _assert_bitwise(out, ref)
    unmasked = adam_jax.fused_adam(LR, weight_decay=0.1, decoupled_weight_decay=decoupled)
    other = jax.jit(lambda s: _scan(unmasked.step, params, s, grads))(unmasked.init(params))
    assert not np.array_equal(other[0][0]["b"], out[0][0]["b"])  # the mask made a difference


def test_spec_is_adams():
    """The fused optimizer and the pure-JAX one are derived from one AdamSpec."""
    fused = adam_jax.fused_adam(0.1, amsgrad=True, convention="keras", weight_decay=0.01)
    tx = adam_jax.adam(0.1, amsgrad=True, convention="keras", weight_decay=0.01)
    assert fused.spec == tx.spec
    state = fused.init(jnp.zeros(3))
    report = adam_jax.epsilon_report(state, fused)
    assert float(report["dominated_fraction"]) == 1.0


@pytest.mark.parametrize("amsgrad", [False, True])
def test_init_is_adams_state(amsgrad):
    kwargs = dict(learning_rate=SCHEDULE, amsgrad=amsgrad, weight_decay=lambda count: 0.1)
    params = _params()
    expected = adam_jax.adam(**kwargs).init(params)
    actual = adam_jax.fused_adam(**kwargs).init(params)
    _assert_bitwise(actual, expected)


@pytest.mark.parametrize("first", ["adam", "fused"])
def test_switching_backends_mid_run(problem, first):
    """20 steps with one backend, then 20 with the other, equal to 40 with adam_jax.adam."""
    params, grads = problem
    kwargs = dict(learning_rate=SCHEDULE, amsgrad=True, weight_decay=WD)
    tx, fused = adam_jax.adam(**kwargs), adam_jax.fused_adam(**kwargs)
    head, tail = (jax.tree.map(lambda x: x[a:b], grads) for a, b in ((0, 20), (20, 40)))  # noqa: B023
    ref = jax.jit(lambda s, g: _scan(_reference_step(tx), params, s, g)[0])(
        tx.init(params), jax.tree.map(lambda x: x[:40], grads)
    )
    steps = {"adam": _reference_step(tx), "fused": fused.step}
    order = [first, "fused" if first == "adam" else "adam"]
    state = (params, tx.init(params))
    for name, g in zip(order, (head, tail), strict=True):
        step = steps[name]
        state = jax.jit(lambda p, s, g: _scan(step, p, s, g)[0])(*state, g)  # noqa: B023
    _assert_bitwise(state, ref)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_gradients_propagate_as_in_adam(amsgrad, bad):
    params = jnp.array([1.0, -2.0, 3.0, 0.5])
    kwargs = dict(learning_rate=LR, amsgrad=amsgrad)
    tx, fused = adam_jax.adam(**kwargs), adam_jax.fused_adam(**kwargs)
    ref = (params, tx.init(params))
    out = (params, fused.init(params))
    for g in ([0.5, bad, 1.0, 0.0], [0.5, 1.0, 1.0, 0.0]):
        g = jnp.asarray(g, jnp.float32)
        ref = jax.jit(_reference_step(tx))(ref[0], g, ref[1])
        out = jax.jit(fused.step)(out[0], g, out[1])
        _assert_bitwise(out, ref)
    # The bad coordinate is not silently frozen: it is NaN, and the others still train.
    assert np.isnan(np.asarray(out[0])[1])
    assert np.all(np.isfinite(np.asarray(out[0])[[0, 2]]))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_zero_gradients_give_zero_steps_even_with_eps_0(amsgrad):
    fused = adam_jax.fused_adam(1.0, eps=0.0, amsgrad=amsgrad)
    params = jnp.array([1.0, -2.0, 3.0])
    state = fused.init(params)
    for _ in range(3):
        new, state = jax.jit(fused.step)(params, jnp.zeros(3), state)
        np.testing.assert_array_equal(np.asarray(new), np.asarray(params))
    assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(state))


def test_eps_root_reaches_the_kernel():
    kwargs = dict(learning_rate=1e-2, eps_root=1e-3)
    fused, tx = adam_jax.fused_adam(**kwargs), adam_jax.adam(**kwargs)
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.standard_normal(50), jnp.float32)
    out, ref = (p, fused.init(p)), (p, tx.init(p))
    for _ in range(5):
        g = jnp.asarray(rng.standard_normal(50), jnp.float32)
        out = jax.jit(fused.step)(out[0], g, out[1])
        ref = jax.jit(_reference_step(tx))(ref[0], g, ref[1])
    _assert_bitwise(out, ref)


def test_nan_already_in_the_maximum_stays():
    """A NaN in AMSGrad's nu_max (a restored state, say) stays NaN, as with jnp.maximum."""
    kwargs = dict(learning_rate=1e-2, amsgrad=True)
    fused, tx = adam_jax.fused_adam(**kwargs), adam_jax.adam(**kwargs)
    p, g = jnp.asarray([1.0, -1.0]), jnp.asarray([0.5, 0.5])
    state = fused.init(p)
    state = (_adam_state(state)._replace(nu_max=jnp.asarray([np.nan, 0.0])), *state[1:])
    out = jax.jit(fused.step)(p, g, state)
    ref = jax.jit(_reference_step(tx))(p, g, state)
    _assert_bitwise(out, ref)
    assert np.isnan(np.asarray(out[0])[0]) and np.isfinite(np.asarray(out[0])[1])


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
    np.testing.assert_allclose(np.asarray(_adam_state(state).nu_max), torch_max, rtol=1e-4)


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


def test_rejects_other_dtypes():
    fused = adam_jax.fused_adam()
    with pytest.raises(TypeError, match="float32 only.*params.*bfloat16"):
        fused.init(jnp.zeros(3, jnp.bfloat16))
    params = jnp.zeros(3)
    with pytest.raises(TypeError, match="grads has a leaf of dtype int32"):
        fused.step(params, jnp.zeros(3, jnp.int32), fused.init(params))
    for name in ("mu_dtype", "nu_dtype"):
        with pytest.raises(TypeError, match=f"{name}=.*bfloat16.*None or float32"):
            adam_jax.fused_adam(**{name: jnp.bfloat16})
    adam_jax.fused_adam(mu_dtype=jnp.float32, nu_dtype="float32")


def test_validates_hyperparameters():
    with pytest.raises(ValueError, match="b1 must be in"):
        adam_jax.fused_adam(b1=1.0)
    with pytest.raises(ValueError, match="convention must be one of"):
        adam_jax.fused_adam(convention="torch")
    with pytest.raises((TypeError, ValueError), match=r"amsgrad must be .*got 1"):
        adam_jax.fused_adam(amsgrad=1)
    with pytest.raises((TypeError, ValueError), match=r"maximize must be .*got 'no'"):
        adam_jax.fused_adam(maximize="no")
    fused = adam_jax.fused_adam()
    with pytest.raises(ValueError, match="grads's tree does not match"):
        fused.step({"a": jnp.zeros(2)}, {"b": jnp.zeros(2)}, fused.init({"a": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="one ScaleByAdamState"):
        fused.step(jnp.zeros(2), jnp.zeros(2), optax.EmptyState())


def test_other_platforms_raise(monkeypatch):
    from adam_jax import _fused

    monkeypatch.setattr(_fused.jax, "default_backend", lambda: "gpu")
    fused = adam_jax.fused_adam()
    params = jnp.zeros(3)
    state = fused.init(params)
    with pytest.raises(RuntimeError, match=r"CPU only, got arrays on \['gpu'\]; use adam_jax.adam"):
        jax.jit(fused.step)(params, params, state)


def test_vmap_steps_each_element():
    """``jax.vmap`` over a batch of independent optimizers (one kernel call per element)."""
    params = jnp.asarray(np.random.default_rng(5).standard_normal((3, 70)), jnp.float32)
    grads = jnp.asarray(np.random.default_rng(6).standard_normal((3, 70)), jnp.float32)
    tx, fused = adam_jax.adam(SCHEDULE, amsgrad=True), adam_jax.fused_adam(SCHEDULE, amsgrad=True)
    ref = jax.jit(jax.vmap(_reference_step(tx)))(params, grads, jax.vmap(tx.init)(params))
    out = jax.jit(jax.vmap(fused.step))(params, grads, jax.vmap(fused.init)(params))
    _assert_bitwise(out, ref)


def test_fused_adam_where_an_optax_transformation_belongs_points_to_step():
    """optax.chain and flax.nnx.Optimizer accept any (init, update) pair: the first update
    must say what to do instead of an AttributeError."""
    opt = adam_jax.fused_adam(1e-3)
    params = {"w": jnp.ones(3)}
    chained = optax.chain(optax.clip_by_global_norm(1.0), opt)
    state = chained.init(params)
    with pytest.raises(TypeError, match=r"not an optax GradientTransformation.*\.step\(params"):
        chained.update(params, state, params)
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, opt, wrt=nnx.Param)
    grads = nnx.state(model, nnx.Param)
    with pytest.raises(TypeError, match="use adam_jax.adam"):
        optimizer.update(model, grads)
