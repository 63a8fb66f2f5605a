"""What storing Adam's moments in 8 bits does to the step, measured along a training run.

The step of the ``pytorch`` convention (the tasks' AdamW and Adam, ``eps_root = 0``) is

.. math::

  s_t = \\frac{m_t / c_1}{\\sqrt{v_t / c_2} + \\epsilon}, \\qquad
  m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\quad
  v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2,

with :math:`c_i = 1 - \\beta_i^t`. An 8-bit state computes :math:`m_t, v_t` in float32 from the
dequantized :math:`Q(m_{t-1}), Q(v_{t-1})` (:math:`Q`: ``adam_jax._quantize`` round trip), so
the stored moments differ from float32's by one rounding (along a float32 run) or by every
rounding so far (along an 8-bit run). Each step, on the same gradient :math:`g_t`, this script
computes :math:`s_t` from float32 moments (:math:`s^{32}`) and from the 8-bit ones
(:math:`s^{8}`), and, to tell the two moments apart, from 8-bit :math:`v` only and 8-bit
:math:`m` only, and sums over each leaf:

- ``rms_ratio``: :math:`\\lVert s^{8} \\rVert / \\lVert s^{32} \\rVert` (``v_only``,
  ``m_only``: the same with one moment quantized); ``cosine`` between :math:`s^8` and
  :math:`s^{32}`;
- ``step_factor``: the mean over coordinates of
  :math:`(\\sqrt{\\hat v^{32}} + \\epsilon) / (\\sqrt{\\hat v^{8}} + \\epsilon)`, what the 8-bit
  :math:`v` multiplies each coordinate's step by;
- ``v_ratio``: the mean of :math:`Q(v_{t-1}) / v_{t-1}` over coordinates with
  :math:`v_{t-1} > 0` (1: the stored :math:`v` is unbiased); ``v_zero``: the fraction of those
  whose stored :math:`v` is 0.

Two trajectories, each with ``lowmem_study``'s settings of the task (steps, init, schedule, the
task's optimizer and learning rate, data and seed):

- ``float32``: float32 Adam; :math:`Q` is applied once, to its state of the previous step
  (the bias of one rounding);
- ``8-bit state``: 8-bit Adam (``BlockQuantization(rounding=...)`` of ``--moment-rounding``:
  ``nearest`` by default, bitsandbytes' rounding, whose drift the probe measures); a float32
  copy of the moments is fed the same gradients (the bias accumulated along the run). The
  params follow the 8-bit steps.

The probe does not change either run: the params get the optimizer's own updates. Sums are
taken over every step of a chunk and reported per chunk, per leaf and over the quantized
leaves. Writes ``<out>/bench/lowmem_probe.json``.

    python -m scripts.benchmarks.lowmem_probe --out /tmp/probe   # 2 x 800 lm steps: ~25 min here
    python -m scripts.benchmarks.lowmem_probe --tasks digits --out /tmp/probe   # ~1 min

Reference: Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
"""

import argparse
import dataclasses
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from adam_jax import _quantize
from adam_jax.training import config as run_config
from adam_jax.training import loop
from adam_jax.training.tasks import get_task
from scripts.benchmarks import common

B1, B2, EPS = 0.9, 0.999, 1e-8  # the factories' defaults, passed explicitly
TRAJECTORIES = ("float32", "8-bit state")
SUMS = (
    "f32_sq",  # sum of (s32)^2
    "q_sq",  # sum of (s8)^2
    "v_only_sq",
    "m_only_sq",
    "dot",  # sum of s8 * s32
    "f32_sq_kept",  # the same two over the coordinates whose stored v did not round to 0
    "q_sq_kept",
    "step_factor",  # sum over every coordinate
    "log_step_factor",  # sum of its log over the kept coordinates with v > 0
    "log_v_ratio",  # sum of log(Q(v) / v) over them
    "v_pos",  # coordinates with v > 0 (float32)
    "v_zero",  # of those, the ones whose stored v is 0
    "size",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A task's settings in ``lowmem_study``: its steps, the chunk between reports, the init,
    the warmup before cosine decay (0: a constant learning rate) and the held-out metric."""

    steps: int
    chunk: int
    init: str
    warmup: int
    metric: str


SETTINGS = {
    "lm": Settings(800, 100, "flax", 100, "test_perplexity"),
    "digits": Settings(2000, 100, "torch", 0, "test_accuracy"),
}


class ProbeState(NamedTuple):
    """The optimizer's state, a float32 copy of its moments, and this chunk's sums per leaf."""

    inner: Any
    mu: Any
    nu: Any
    sums: Any  # per leaf, float32 of shape (len(SUMS),)


def adam_moments(state) -> adam_jax.ScaleByAdamState:
    """The ``ScaleByAdamState`` inside an optimizer's state."""
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, adam_jax.ScaleByAdamState))
        if isinstance(s, adam_jax.ScaleByAdamState)
    ]
    assert len(found) == 1, "one Adam moment state expected"
    return found[0]


