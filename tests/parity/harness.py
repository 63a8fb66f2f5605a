"""Runs adam_jax and the real PyTorch, optax and Keras optimizers side by side.

Shared by the tests in ``tests/parity/`` and by the dev tool
``scripts/dev/parity_report.py``, which writes docs/parity.md's tables from it. The seed's
PyTorch program is the user program ``scripts/seed_pytorch.py``, imported from there.

The problem: four parameter arrays (a scalar, a vector, a matrix and a 3-D
array) and, at step :math:`t`, the gradient

.. math::

  g_t(p) = s \\, (a \\odot (p - c) + n_t)

with fixed random curvatures :math:`a > 0`, centres :math:`c`, per-array scales
:math:`s` (from 1e-2 to 1e2, so that ``eps`` matters for some arrays and not for
others) and a fixed sequence of random noise :math:`n_t`. The gradient depends
on the parameters, so a difference between two optimizers compounds from step
to step. Each side computes the gradient from its own parameters, in its own
dtype, and the parameters are compared after every step. Centres lie 1 to 2
from zero and starting points further out on the same side, so that no array
comes near zero, where a relative difference would measure nothing (weight
decay pulls the 1e-2-scaled vector in to about 0.3 at the least).

Torch, Keras and the training package are imported inside the functions that need them,
so that this module imports without them.
"""

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from scripts.seed_pytorch import SEED_EPS, SEED_LR, SEED_STEPS, seed_pytorch

SHAPES = {"scalar": (), "vector": (7,), "matrix": (5, 3), "tensor": (2, 3, 4)}
SCALES = {"scalar": 1.0, "vector": 1e-2, "matrix": 1e2, "tensor": 0.3}
LR, B1, B2, EPS = 1e-2, 0.9, 0.999, 1e-8
WEIGHT_DECAY, EPS_ROOT, LARGE_EPS = 0.1, 1e-3, 1e-3
STEPS = {"float64": 300, "float32": 50}
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
TORCH_CODE_PATHS = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def decay_matrices(params: dict) -> dict:
    """The weight-decay mask of the masked cases: decay arrays of 2 or more dimensions.

    The scalar and the vector play a network's biases and norms, which are
    usually left undecayed; as a callable ``params -> tree of bools`` it is
    optax's ``mask=`` (and adam_jax's).
    """
    return {k: np.ndim(v) >= 2 for k, v in params.items()}


MASK_TREE = decay_matrices({k: np.zeros(s) for k, s in SHAPES.items()})
MASKS = {"tree": MASK_TREE, "callable": decay_matrices}


# --- the problem -----------------------------------------------------------------------------


ArrayT = TypeVar("ArrayT")  # NumPy as made; jax.Array or torch.Tensor after _as_arrays


@dataclasses.dataclass(frozen=True)
class Problem(Generic[ArrayT]):
    """Initial params, curvatures, centres, scales and noise, float64 NumPy as made."""

    p0: dict[str, ArrayT]
    a: dict[str, ArrayT]
    c: dict[str, ArrayT]
    s: dict[str, float]
    noise: dict[str, ArrayT]  # (steps, *shape)

    def grad(self, params: dict, noise: dict) -> dict:
        """The gradient at ``params`` for one step's ``noise``, in their array type."""
        return {k: self.s[k] * (self.a[k] * (params[k] - self.c[k]) + noise[k]) for k in params}


def make_problem(steps: int, seed: int = 0) -> Problem[np.ndarray]:
    """A random ``Problem`` with ``steps`` steps of noise."""
    rng = np.random.default_rng(seed)
    p0, a, c, noise = {}, {}, {}, {}
    for k, shape in SHAPES.items():
        sign = rng.choice([-1.0, 1.0], size=shape)
        c[k] = sign * rng.uniform(1.0, 2.0, size=shape)
        p0[k] = c[k] + sign * rng.uniform(0.2, 1.0, size=shape)
        a[k] = rng.uniform(0.5, 2.0, size=shape)
        noise[k] = rng.normal(size=(steps, *shape))
    return Problem(p0, a, c, dict(SCALES), noise)


