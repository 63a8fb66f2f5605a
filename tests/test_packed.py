"""``PackedLayout``: a packed step is, bit for bit, the unpacked step, for every optimizer.

The unpacked step (``adam_jax.adam`` and friends on the params tree, and ``fused_adam``) is
itself tested against independent references (tests/test_reference_matrix.py,
tests/test_fused.py); here the packed form is compared with it: params and every state
array after several steps, then runs that switch form half way. Sharded layouts are checked
in a subprocess with 8 CPU devices (tests/distributed/packed_checks.py).
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import PackedLayout
from tests.helpers import run_on_8_cpu_devices

STEPS = 8
LR, WD, DECAY = 1e-2, 0.1, 0.05
SCHEDULE = optax.linear_schedule(1e-2, 1e-3, transition_steps=5)
CONVENTIONS = sorted(adam_jax.CONVENTIONS)
SHAPES = {
    "embed": (5, 3),
    "layers": [{"w": (3, 4), "b": (4,)}, {"w": (4, 2), "b": (2,)}],
    "scale": (),
}


def decay_matrices(params):
    """The usual weight-decay mask: matrices decayed, vectors and scalars not."""
    return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


# name -> factory(learning_rate, mask, convention): every adam_jax optax optimizer.
OPTIMIZERS = {
    "adam": lambda lr, mask, c: adam_jax.adam(lr, eps_root=1e-12, convention=c),
    "amsgrad": lambda lr, mask, c: adam_jax.amsgrad(lr, convention=c),
    "adamw": lambda lr, mask, c: adam_jax.adamw(lr, weight_decay=WD, mask=mask, convention=c),
    "amsgrad, coupled decay": lambda lr, mask, c: adam_jax.adam(
        lr, amsgrad=True, weight_decay=WD, mask=mask, convention=c, maximize=True
    ),
    "nadam": lambda lr, mask, c: adam_jax.nadam(lr, convention=c),
    "adam_atan2": lambda lr, mask, c: adam_jax.adam_atan2(  # no epsilon, so no convention
        lr, amsgrad=True, weight_decay=WD, decoupled_weight_decay=True, mask=mask
    ),
}
# Every optimizer with a schedule and with a constant learning rate, in the "pytorch"
# convention; each other convention once. Packing lays leaves end to end and the step is
# elementwise, so a convention (which scalars the step uses) meets no code of the packing:
# one row each shows its state packs too. (Every optimizer x convention was 27 compilations.)
OPTAX_CASES = [
    *itertools.product(OPTIMIZERS, ["pytorch"], ("schedule", "constant")),
    ("amsgrad, coupled decay", "optax", "schedule"),
    ("nadam", "keras", "schedule"),
    ("amsgrad", "paper", "schedule"),
]
# weight-decay mode -> fused_adam's arguments.
FUSED_DECAY = {
    "none": {},
    "coupled, masked": {"weight_decay": WD, "mask": True},
    "decoupled, masked": {"weight_decay": WD, "decoupled_weight_decay": True, "mask": True},
}


def make_problem(dtypes=(jnp.float32,), seed=0):
    """Params (leaves cycling through ``dtypes``) and ``STEPS`` raw gradients, stacked."""
    rng = np.random.default_rng(seed)
    shapes, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    kinds = itertools.cycle(dtypes)
    dtype_of = [next(kinds) for _ in shapes]
    params = [jnp.asarray(rng.standard_normal(s), d) for s, d in zip(shapes, dtype_of, strict=True)]
    raws = [
        jnp.asarray(rng.standard_normal((STEPS, *s)) * (rng.random((STEPS, *s)) > 0.1), d)
        for s, d in zip(shapes, dtype_of, strict=True)
    ]
    return treedef.unflatten(params), treedef.unflatten(raws)


def optax_step(tx):
    def step(params, raw, state):
        grads = jax.tree.map(lambda r, p: r + DECAY * p, raw, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def fused_step(fused):
    def step(params, raw, state):
        grads = jax.tree.map(lambda r, p: r + DECAY * p, raw, params)
        return fused.step(params, grads, state)

    return step


def run(step, params, state, raws):
    """``step`` over the stacked ``raws`` in one lax.scan: the final params and state."""
    return jax.lax.scan(lambda c, raw: (step(c[0], raw, c[1]), None), (params, state), raws)[0]


def packed_and_unpacked(make, params, raws, mask=None, steps=STEPS):
    """Final (params, state) of ``steps`` steps, packed (in tree form) and unpacked.

    ``make(mask)`` gives ``(init, step)``; the packed run gets ``layout.mask``.
    """
    layout = PackedLayout.from_params(params, mask=mask)
    raws = jax.tree.map(lambda r: r[:steps], raws)

    @jax.jit
    def both(params, raws):
        init, step = make(layout.mask)
        buffers = layout.pack(params)
        packed = run(step, buffers, init(buffers), jax.vmap(layout.pack)(raws))
        init, step = make(mask)
        unpacked = run(step, params, init(params), raws)
        return (layout.unpack(packed[0]), layout.unpack_state(packed[1])), unpacked

    return both(params, raws)


def assert_bitwise(actual, expected):
    """Same tree, dtypes, shapes and bits (NaN equal to NaN)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        a, e = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(e))
        differ = np.count_nonzero(a.view(np.uint8) != e.view(np.uint8))
        assert differ == 0, f"{differ} bytes of {a.nbytes} differ"