def round_trip(x: jax.Array, signed: bool, quantization: adam_jax.BlockQuantization):
    """``x`` quantized and dequantized (float32), or ``x`` for a leaf kept in float32."""
    if not quantization.applies_to(x):
        return x
    block = quantization.block_size
    q = _quantize.quantize(x, signed=signed, block_size=block)
    return _quantize.dequantize(q, signed=signed, block_size=block)


def stored(x, signed: bool, quantization: adam_jax.BlockQuantization) -> jax.Array:
    """A moment leaf as float32: dequantized when it is stored in 8 bits."""
    if isinstance(x, adam_jax.QuantizedArray):
        return _quantize.dequantize(x, signed=signed, block_size=quantization.block_size)
    return x


def leaf_sums(g, m32, v32, m8, v8, t) -> jax.Array:
    """This step's ``SUMS`` of one leaf from the previous moments, float32 and 8-bit."""
    c1 = 1 - jnp.float32(B1) ** t
    c2 = 1 - jnp.float32(B2) ** t
    decay1, decay2 = jnp.float32(B1), jnp.float32(B2)

    def moments(m, v):
        return decay1 * m + (1 - decay1) * g, decay2 * v + (1 - decay2) * (g * g)

    def step(m, v):
        return (m / c1) / (jnp.sqrt(v / c2) + EPS)

    (m_new32, v_new32), (m_new8, v_new8) = moments(m32, v32), moments(m8, v8)
    s32, s8 = step(m_new32, v_new32), step(m_new8, v_new8)
    v_only, m_only = step(m_new32, v_new8), step(m_new8, v_new32)
    factor = (jnp.sqrt(v_new32 / c2) + EPS) / (jnp.sqrt(v_new8 / c2) + EPS)
    positive = v32 > 0
    zeroed = positive & (v8 == 0)
    kept = positive & ~zeroed
    return jnp.stack(
        [
            jnp.sum(s32 * s32),
            jnp.sum(s8 * s8),
            jnp.sum(v_only * v_only),
            jnp.sum(m_only * m_only),
            jnp.sum(s8 * s32),
            jnp.sum(jnp.where(zeroed, 0, s32 * s32)),
            jnp.sum(jnp.where(zeroed, 0, s8 * s8)),
            jnp.sum(factor),
            jnp.sum(jnp.where(kept, jnp.log(factor), 0)),
            jnp.sum(jnp.where(kept, jnp.log(jnp.where(kept, v8 / v32, 1)), 0)),
            jnp.sum(positive),
            jnp.sum(zeroed),
            jnp.float32(g.size),
        ]
    ).astype(jnp.float32)