def _as_arrays(
    problem: Problem[np.ndarray], convert: Callable[[np.ndarray], ArrayT]
) -> Problem[ArrayT]:
    def conv(arrays):
        return {k: convert(v) for k, v in arrays.items()}

    return Problem(
        conv(problem.p0), conv(problem.a), conv(problem.c), problem.s, conv(problem.noise)
    )


def relative_error(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> np.ndarray:
    """Per step, the largest over arrays of ``max|ours - ref| / max|ref|``.

    Args:
      ours, reference: trajectories, array name -> (steps, *shape).

    Returns:
      A float64 array of shape (steps,).
    """
    per_array = []
    for k, ref in reference.items():
        ref = ref.reshape(ref.shape[0], -1).astype(np.float64)
        diff = np.abs(ours[k].reshape(ref.shape).astype(np.float64) - ref).max(axis=1)
        per_array.append(diff / np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float64).tiny))
    return np.max(per_array, axis=0)


@contextlib.contextmanager
def precision(dtype: str):
    """JAX 64-bit mode on for ``dtype="float64"`` and off otherwise, inside the context only."""
    if dtype not in STEPS:
        raise ValueError(f"dtype must be one of {sorted(STEPS)}, got {dtype!r}.")
    with jax.enable_x64(dtype == "float64"):
        yield