@pytest.mark.parametrize("name,convention,lr", OPTAX_CASES)
def test_packed_optax_step_is_bitwise_the_unpacked_step(name, convention, lr):
    params, raws = make_problem()
    factory = OPTIMIZERS[name]
    learning_rate = LR if lr == "constant" else SCHEDULE

    def make(mask):
        tx = factory(learning_rate, mask, convention)
        return tx.init, optax_step(tx)

    packed, unpacked = packed_and_unpacked(make, params, raws, mask=decay_matrices)
    assert_bitwise(packed, unpacked)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), unpacked[0], params))
    assert all(moved)  # every leaf was stepped, so the comparison compares something


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_packed_16_bit_params_mixed_with_float32(name):
    """bfloat16, float16 and float32 leaves: one buffer per dtype, float32 moments."""
    params, raws = make_problem(dtypes=(jnp.bfloat16, jnp.float32, jnp.float16))

    def make(mask):
        tx = OPTIMIZERS[name](SCHEDULE, mask, "pytorch")
        return tx.init, optax_step(tx)

    layout = PackedLayout.from_params(params, mask=decay_matrices)
    assert {str(d) for d in layout.dtypes.values()} == {"bfloat16", "float16", "float32"}
    packed, unpacked = packed_and_unpacked(make, params, raws, mask=decay_matrices)
    assert_bitwise(packed, unpacked)


fused_only = pytest.mark.skipif(
    not adam_jax.fused_available() or jax.default_backend() != "cpu",
    reason="fused_adam's kernel is not built here, or this is not a CPU",
)


# Every kernel instantiation (amsgrad x weight decay), the conventions rotating through them:
# a convention only changes the kernel's scalars, which packing does not touch.
FUSED_CASES = [
    (CONVENTIONS[i % len(CONVENTIONS)], amsgrad, decay)
    for i, (amsgrad, decay) in enumerate(itertools.product((False, True), FUSED_DECAY))
]


@fused_only
@pytest.mark.parametrize("convention,amsgrad,decay", FUSED_CASES)
def test_packed_fused_step_is_bitwise_the_unpacked_step(convention, amsgrad, decay):
    params, raws = make_problem()
    kwargs = dict(FUSED_DECAY[decay])
    masked = kwargs.pop("mask", False)

    def make(mask):
        fused = adam_jax.fused_adam(
            SCHEDULE, amsgrad=amsgrad, convention=convention, mask=mask, **kwargs
        )
        return fused.init, fused_step(fused)

    packed, unpacked = packed_and_unpacked(
        make, params, raws, mask=decay_matrices if masked else None
    )
    assert_bitwise(packed, unpacked)


@fused_only
@pytest.mark.parametrize("mask,calls", [(None, 1), (decay_matrices, 2)])
def test_packed_fused_step_calls_the_kernel_once_per_buffer(mask, calls):
    """The point of packing: one kernel call per buffer, not one per leaf (5 leaves here)."""
    params, raws = make_problem()
    layout = PackedLayout.from_params(params, mask=mask)
    fused = adam_jax.fused_adam(LR, weight_decay=WD, mask=layout.mask)
    buffers = layout.pack(params)
    grads = layout.pack(jax.tree.map(lambda r: r[0], raws))
    text = jax.jit(fused.step).lower(buffers, grads, fused.init(buffers)).compile().as_text()
    assert text.count('custom_call_target="adam_jax_step"') == calls