def probed(
    inner: optax.GradientTransformation,
    quantization: adam_jax.BlockQuantization,
    eight_bit: bool,
) -> optax.GradientTransformation:
    """``inner`` with the probe alongside: its updates unchanged, the sums in the state.

    ``eight_bit``: ``inner`` stores its moments in 8 bits (compare them with the float32 copy);
    otherwise the 8-bit moments are the float32 ones rounded once.
    """

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)
        sums = jax.tree.map(lambda p: jnp.zeros(len(SUMS), jnp.float32), params)
        return ProbeState(inner.init(params), zeros, zeros, sums)

    def update(grads, state, params=None):
        updates, inner_state = inner.update(grads, state.inner, params)
        t = adam_moments(inner_state).count
        if eight_bit:
            previous = adam_moments(state.inner)
            is_quantized = lambda x: isinstance(x, adam_jax.QuantizedArray)  # noqa: E731
            mu8 = jax.tree.map(
                lambda x: stored(x, True, quantization), previous.mu, is_leaf=is_quantized
            )
            nu8 = jax.tree.map(
                lambda x: stored(x, False, quantization), previous.nu, is_leaf=is_quantized
            )
        else:
            mu8 = jax.tree.map(lambda x: round_trip(x, True, quantization), state.mu)
            nu8 = jax.tree.map(lambda x: round_trip(x, False, quantization), state.nu)
        step_sums = jax.tree.map(
            lambda g, m32, v32, m8, v8: leaf_sums(g.astype(jnp.float32), m32, v32, m8, v8, t),
            grads,
            state.mu,
            state.nu,
            mu8,
            nu8,
        )
        decay1, decay2 = jnp.float32(B1), jnp.float32(B2)
        mu = jax.tree.map(lambda m, g: decay1 * m + (1 - decay1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: decay2 * v + (1 - decay2) * (g * g), state.nu, grads)
        sums = jax.tree.map(jnp.add, state.sums, step_sums)
        return updates, ProbeState(inner_state, mu, nu, sums)

    return optax.GradientTransformation(init, update)


def ratios(s: np.ndarray) -> dict:
    """The reported ratios from summed ``SUMS`` (one leaf's, or several added)."""
    n = dict(zip(SUMS, s.tolist(), strict=True))
    kept = max(n["v_pos"] - n["v_zero"], 1)
    return {
        "rms_ratio": float(np.sqrt(n["q_sq"] / n["f32_sq"])),
        "rms_ratio_v_only": float(np.sqrt(n["v_only_sq"] / n["f32_sq"])),
        "rms_ratio_m_only": float(np.sqrt(n["m_only_sq"] / n["f32_sq"])),
        "rms_ratio_kept": float(np.sqrt(n["q_sq_kept"] / n["f32_sq_kept"])),
        "cosine": float(n["dot"] / np.sqrt(n["q_sq"] * n["f32_sq"])),
        "zeroed_share_of_sq": 1 - n["q_sq_kept"] / n["q_sq"],
        "step_factor_mean": n["step_factor"] / n["size"],
        "step_factor_geomean_kept": float(np.exp(n["log_step_factor"] / kept)),
        "v_ratio_geomean_kept": float(np.exp(n["log_v_ratio"] / kept)),
        "v_zero": n["v_zero"] / max(n["v_pos"], 1),
    }


def make_problem(task_name: str, settings: Settings, seed: int):
    """The task's problem with float32 params and compute, and its defaults: the settings
    ``train.py --task task_name --rng-seed seed --init ...`` resolves to (``overwrite``: no
    check of a run directory, none is written)."""
    task = get_task(task_name)
    config = run_config.resolve(
        {"task": task_name, "rng_seed": seed, "overwrite": True, "init": settings.init}
    )
    problem = task.make_problem(config, {"param_dtype": jnp.float32, "dtype": jnp.float32})
    return problem, task.defaults


def run(
    task_name: str,
    trajectory: str,
    steps: int,
    seed: int,
    quantization: adam_jax.BlockQuantization,
) -> dict:
    """One probed run of ``task_name``: per chunk, the held-out metric and the ratios
    (``quantization``: the 8-bit trajectory's)."""
    settings = SETTINGS[task_name]
    problem, defaults = make_problem(task_name, settings, seed)
    lr = defaults["lr"]
    if settings.warmup:
        lr = optax.warmup_cosine_decay_schedule(0.0, defaults["lr"], settings.warmup, steps)
    eight_bit = trajectory == "8-bit state"
    kwargs = {"quantized_state": quantization} if eight_bit else {}
    inner = getattr(adam_jax, defaults["optimizer"])(lr, b1=B1, b2=B2, eps=EPS, **kwargs)
    optimizer = probed(inner, quantization, eight_bit)
    train_step = loop.make_train_step(problem, optimizer, loss_dtype=jnp.float32, learning_rate=lr)
    run_chunk = loop.make_run_chunk(train_step, settings.chunk)
    evaluate = loop.make_evaluate(problem, jnp.float32)
    state = loop.init_state(problem, optimizer, seed)
    quantized = [quantization.applies_to(p) for p in jax.tree.leaves(problem.params)]
    names = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    chunks, start_s = [], time.perf_counter()
    for start in range(0, steps, settings.chunk):
        state, metrics, _ = run_chunk(state, problem.train, min(settings.chunk, steps - start))
        sums = np.stack([np.asarray(s) for s in jax.tree.leaves(state.opt_state.sums)])
        zeros = jax.tree.map(jnp.zeros_like, state.opt_state.sums)
        state = state._replace(opt_state=state.opt_state._replace(sums=zeros))
        row = {"step": int(state.step)}
        row["train_loss_mean"] = float(np.nanmean(np.asarray(metrics["loss"])))
        if evaluate is not None:
            row |= {k: float(v) for k, v in evaluate(state.params, problem.test).items()}
        row["quantized_leaves"] = ratios(sums[np.asarray(quantized)].sum(0))
        row["all_leaves"] = ratios(sums.sum(0))
        row["per_leaf"] = {
            name: ratios(s) for name, s, q in zip(names, sums, quantized, strict=True) if q
        }
        chunks.append(row)
        r = row["quantized_leaves"]
        shown = f"  {settings.metric} {row[settings.metric]:.4f}" if settings.metric in row else ""
        print(
            f"{task_name:>6} {trajectory:>11} step {row['step']:5d}{shown}  |s8|/|s32| "
            f"{r['rms_ratio']:.4f} (v only {r['rms_ratio_v_only']:.4f}, m only "
            f"{r['rms_ratio_m_only']:.4f}, v kept {r['rms_ratio_kept']:.4f})  cos "
            f"{r['cosine']:.4f}  factor {r['step_factor_mean']:.4f}, geo "
            f"{r['step_factor_geomean_kept']:.4f}  Q(v)/v geo {r['v_ratio_geomean_kept']:.4f}"
            f"  v->0 {r['v_zero']:.2e}",
            flush=True,
        )
    moments = adam_moments(state.opt_state.inner)
    same = None
    if not eight_bit:  # the probe's float32 copy follows the optimizer's moments exactly
        same = all(
            bool(jnp.array_equal(a, b))
            for a, b in zip(
                jax.tree.leaves((moments.mu, moments.nu)),
                jax.tree.leaves((state.opt_state.mu, state.opt_state.nu)),
                strict=True,
            )
        )
    return {
        "chunks": chunks,
        "copy_equals_optimizer_moments": same,
        "seconds": time.perf_counter() - start_s,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=list(SETTINGS), default=["lm"])
    parser.add_argument("--trajectories", nargs="+", choices=TRAJECTORIES, default=TRAJECTORIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="default: each task's SETTINGS")
    parser.add_argument(
        "--moment-rounding",
        choices=("nearest", "stochastic"),
        default="nearest",
        help="the 8-bit trajectory's rounding (nearest: where the stored moments drift)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=adam_jax.BlockQuantization().min_size,
        help="the 8-bit trajectory's smallest quantized leaf",
    )
    parser.add_argument("--out", default="docs", help="writes bench/lowmem_probe.json")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result: dict = {"machine": common.machine(), "seed": args.seed, "tasks": {}}
    result["moment_rounding"] = args.moment_rounding
    result["min_size"] = args.min_size
    quantization = adam_jax.BlockQuantization(
        min_size=args.min_size, rounding=args.moment_rounding, seed=args.seed
    )
    load_start = os.getloadavg()
    for task_name in args.tasks:
        steps = args.steps or SETTINGS[task_name].steps
        result["tasks"][task_name] = {
            name: run(task_name, name, steps, args.seed, quantization) for name in args.trajectories
        }
    result["machine"]["loadavg_start"] = load_start
    result["machine"]["loadavg_end"] = os.getloadavg()
    os.makedirs(os.path.join(args.out, "bench"), exist_ok=True)
    common.write_json(os.path.join(args.out, "bench", "lowmem_probe.json"), result)
    return result


if __name__ == "__main__":
    main()
