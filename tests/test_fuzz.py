"""Fuzzing (hypothesis): hostile arguments, non-finite gradients, hostile command lines.

- Factories: any combination of hostile values for any arguments of the public
  factories either builds an optimizer whose first step on finite gradients is
  finite, or raises ``ValueError``/``TypeError`` naming one of those arguments;
  never another exception.
- Gradients: a NaN or inf in a gradient coordinate gives NaN in that
  coordinate's update (never a finite, hidden value); finite gradients give
  finite updates; in float16, bfloat16 and float32.
- ``scripts/train.py``: any command line of its flags with hostile values exits
  0, or 2 with one line on stderr; never a traceback. The program is run as a
  black box; its flags are read from its ``--help``.

Examples are few and the machine small: each train.py run costs seconds.
"""

import inspect
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adam_jax

REPO = pathlib.Path(__file__).resolve().parents[1]
FUSED = adam_jax.fused_available() and jax.default_backend() == "cpu"
FACTORIES = {
    "adam": adam_jax.adam,
    "amsgrad": adam_jax.amsgrad,
    "adamw": adam_jax.adamw,
    "nadam": adam_jax.nadam,
    "adam_atan2": adam_jax.adam_atan2,
    "scale_by_adam": adam_jax.scale_by_adam,
    "scale_by_adam_atan2": adam_jax.scale_by_adam_atan2,
    "AdamSpec": adam_jax.AdamSpec,
    **({"fused_adam": adam_jax.fused_adam} if FUSED else {}),
}


def _schedule(count):
    return 1e-3 * 0.5**count


# Hostile values: out of range, non-finite, huge and tiny, wrong types, arrays,
# numpy and jax scalars, callables, dtypes (right and wrong), and some good values
# so that combinations of a bad argument with good ones occur too.
POOL = [
    -1.0,
    -1e-3,
    0.0,
    0.5,
    0.9,
    1.0,
    2,
    1e30,
    1e300,
    1e-30,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    "0.1",
    "yes",
    "",
    None,
    np.ones(2),
    jnp.ones(2),
    np.float32(0.9),
    np.float64(1e-3),
    np.int64(0),
    np.bool_(True),
    jnp.asarray(0.5),
    jnp.asarray(math.nan),
    jnp.asarray(0.5, jnp.bfloat16),
    jnp.asarray(1, jnp.int32),
    1 + 0j,
    [0.1],
    {"w": True},
    {"w": "no"},
    _schedule,
    print,  # not a schedule, though callable
    object(),
    jnp.float32,
    "float32",
    jnp.bfloat16,
    np.float16,
    "int8",
    jnp.int32,
    "complex64",
    "bogus",
    "pytorch",
    "optax",
    "keras",
    "paper",
    "tensorflow",
]


def _hostile_kwargs(factory):
    names = sorted(inspect.signature(factory).parameters)
    return st.dictionaries(st.sampled_from(names), st.sampled_from(POOL), min_size=1, max_size=3)


def _one_step(name, optimizer):
    """The updates of one step on finite gradients (new params for fused_adam)."""
    params = {"w": jnp.asarray([0.5, -1.0, 2.0])}
    grads = {"w": jnp.asarray([0.3, -0.2, 0.0])}
    if name == "fused_adam":
        return jax.jit(optimizer.step)(params, grads, optimizer.init(params))[0]
    if name == "AdamSpec":
        optimizer = adam_jax.from_spec(optimizer)
    state = optimizer.init(params)
    return optimizer.update(grads, state, params)[0]


def _names_an_argument(message: str, kwargs) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", message) for k in kwargs)