@fused_only
def test_packed_fused_step_compiles_to_the_program_of_one_array():
    """Packed, the tree's step is the one-array step (only the argument names differ)."""
    params, _ = make_problem()
    layout = PackedLayout.from_params(params)
    fused = adam_jax.fused_adam(LR, amsgrad=True)

    def program(p):
        step = jax.jit(fused.step, donate_argnums=(0, 2))
        text = step.lower(p, p, fused.init(p)).compile().as_text()
        entry = re.sub(r"metadata=\{[^}]*\}", "", text[text.index("\nENTRY") :])
        return entry.replace("__float32__", "")  # the buffer's key, in the arguments' names

    buffers = layout.pack(params)
    assert program(buffers) == program(jnp.zeros(layout.sizes["float32"]))


@pytest.mark.parametrize("name", ["amsgrad, coupled decay", "nadam", "adamw"])
@pytest.mark.parametrize("first", ["packed", "unpacked"])
def test_a_run_resumes_across_forms_bitwise(name, first):
    """N steps in one form, the state converted, M steps in the other == N + M unpacked."""
    params, raws = make_problem(dtypes=(jnp.float32, jnp.bfloat16))
    n = STEPS // 2
    layout = PackedLayout.from_params(params, mask=decay_matrices)

    def make(mask):
        return OPTIMIZERS[name](SCHEDULE, mask, "pytorch")

    tree_tx, packed_tx = make(decay_matrices), make(layout.mask)
    head, tail = jax.tree.map(lambda r: r[:n], raws), jax.tree.map(lambda r: r[n:], raws)

    @jax.jit
    def switched(params, head, tail):
        if first == "packed":
            buffers = layout.pack(params)
            buffers, state = run(
                optax_step(packed_tx), buffers, packed_tx.init(buffers), jax.vmap(layout.pack)(head)
            )
            return run(
                optax_step(tree_tx), layout.unpack(buffers), layout.unpack_state(state), tail
            )
        params, state = run(optax_step(tree_tx), params, tree_tx.init(params), head)
        buffers, state = run(
            optax_step(packed_tx),
            layout.pack(params),
            layout.pack_state(state),
            jax.vmap(layout.pack)(tail),
        )
        return layout.unpack(buffers), layout.unpack_state(state)

    expected = jax.jit(lambda p, r: run(optax_step(tree_tx), p, tree_tx.init(p), r))(params, raws)
    assert_bitwise(switched(params, head, tail), expected)


def test_pack_state_and_unpack_state_are_inverse():
    params, _ = make_problem(dtypes=(jnp.float32, jnp.bfloat16))
    layout = PackedLayout.from_params(params, mask=decay_matrices)
    tx = adam_jax.adamw(SCHEDULE, amsgrad=True, mask=decay_matrices)
    state = jax.tree.map(lambda x: x + 1, tx.init(params))  # nonzero moments and counts
    packed = layout.pack_state(state)
    moments = optax.tree_utils.tree_get(packed, "mu")
    assert set(moments) == set(layout.sizes)  # the moments are buffers now
    assert_bitwise(layout.unpack_state(packed), state)
    assert_bitwise(packed, jax.tree.map(lambda x: x + 1, tx.init(layout.pack(params))))


def test_gradient_of_the_unpacked_loss_arrives_packed():
    params, _ = make_problem(dtypes=(jnp.float32, jnp.bfloat16))
    layout = PackedLayout.from_params(params)

    def loss(p):
        return sum(jnp.sum(jnp.sin(x.astype(jnp.float32)) * x) for x in jax.tree.leaves(p))

    packed = jax.jit(jax.grad(lambda b: loss(layout.unpack(b))))(layout.pack(params))
    assert_bitwise(layout.unpack(packed), jax.jit(jax.grad(loss))(params))


def test_gradient_of_the_unpacked_loss_streams_each_buffer_once():
    # A slice's transpose is a pad: a gradient summed from one padded copy per leaf streams
    # the buffer once per leaf (12 pads here); a concatenation ran 5x slower on XLA's CPU
    # backend. The compiled gradient writes each leaf into its place: at most one pad (the
    # zeros) and no concatenation.
    params = {f"w{i}": jnp.ones((30, 30)) for i in range(12)}
    layout = PackedLayout.from_params(params)
    grad = jax.jit(jax.grad(lambda b: sum(jnp.sum(jnp.sin(x)) for x in layout.unpack(b).values())))
    hlo = grad.lower(layout.pack(params)).compile().as_text()
    assert len(re.findall(r"\bpad\(", hlo)) <= 1
    assert not re.search(r"\bconcatenate\(", hlo)