# --- the cases ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison: a real optimizer and the adam_jax call that should equal it.

    Attributes:
      framework: ``"torch"``, ``"optax"`` or ``"keras"``.
      reference: the framework's optimizer: ``(name, kwargs)``, e.g.
        ``("Adam", {"amsgrad": True})``; the learning rate is added.
      ours: keyword arguments of ``adam_jax.<optimizer>`` (besides the learning
        rate and betas).
      schedule: ``None`` (constant learning rate), ``"cosine"`` or
        ``"piecewise"``: the same learning-rate schedule on both sides, see
        ``learning_rate``.
      optimizer: adam_jax's factory: ``"adam"`` or ``"nadam"``.
      mask: ``None`` (decay every array), or ``"tree"`` or ``"callable"``: decay
        only the arrays of ``decay_matrices``, given as ``MASKS[mask]`` to
        adam_jax and optax, as a second param group with ``weight_decay=0`` to
        torch and through ``exclude_from_weight_decay`` to Keras.
    """

    framework: str
    reference: tuple[str, dict]
    ours: dict
    schedule: str | None = None
    optimizer: str = "adam"
    mask: str | None = None

    @property
    def name(self) -> str:
        name, kwargs = self.reference
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        if self.mask is not None and self.framework == "optax":
            args += f", mask=<{self.mask}: ndim >= 2>"
        prefix = {"torch": "torch.optim.", "optax": "optax.", "keras": "keras.optimizers."}
        sched = f" + {self.schedule} schedule" if self.schedule else ""
        if self.mask is not None and self.framework == "torch":
            sched += " + weight_decay=0 group for ndim < 2"
        if self.mask is not None and self.framework == "keras":
            sched += " + exclude_from_weight_decay(ndim < 2)"
        return f"{prefix[self.framework]}{name}({args}){sched}"

    @property
    def convention(self) -> str:
        return self.ours.get("convention", "pytorch")

    @property
    def id(self) -> str:
        """A unique name: ``"<convention> = <framework call>"``."""
        return f"{self.convention} = {self.name}"


def _case(framework, convention, name, kwargs, ours, schedule=None, **options):
    ours = {"convention": convention, "eps": EPS, **ours}
    return Case(framework, (name, kwargs), ours, schedule, **options)


def _torch_case(name, kwargs, ours, schedule=None, **options):
    return _case("torch", "pytorch", name, kwargs, ours, schedule, **options)


def _optax_case(name, kwargs, ours, schedule=None, **options):
    return _case("optax", "optax", name, kwargs, ours, schedule, **options)


def _keras_case(name, kwargs, ours, schedule=None, **options):
    return _case("keras", "keras", name, kwargs, ours, schedule, **options)


WD, DWD = (
    {"weight_decay": WEIGHT_DECAY},
    {"weight_decay": WEIGHT_DECAY, "decoupled_weight_decay": True},
)
CASES: list[Case] = [
    _torch_case("Adam", {}, {}),
    _torch_case("Adam", {"amsgrad": True}, {"amsgrad": True}),
    _torch_case("Adam", {"weight_decay": WEIGHT_DECAY}, WD),
    _torch_case("Adam", {"maximize": True}, {"maximize": True}),
    _torch_case(
        "Adam",
        {"amsgrad": True, "weight_decay": WEIGHT_DECAY, "maximize": True},
        {"amsgrad": True, "maximize": True, **WD},
    ),
    _torch_case("Adam", {"eps": LARGE_EPS}, {"eps": LARGE_EPS}),
    _torch_case("AdamW", {"weight_decay": WEIGHT_DECAY}, DWD),
    _torch_case("AdamW", {"weight_decay": WEIGHT_DECAY, "amsgrad": True}, {"amsgrad": True, **DWD}),
    _torch_case("Adam", {"amsgrad": True}, {"amsgrad": True}, schedule="cosine"),
    Case("torch", ("Adam", {}), {"convention": "paper", "eps": EPS}),
    _optax_case("adam", {}, {}),
    _optax_case("adam", {"eps_root": EPS_ROOT}, {"eps_root": EPS_ROOT}),
    _optax_case("amsgrad", {}, {"amsgrad": True}),
    _optax_case("amsgrad", {"eps_root": EPS_ROOT}, {"amsgrad": True, "eps_root": EPS_ROOT}),
    _optax_case("amsgrad", {"eps": LARGE_EPS}, {"amsgrad": True, "eps": LARGE_EPS}),
    _optax_case("adamw", {"weight_decay": WEIGHT_DECAY}, DWD),
    _optax_case(
        "adamw",
        {"weight_decay": WEIGHT_DECAY, "eps_root": EPS_ROOT},
        {"eps_root": EPS_ROOT, **DWD},
    ),
    _optax_case("amsgrad", {}, {"amsgrad": True}, schedule="cosine"),
    Case(
        "optax",
        ("amsgrad", {"bias_correction_mu": False, "bias_correction_nu": False}),
        {"convention": "paper", "amsgrad": True, "eps": EPS},
    ),
    _keras_case("Adam", {}, {}),
    _keras_case("Adam", {"amsgrad": True}, {"amsgrad": True}),
    _keras_case(
        "Adam", {"amsgrad": True, "epsilon": LARGE_EPS}, {"amsgrad": True, "eps": LARGE_EPS}
    ),
    _keras_case("AdamW", {"weight_decay": WEIGHT_DECAY}, DWD),
    _keras_case("AdamW", {"weight_decay": WEIGHT_DECAY, "amsgrad": True}, {"amsgrad": True, **DWD}),
    _keras_case("Adam", {"amsgrad": True}, {"amsgrad": True}, schedule="piecewise"),
    # NAdam: torch's momentum schedule psi (momentum_decay), optax's constant mu = b1, Keras'
    # psi = 1; decoupled decay as torch's decoupled_weight_decay, optax.nadamw and Keras'.
    _torch_case("NAdam", {}, {}, optimizer="nadam"),
    _torch_case("NAdam", {"weight_decay": WEIGHT_DECAY}, WD, optimizer="nadam"),
    _torch_case(
        "NAdam",
        {"weight_decay": WEIGHT_DECAY, "decoupled_weight_decay": True},
        DWD,
        optimizer="nadam",
    ),
    _torch_case(
        "NAdam",
        {"momentum_decay": 0.02, "maximize": True},
        {"momentum_decay": 0.02, "maximize": True},
        optimizer="nadam",
    ),
    _torch_case("NAdam", {}, {}, schedule="cosine", optimizer="nadam"),
    Case("torch", ("NAdam", {}), {"convention": "paper", "eps": EPS}, optimizer="nadam"),
    _optax_case("nadam", {}, {}, optimizer="nadam"),
    _optax_case("adam", {"nesterov": True}, {}, optimizer="nadam"),
    _optax_case("nadam", {"eps_root": EPS_ROOT}, {"eps_root": EPS_ROOT}, optimizer="nadam"),
    _optax_case("nadamw", {"weight_decay": WEIGHT_DECAY}, DWD, optimizer="nadam"),
    _keras_case("Nadam", {}, {}, optimizer="nadam"),
    _keras_case("Nadam", {"weight_decay": WEIGHT_DECAY}, DWD, optimizer="nadam"),
    _keras_case("Nadam", {}, {}, schedule="piecewise", optimizer="nadam"),
    # Weight decay on the matrices only (decay_matrices): optax's mask=, torch's param groups.
    _optax_case("adamw", {"weight_decay": WEIGHT_DECAY}, DWD, mask="tree"),
    _optax_case("adamw", {"weight_decay": WEIGHT_DECAY}, DWD, mask="callable"),
    _optax_case("nadamw", {"weight_decay": WEIGHT_DECAY}, DWD, optimizer="nadam", mask="tree"),
    _torch_case("Adam", {"weight_decay": WEIGHT_DECAY}, WD, mask="tree"),
    _torch_case(
        "AdamW",
        {"weight_decay": WEIGHT_DECAY, "amsgrad": True},
        {"amsgrad": True, **DWD},
        mask="callable",
    ),
    _torch_case(
        "NAdam",
        {"weight_decay": WEIGHT_DECAY, "decoupled_weight_decay": True},
        DWD,
        optimizer="nadam",
        mask="tree",
    ),
    _keras_case("AdamW", {"weight_decay": WEIGHT_DECAY}, DWD, mask="tree"),
]


assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def cases(framework: str) -> list[Case]:
    """The cases of one framework."""
    return [c for c in CASES if c.framework == framework]


# --- the runners -------------------------------------------------------------------------------


PIECEWISE_LRS = (LR, 0.3 * LR, 0.07 * LR)


def piecewise_boundaries(steps: int) -> tuple[int, int]:
    """The step counts at which the piecewise schedule moves to its next value."""
    return steps // 3, 2 * steps // 3


def learning_rate(schedule: str | None, steps: int) -> optax.ScalarOrSchedule:
    """adam_jax's (and optax's) learning rate for a case's ``schedule``.

    ``"cosine"``: from LR to 0 over ``steps``, as ``CosineAnnealingLR(T_max=steps)``.
    ``"piecewise"``: ``PIECEWISE_LRS`` switching at ``piecewise_boundaries(steps)``,
    as Keras' ``PiecewiseConstantDecay``. An optax schedule sees the number of
    updates already made (0 on the first step), as torch's schedulers and Keras'
    ``iterations`` do.
    """
    if schedule is None:
        return LR
    if schedule == "cosine":
        return optax.cosine_decay_schedule(LR, decay_steps=steps)
    if schedule == "piecewise":
        return optax.join_schedules(
            [optax.constant_schedule(v) for v in PIECEWISE_LRS], list(piecewise_boundaries(steps))
        )
    raise ValueError(f"schedule must be None, 'cosine' or 'piecewise', got {schedule!r}.")


def run_optax_transform(
    make_tx: Callable[[], optax.GradientTransformation], problem: Problem, steps: int, dtype: str
) -> dict[str, np.ndarray]:
    """Runs an optax ``GradientTransformation`` in one jitted ``lax.scan``.

    Args:
      make_tx: builds the transformation (called inside the precision context).
      problem: the ``Problem``.
      steps: number of steps.
      dtype: ``"float32"`` or ``"float64"``.

    Returns:
      The params after every step, name -> (steps, *shape) NumPy arrays.
    """
    with precision(dtype):
        arr = _as_arrays(problem, lambda x: jnp.asarray(x, dtype))
        noise = {k: v[:steps] for k, v in arr.noise.items()}
        tx = make_tx()

        def step(carry, n):
            params, state = carry
            updates, state = tx.update(arr.grad(params, n), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        @jax.jit
        def run(params):
            return jax.lax.scan(step, (params, tx.init(params)), noise)[1]

        return {k: np.asarray(v) for k, v in run(arr.p0).items()}


def run_ours(case: Case, problem: Problem, steps: int, dtype: str) -> dict[str, np.ndarray]:
    """adam_jax's side of ``case``: ``adam_jax.<optimizer>(lr, B1, B2, **case.ours)``."""
    lr = learning_rate(case.schedule, steps)
    factory = getattr(adam_jax, case.optimizer)
    kwargs = dict(case.ours)
    if case.mask is not None:
        kwargs.setdefault("mask", MASKS[case.mask])  # case.ours' own mask wins
    return run_optax_transform(lambda: factory(lr, B1, B2, **kwargs), problem, steps, dtype)