# Holes the fuzz found, closed in the library since (commits 0fb8ae8, ef27a91): each case
# stays here as a regression test.
FOUND = [
    ("adam", {"learning_rate": print}),  # not a schedule: refused when called at step 0
    ("adamw", {"weight_decay": print}),
    ("adam", {"learning_rate": 1e300}),  # finite, but infinite in float32
    ("adam_atan2", {"a": 1e300}),
    ("fused_adam", {"mu_dtype": -1.0}),  # was numpy's "Cannot interpret -1.0 as a data type"
    ("fused_adam", {"nu_dtype": "0.1"}),
    ("adamw", {"b1": 0.0, "mask": jnp.float32}),  # a callable mask that fails: init names it
    ("adamw", {"b1": 0.0, "mask": print}),  # one that returns None
    ("fused_adam", {"weight_decay": 0.1, "mask": print}),
]


def _check_contract(name, kwargs):
    """Builds and steps, or raises naming an argument; AssertionError otherwise.

    An argument that can only be checked with the params (a callable ``mask``: what it returns)
    may be refused by ``init``, naming it; everything static is refused at construction.
    """
    try:
        optimizer = FACTORIES[name](**kwargs)
    except (ValueError, TypeError) as e:
        assert _names_an_argument(str(e), kwargs), f"{name}({kwargs!r}): {e}"
        return
    try:
        updates = _one_step(name, optimizer)
    except (ValueError, TypeError) as e:
        if callable(kwargs.get("mask")) and re.search(r"(?<![\w.])mask(?!\w)", str(e)):
            return
        raise AssertionError(f"{name}({kwargs!r}) built, then its step raised {e!r}") from e
    except Exception as e:  # noqa: BLE001 - any exception at the step breaks the contract
        raise AssertionError(f"{name}({kwargs!r}) built, then its step raised {e!r}") from e
    for x in jax.tree.leaves(updates):
        assert np.all(np.isfinite(np.asarray(x, np.float64))), f"{name}({kwargs!r}): {x}"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_hostile_arguments_build_a_finite_optimizer_or_name_the_argument(name):
    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(_hostile_kwargs(FACTORIES[name]))
    def check(kwargs):
        _check_contract(name, kwargs)

    check()


@pytest.mark.parametrize("name,kwargs", [c for c in FOUND if c[0] in FACTORIES])
def test_holes_found_stay_closed(name, kwargs):
    _check_contract(name, kwargs)


@pytest.mark.parametrize("value", [np.float32(0.9), jnp.asarray(0.5)], ids=["numpy", "jax"])
def test_a_scalar_is_not_a_dtype(value):
    """Found by the fuzz: jnp.dtype reads a scalar as its dtype, so this was float32."""
    with pytest.raises(TypeError, match="mu_dtype"):
        adam_jax.adam(mu_dtype=value)


# --- gradients ---------------------------------------------------------------------------------

GRADIENT_FACTORIES = {
    "adam": lambda c: adam_jax.adam(0.1, convention=c),
    "amsgrad": lambda c: adam_jax.amsgrad(0.1, convention=c),
    "adamw": lambda c: adam_jax.adamw(0.1, weight_decay=0.1, convention=c),
    "adam-coupled": lambda c: adam_jax.adam(0.1, weight_decay=0.1, convention=c),
    "nadam": lambda c: adam_jax.nadam(0.1, convention=c),
    "maximize": lambda c: adam_jax.amsgrad(0.1, maximize=True, eps=0.0, convention=c),
    "adam_atan2": lambda c: adam_jax.adam_atan2(0.1, amsgrad=c == "keras"),  # no convention
}
BAD = [math.nan, math.inf, -math.inf]


@st.composite
def gradients(draw, dtypes=("float16", "bfloat16", "float32")):
    dtype = draw(st.sampled_from(dtypes))
    finfo = np.finfo(np.float16) if dtype == "float16" else np.finfo(np.float32)
    magnitude = float(min(finfo.max, 1e6))
    size = draw(st.integers(1, 6))
    values = draw(
        st.lists(st.floats(-magnitude, magnitude, width=32), min_size=size, max_size=size)
    )
    bad = draw(st.lists(st.sampled_from([None, *BAD]), min_size=size, max_size=size))
    g = np.asarray([v if b is None else b for v, b in zip(values, bad, strict=True)])
    return jnp.asarray(g, dtype)