def test_layout_lays_leaves_end_to_end_by_dtype_and_mask():
    params, _ = make_problem(dtypes=(jnp.float32, jnp.float32, jnp.bfloat16))
    layout = PackedLayout.from_params(params, mask=decay_matrices)
    assert layout.mask == {
        "bfloat16/decayed": True,
        "bfloat16/undecayed": False,
        "float32/decayed": True,
        "float32/undecayed": False,
    }
    buffers = layout.pack(params)
    for leaf, x in zip(layout.leaves, jax.tree.leaves(params), strict=True):
        part = buffers[leaf.buffer][leaf.offset : leaf.offset + x.size]
        np.testing.assert_array_equal(np.asarray(part), np.asarray(x).ravel())
    total = sum(x.size for x in jax.tree.leaves(params))
    assert sum(layout.sizes.values()) == total  # no padding without a sharding
    assert PackedLayout.from_params(params).mask is None
    assert set(PackedLayout.from_params(params).sizes) == {"bfloat16", "float32"}
    # Static: built from shapes alone, hashable, equal when built twice.
    abstract = PackedLayout.from_params(jax.eval_shape(lambda: params), mask=decay_matrices)
    assert abstract == layout and hash(abstract) == hash(layout)


def test_bad_inputs_name_the_leaf():
    params, _ = make_problem()
    layout = PackedLayout.from_params(params)
    with pytest.raises(TypeError, match=r"params\['step'\] has dtype int32"):
        PackedLayout.from_params({**params, "step": jnp.zeros((), jnp.int32)})
    with pytest.raises(ValueError, match=r"lacks \"\['scale'\]\""):
        layout.pack({k: v for k, v in params.items() if k != "scale"})
    with pytest.raises(ValueError, match=r"has \"\['extra'\]\""):
        layout.pack({**params, "extra": jnp.zeros(3)})
    wrong = {**params, "embed": jnp.zeros((3, 5))}
    with pytest.raises(ValueError, match=r"tree\['embed'\] has shape \(3, 5\).*\(5, 3\)"):
        layout.pack(wrong)
    with pytest.raises(TypeError, match=r"tree\['scale'\] has dtype bfloat16"):
        layout.pack({**params, "scale": params["scale"].astype(jnp.bfloat16)})
    other = PackedLayout.from_params(wrong | {"embed": jnp.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"buffers\['float32'\] has shape \(\d+,\)"):
        layout.unpack(other.pack(wrong | {"embed": jnp.zeros((4, 3))}))
    with pytest.raises(ValueError, match=r"keys \['float32'\]; got \['bfloat16'\]"):
        layout.unpack({"bfloat16": jnp.zeros(3, jnp.bfloat16)})
    with pytest.raises(ValueError, match=r"mask .* lacks \"\['layers'\]\[1\]\['b'\]\""):
        PackedLayout.from_params(
            params, mask={"embed": True, "scale": False, "layers": [True, {"w": True}]}
        )
    with pytest.raises(ValueError, match=r"mask .* has \"\['bias'\]\""):
        PackedLayout.from_params(params, mask={**decay_matrices(params), "bias": False})
    with pytest.raises(TypeError, match=r"mask\['scale'\] is"):
        PackedLayout.from_params(params, mask={**decay_matrices(params), "scale": jnp.bool_(0)})
    with pytest.raises(ValueError, match="1-D spec"):
        mesh = jax.make_mesh((1,), ("data",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", None))
        PackedLayout.from_params(params, sharding=sharding)


def test_a_mask_prefix_packs_like_the_full_mask():
    params, _ = make_problem()
    prefix = {"embed": True, "layers": False, "scale": False}
    full = {"embed": True, "layers": jax.tree.map(lambda _: False, params["layers"])}
    full["scale"] = False
    assert PackedLayout.from_params(params, mask=prefix) == PackedLayout.from_params(
        params, mask=full
    )


@pytest.fixture(scope="module")
def sharded_summary():
    return run_on_8_cpu_devices("packed_checks.py")


def test_sharded_packed_step_has_no_collectives_and_equals_one_device(sharded_summary):
    failures = "\n".join(
        f"{f['case']}: {f['check']}: {f['detail']}" for f in sharded_summary["failures"]
    )
    assert not sharded_summary["failures"], failures
    cases = set(sharded_summary["cases"])
    for axis_type in ("Explicit", "Auto"):
        for optimizer in ("amsgrad", "adamw", "nadam") + (
            ("fused_adam",) if adam_jax.fused_available() else ()
        ):
            assert f"{axis_type} {optimizer}" in cases, cases
    assert sharded_summary["checks"] >= 10 * len(cases)