def run_optax(case: Case, problem: Problem, steps: int, dtype: str) -> dict[str, np.ndarray]:
    """The real ``optax.<name>(**kwargs)`` of ``case`` (with ``mask=`` for a masked case)."""
    name, kwargs = case.reference
    lr = learning_rate(case.schedule, steps)
    kwargs = {"eps": EPS, **kwargs}
    if case.mask is not None:
        kwargs["mask"] = MASKS[case.mask]
    return run_optax_transform(
        lambda: getattr(optax, name)(lr, b1=B1, b2=B2, **kwargs), problem, steps, dtype
    )


@contextlib.contextmanager
def torch_threads(n: int):
    """Runs torch on ``n`` threads, restored on exit.

    These problems are small: on a busy 2-core machine torch's default thread
    pool only adds contention (the fused path ran 10x slower).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """``torch.set_default_dtype(dtype)`` inside the context only."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def run_torch(
    case: Case,
    problem: Problem,
    steps: int,
    dtype: str,
    code_path: str = "for-loop",
    float64_scalars: bool = True,
) -> dict[str, np.ndarray]:
    """The real ``torch.optim.<name>`` of ``case``, stepped ``steps`` times.

    Args:
      case: a torch ``Case``.
      problem, steps, dtype: as ``run_optax_transform``.
      code_path: ``"for-loop"``, ``"foreach"`` or ``"fused"``, torch's three
        implementations of the same optimizer.
      float64_scalars: run with torch's default dtype set to ``dtype``, as a
        float64 user does. torch keeps its optimizers' scalar state in the
        default dtype: NAdam's ``mu_product`` (the running product of the
        momentum schedule) is a float32 tensor unless the default dtype is
        float64 (``torch.optim.optimizer._get_scalar_dtype``), whatever the
        params' dtype. False keeps float32, to measure what that costs.
    """
    import torch

    tdtype = getattr(torch, dtype)
    arr = _as_arrays(problem, lambda x: torch.tensor(x, dtype=tdtype))
    params = {k: v.clone().requires_grad_(True) for k, v in arr.p0.items()}
    name, kwargs = case.reference
    kwargs = {"eps": EPS, **kwargs, **TORCH_CODE_PATHS[code_path]}
    groups: list[dict[str, Any]] = [{"params": list(params.values())}]
    if case.mask is not None:  # PyTorch's way to leave biases undecayed: a param group
        decayed = decay_matrices(params)
        groups = [
            {"params": [p for k, p in params.items() if decayed[k]]},
            {"params": [p for k, p in params.items() if not decayed[k]], "weight_decay": 0.0},
        ]
    opt = getattr(torch.optim, name)(groups, lr=LR, betas=(B1, B2), **kwargs)
    if case.schedule not in (None, "cosine"):
        raise ValueError(f"no torch scheduler for {case.schedule!r}.")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if case.schedule else None
    out = {k: np.empty((steps, *v.shape), dtype) for k, v in params.items()}
    with torch_threads(1), torch_default_dtype(tdtype if float64_scalars else torch.float32):
        for t in range(steps):
            with torch.no_grad():
                for k, g in arr.grad(params, {k: n[t] for k, n in arr.noise.items()}).items():
                    params[k].grad = g
            opt.step()
            if sched is not None:
                sched.step()
            for k, p in params.items():
                out[k][t] = p.detach().numpy()
    return out