def _check_updates(grads, updates):
    g = np.asarray(grads, np.float32)
    u = np.asarray(updates, np.float32)
    bad = ~np.isfinite(g)
    assert np.isnan(u[bad]).all(), (g, u)
    assert np.isfinite(u[~bad]).all(), (g, u)


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(
    st.sampled_from(sorted(GRADIENT_FACTORIES)),
    st.sampled_from(sorted(adam_jax.CONVENTIONS)),
    gradients(),
    st.integers(0, 2),
)
def test_nonfinite_gradient_coordinates_give_nan_updates(name, convention, grads, finite_steps):
    """After 0-2 finite steps, a step with NaN/inf coordinates: NaN there, finite elsewhere."""
    tx = GRADIENT_FACTORIES[name](convention)
    params = jnp.linspace(-1, 1, grads.shape[0]).astype(grads.dtype)
    state = tx.init(params)
    for _ in range(finite_steps):
        _, state = tx.update(jnp.ones_like(grads), state, params)
    updates, _ = tx.update(grads, state, params)
    assert updates.dtype == grads.dtype
    _check_updates(grads, updates)


@pytest.mark.skipif(not FUSED, reason="fused_adam's kernel is not built, or not a CPU backend")
@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(st.booleans(), st.booleans(), gradients(dtypes=("float32",)))
def test_fused_nonfinite_gradient_coordinates_give_nan_params(amsgrad, decoupled, grads):
    fused = adam_jax.fused_adam(
        0.1, amsgrad=amsgrad, weight_decay=0.1, decoupled_weight_decay=decoupled
    )
    params = jnp.linspace(-1, 1, grads.shape[0]).astype(jnp.float32)
    new, _ = jax.jit(fused.step)(params, grads, fused.init(params))
    _check_updates(grads, new - params)


# --- scripts/train.py's command line -----------------------------------------------------------

TRAIN = REPO / "scripts" / "train.py"
# Values a user might mistype; each flag gets one (or none, as a switch or a missing value).
VALUES = [
    "-1",
    "0",
    "1",
    "3",
    "1e99",
    "nan",
    "inf",
    "-inf",
    "abc",
    "",
    "99999999999999999999999",
    "0.5",
    "float16",
    "bogus",
    "/proc/1/forbidden",
    "--",
    None,
]


def _train(argv, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run(
        [sys.executable, str(TRAIN), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tempfile.gettempdir(),
    )


@pytest.fixture(scope="module")
def train_help():
    """``scripts/train.py --help``, run once for the module."""
    return _train(["--help"], timeout=120)


@pytest.fixture(scope="module")
def train_flags(train_help):
    """The program's long flags, as its --help lists them (a black box: whatever lands)."""
    assert train_help.returncode == 0, train_help.stderr[-3000:]  # test_train_help says more
    flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", train_help.stdout)
    return sorted(set(flags) - {"--help"})


def test_train_help(train_help):
    assert train_help.returncode == 0 and "--steps" in train_help.stdout, train_help.stderr[-3000:]
    assert "Traceback" not in train_help.stderr


def test_train_argv_fuzz(train_flags):
    base = [f for f in ("--steps", "--quiet") if f in train_flags]
    flags = [*train_flags, "--bogus-flag"]  # a second --out overrides the temporary one

    @settings(
        max_examples=8,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(st.tuples(st.sampled_from(flags), st.sampled_from(VALUES)), min_size=1, max_size=2)
    )
    def check(pairs):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["--out", str(pathlib.Path(tmp) / "run")]
            argv += ["--steps", "4"] if "--steps" in base else []
            argv += ["--quiet"] if "--quiet" in base else []
            for flag, value in pairs:
                argv += [flag] if value is None else [flag, value]
            proc = _train(argv)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr[-3000:])
        assert proc.returncode in (0, 2), (argv, proc.returncode, proc.stderr[-3000:])
        if proc.returncode == 2:
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1, (argv, proc.stderr)

    check()