def import_keras():
    """Imports Keras with the JAX backend (``KERAS_BACKEND`` must be set before)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"the Keras parity runs need KERAS_BACKEND=jax, got {keras.backend.backend()!r}."
        )
    return keras


def run_keras(case: Case, problem: Problem, steps: int, dtype: str) -> dict[str, np.ndarray]:
    """The real ``keras.optimizers.<name>`` of ``case`` (JAX backend).

    Runs Keras' own update through ``optimizer.stateless_apply`` in a jitted
    ``lax.scan``, as Keras' JAX trainer does in ``model.fit``, with
    ``floatx = dtype``; the previous floatx is restored.
    """
    keras = import_keras()
    name, kwargs = case.reference
    kwargs = {"epsilon": EPS, **kwargs}
    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        with precision(dtype):
            arr = _as_arrays(problem, lambda x: jnp.asarray(x, dtype))
            lr = LR
            if case.schedule == "piecewise":
                # Keras takes values[i + 1] once step > boundaries[i].
                boundaries = [b - 1 for b in piecewise_boundaries(steps)]
                lr = keras.optimizers.schedules.PiecewiseConstantDecay(
                    boundaries, list(PIECEWISE_LRS)
                )
            elif case.schedule is not None:
                raise ValueError(f"no Keras schedule for {case.schedule!r}.")
            opt = getattr(keras.optimizers, name)(learning_rate=lr, beta_1=B1, beta_2=B2, **kwargs)
            keys = list(arr.p0)
            variables = [keras.Variable(arr.p0[k], dtype=dtype, name=k) for k in keys]
            if case.mask is not None:
                decayed = decay_matrices(arr.p0)
                opt.exclude_from_weight_decay(
                    [v for k, v in zip(keys, variables, strict=True) if not decayed[k]]
                )
            opt.build(variables)

            def step(carry, noise):
                values, opt_values = carry
                grads = arr.grad(dict(zip(keys, values, strict=True)), noise)
                values, opt_values = opt.stateless_apply(
                    opt_values, [grads[k] for k in keys], values
                )
                return (values, opt_values), values

            @jax.jit
            def run(values, opt_values):
                return jax.lax.scan(
                    step, (values, opt_values), {k: arr.noise[k][:steps] for k in keys}
                )[1]

            out = run([v.value for v in variables], [v.value for v in opt.variables])
            return {k: np.asarray(v) for k, v in zip(keys, out, strict=True)}
    finally:
        keras.config.set_floatx(floatx)


def run_reference(case: Case, problem: Problem, steps: int, dtype: str, **kwargs):
    """The framework's side of ``case``; ``kwargs`` go to ``run_torch``."""
    runner = {"torch": run_torch, "optax": run_optax, "keras": run_keras}[case.framework]
    return runner(case, problem, steps, dtype, **kwargs)


@functools.cache
def _problem(steps: int) -> Problem:
    return make_problem(steps)


@functools.cache
def _ours(case_id: str, steps: int, dtype: str) -> dict[str, np.ndarray]:
    case = next(c for c in CASES if c.id == case_id)
    return run_ours(case, _problem(steps), steps, dtype)


@functools.cache
def _reference(case_id: str, steps: int, dtype: str, code_path: str | None):
    case = next(c for c in CASES if c.id == case_id)
    kwargs = {} if code_path is None else {"code_path": code_path}
    return run_reference(case, _problem(steps), steps, dtype, **kwargs)


def compare(
    case: Case, dtype: str, ours: dict | None = None, code_path: str | None = None
) -> np.ndarray:
    """Relative error of adam_jax against the framework after each step.

    Runs ``STEPS[dtype]`` steps of ``make_problem`` on both sides; adam_jax's
    trajectories are computed once per case, dtype (and code path), and reused.

    Args:
      case: a ``Case``.
      dtype: ``"float32"`` or ``"float64"``.
      ours: adam_jax keyword arguments replacing ``case.ours`` (to show that
        another convention does not match).
      code_path: torch's code path for torch cases (default ``"for-loop"``),
        see ``run_torch``.

    Returns:
      ``relative_error`` per step, shape ``(STEPS[dtype],)``.
    """
    steps = STEPS[dtype]
    if ours is None:
        trajectory = _ours(case.id, steps, dtype)
    else:
        trajectory = run_ours(dataclasses.replace(case, ours=ours), _problem(steps), steps, dtype)
    if case.framework == "torch" and code_path is None:
        code_path = "for-loop"
    reference = _reference(case.id, steps, dtype, code_path)
    return relative_error(trajectory, reference)


def torch_code_path_unsupported(code_path: str, dtype: str, optimizer: str = "Adam") -> str | None:
    """Why torch's ``code_path`` of ``optimizer`` cannot run ``dtype`` on the CPU, or None."""
    import torch

    p = torch.zeros(2, dtype=getattr(torch, dtype), requires_grad=True)
    p.grad = torch.ones_like(p)
    try:
        getattr(torch.optim, optimizer)([p], **TORCH_CODE_PATHS[code_path]).step()
    except (RuntimeError, ValueError, TypeError) as e:  # TypeError: no such argument (fused NAdam)
        version = f"torch {torch.__version__}"
        return f"{version} {code_path} {optimizer} does not support {dtype} on CPU: {e}"
    return None


# --- the seed's loss curves ---------------------------------------------------------------------


SEED_CURVES = {
    "pytorch": "torch.optim.Adam(amsgrad=True)",
    "adam_jax_pytorch": 'adam_jax, convention="pytorch"',
    "optax_amsgrad": "optax.amsgrad",
    "adam_jax_optax": 'adam_jax, convention="optax"',
    "optax_amsgrad_nu_raw": "optax.amsgrad(bias_correction_nu=False)",
}


def train_py_losses(npz: os.PathLike, out_dir: os.PathLike, *flags: str) -> np.ndarray:
    """Runs ``scripts/train.py --init-from npz --out out_dir *flags``; returns its losses.

    ``out_dir`` must not exist yet. ``jax_enable_x64`` (global to the process,
    and needed by float64 files) is restored afterwards.
    """
    from adam_jax.training import cli  # the train extra (flax, orbax): only the seed's tests

    x64 = jax.config.read("jax_enable_x64")
    try:
        rc = cli.main(["--init-from", str(npz), "--out", str(out_dir), "--quiet", *flags])
    finally:
        jax.config.update("jax_enable_x64", x64)
    if rc:
        raise RuntimeError(f"scripts/train.py exited with {rc}: {flags}")
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return np.array([r["loss"] for r in records])


def seed_losses(npz: os.PathLike, tx: optax.GradientTransformation, steps: int) -> np.ndarray:
    """The seed's network trained from ``npz``'s weights and data with any ``tx``.

    A plain-JAX copy of the seed's loop (Linear-ReLU-Linear, sum-of-squares
    loss) in one jitted ``lax.scan``, in the file's dtype; the loss of each step
    is taken before its update, as the seed prints it.
    """
    saved = np.load(npz)
    dtype = str(saved["x"].dtype)
    with precision(dtype):
        x, y = jnp.asarray(saved["x"]), jnp.asarray(saved["y"])
        params = {k: jnp.asarray(saved[k]) for k in ("w1", "b1", "w2", "b2")}

        def loss_fn(p):
            hidden = jax.nn.relu(x @ p["w1"].T + p["b1"][None])
            return jnp.sum((hidden @ p["w2"].T + p["b2"][None] - y) ** 2)

        def step(carry, _):
            p, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, state = tx.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps)[1])
        return np.asarray(run(params), np.float64)


def write_seed_npz(path: os.PathLike, dtype: str) -> None:
    """Runs the seed's PyTorch program (seed 0) and saves its ``.npz`` to ``path``."""
    with torch_threads(1):
        np.savez(path, **seed_pytorch(dtype=dtype))


def seed_curves(npz: os.PathLike, workdir: os.PathLike) -> dict[str, np.ndarray]:
    """The seed's loss curves from ``npz``'s weights and data, keyed as ``SEED_CURVES``.

    PyTorch's losses are the file's; adam_jax's come from ``scripts/train.py``
    (AMSGrad, writing into ``workdir``); optax's from ``seed_losses`` with the
    real ``optax.amsgrad``, also with ``bias_correction_nu=False`` (the maximum of
    the raw moment) where this optax has that argument.
    """
    workdir = pathlib.Path(workdir)
    flags = ["--optimizer", "amsgrad", "--lr", str(SEED_LR), "--eps", str(SEED_EPS)]
    flags += ["--steps", str(SEED_STEPS)]
    curves = {
        "pytorch": np.load(npz)["losses"].astype(np.float64),
        "adam_jax_pytorch": train_py_losses(npz, workdir / "pytorch", *flags),
        "optax_amsgrad": seed_losses(npz, optax.amsgrad(SEED_LR, eps=SEED_EPS), SEED_STEPS),
        "adam_jax_optax": train_py_losses(npz, workdir / "optax", *flags, "--convention", "optax"),
    }
    if "bias_correction_nu" in inspect.signature(optax.amsgrad).parameters:
        tx = optax.amsgrad(SEED_LR, eps=SEED_EPS, bias_correction_nu=False)
        curves["optax_amsgrad_nu_raw"] = seed_losses(npz, tx, SEED_STEPS)
    return curves
