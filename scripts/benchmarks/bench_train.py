"""Benchmark the seed's training: 500 AMSGrad steps in PyTorch eager and in JAX with adam_jax.

The seed's problem: a 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares loss on 64 random inputs and
targets, ``torch.optim.Adam(lr=1e-4, amsgrad=True, eps=1e-8)``, 500 steps: the ``seed`` task of
the training registry (``adam_jax.training.tasks``), whose weights and data are those of
``scripts/train.py``. Every variant starts from them and runs the same 500 steps:

- ``torch default|foreach|fused, N thr``: eager PyTorch (``zero_grad``, forward, ``backward``,
  ``step``) with ``torch.set_num_threads(N)``; "default" is ``torch.optim.Adam``'s own choice
  (the single-tensor loop on the CPU).
- ``jax jit-step``: one jitted, donated step (gradient and ``adam_jax.amsgrad`` update) called
  500 times from Python; the losses stay on the device until the end.
- ``jax jit-step, loss.item()``: the same, fetching every loss as the seed prints it.
- ``jax scan``: all 500 steps in one jitted ``lax.scan`` of a plain-JAX step.
- ``jax train loop``: ``scripts/train.py``'s own path without its file I/O: the training
  package's ``train_step`` (Flax model, adam_jax.amsgrad, the epsilon metric) in its jitted
  ``lax.scan`` chunks of 50 steps, the metrics fetched after each chunk.
- ``jax scan, fused_adam``: the same with ``adam_jax.fused_adam(amsgrad=True)`` (the opt-in
  one-pass CPU kernel) in place of ``adam_jax.amsgrad`` and ``apply_updates``.
- ``floor fwd+bwd``: the scan's forward and backward passes alone, no optimizer (each step's input
  is scaled by a runtime 1.0 so XLA cannot hoist the work out of the loop).
  Its time and the FLOP count of a step (2*64*1000*100 for the first layer forward, as much for
  its weight gradient, and the small second layer: 26 MFLOP) give the GFLOP/s reached.

Compile time is measured apart (``lower().compile()``). Variants are interleaved round-robin
(see ``common.py``), each repetition from fresh copies of the weights.

    python -m scripts.benchmarks.bench_train          # 30 repetitions, writes docs/bench/train.json
    python -m scripts.benchmarks.bench_train --quick  # 3 repetitions of 100 steps
"""

import argparse
import os
import random
import sys
import time
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

import adam_jax
from adam_jax.training import loop
from adam_jax.training.tasks import seed as seed_task
from scripts.benchmarks import common

N, D_IN, HIDDEN, D_OUT = 64, *seed_task.SIZES
LR, EPS = 1e-4, 1e-8
CHUNK = 50  # train.py's --log-every on the seed task
FLOP_PER_STEP = 2 * N * D_IN * HIDDEN * 2 + 2 * N * HIDDEN * D_OUT * 3  # fwd+dW1, fwd+dW2+dh


def seed_config(seed: int = 0) -> SimpleNamespace:
    """``scripts/train.py``'s flags on the seed task, float32."""
    return SimpleNamespace(
        rng_seed=seed, batch_size=N, dtype="float32", init="torch", init_from=None
    )


def seed_problem(seed: int = 0):
    return seed_task.make_problem(
        seed_config(seed), {"param_dtype": np.float32, "dtype": np.float32}
    )


def seed_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The seed task's weights (``torch.nn.Linear``'s layout), inputs and targets."""
    return seed_task.torch_layout(seed_problem(seed))


# --- JAX --------------------------------------------------------------------------------------


def loss_fn(params, x, y):
    """Sum-of-squares loss of the MLP, ``torch.nn.Linear`` layout (out, in)."""
    h = jax.nn.relu(x @ params["w1"].T + params["b1"])
    return jnp.sum((h @ params["w2"].T + params["b2"] - y) ** 2)


def jax_variants(arrays, steps):
    """name -> (prepare, run, sync); plus compile times in seconds."""
    x, y = jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"])
    names = ("w1", "b1", "w2", "b2")
    opt = adam_jax.amsgrad(LR, eps=EPS)
    fused = adam_jax.fused_adam(LR, eps=EPS, amsgrad=True)

    def fresh():
        params = {k: jnp.array(arrays[k]) for k in names}
        return params, opt.init(params)

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, loss

    def fused_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return *fused.step(params, grads, opt_state), loss

    jit_step = jax.jit(step, donate_argnums=(0, 1))

    def make_scan(step):
        @partial(jax.jit, donate_argnums=(0, 1))
        def scan(params, opt_state):
            def body(carry, _):
                params, opt_state, loss = step(*carry)
                return (params, opt_state), loss

            return jax.lax.scan(body, (params, opt_state), length=steps)

        return scan

    scan = make_scan(step)
    scan_fused = make_scan(fused_step)

    problem = seed_problem()
    train_step = loop.make_train_step(
        problem,
        opt,
        loss_dtype=jnp.float32,
        learning_rate=LR,
        epsilon_report=lambda s: adam_jax.epsilon_report(s, opt),
    )
    run_chunk = loop.make_run_chunk(train_step, CHUNK)

    @jax.jit
    def floor_fwd_bwd(params, scales):
        def body(acc, s):
            loss, grads = jax.value_and_grad(loss_fn)(params, x * s, y)
            return acc + loss + sum(jnp.sum(g) for g in jax.tree.leaves(grads)), None

        return jax.lax.scan(body, jnp.zeros(()), scales)[0]

    compile_s = {}
    p, s = fresh()
    t0 = time.perf_counter()
    jit_step.lower(p, s).compile()
    compile_s["jax jit-step"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan.lower(p, s).compile()
    compile_s["jax scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_fused.lower(p, fused.init(p)).compile()
    compile_s["jax scan, fused_adam"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    initial = loop.init_state(problem, opt, 0)
    run_chunk = run_chunk.lower(initial, problem.train, np.int32(0)).compile()
    compile_s["jax train loop"] = time.perf_counter() - t0
    scales = jnp.ones(steps)

    box = {}

    def prepare():
        box["p"], box["s"] = fresh()
        jax.block_until_ready(box)

    def run_loop(fetch):
        p, s = box["p"], box["s"]
        losses = []
        for _ in range(steps):
            p, s, loss = jit_step(p, s)
            losses.append(float(loss) if fetch else loss)
        box["p"], box["s"], box["losses"] = p, s, losses

    def prepare_fused():
        box["p"], _ = fresh()
        box["s"] = fused.init(box["p"])
        jax.block_until_ready(box)

    def run_scan(fn):
        (box["p"], box["s"]), box["losses"] = fn(box["p"], box["s"])

    def prepare_loop():
        box["state"] = loop.init_state(problem, opt, 0)
        jax.block_until_ready(box)

    def run_train_loop():
        state, losses = box.pop("state"), []
        for start in range(0, steps, CHUNK):
            n = min(CHUNK, steps - start)
            state, metrics, finite = run_chunk(state, problem.train, np.int32(n))
            metrics, finite = jax.device_get((metrics, finite))  # train.py's one sync per chunk
            losses += list(metrics["loss"][:n])
        box["state"], box["losses"] = state, losses

    def run_floor(fn):
        box["out"] = fn(box["p"], scales)

    def sync():
        jax.block_until_ready(box)

    variants = {
        "jax jit-step": (prepare, lambda: run_loop(False), sync),
        "jax jit-step, loss.item()": (prepare, lambda: run_loop(True), sync),
        "jax scan": (prepare, lambda: run_scan(scan), sync),
        "jax scan, fused_adam": (prepare_fused, lambda: run_scan(scan_fused), sync),
        "jax train loop": (prepare_loop, run_train_loop, sync),
        "floor fwd+bwd": (prepare, lambda: run_floor(floor_fwd_bwd), sync),
    }
    for prep, run, sy in variants.values():  # compile and warm up
        prep()
        run()
        sy()
    return variants, compile_s, box


# --- PyTorch ----------------------------------------------------------------------------------


def torch_variants(torch, arrays, steps, threads):
    """name -> (prepare, run, sync) for each optimizer variant and thread count."""
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    box = {}

    def prepare(variant, n_threads):
        torch.set_num_threads(n_threads)
        model = torch.nn.Sequential(
            torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, D_OUT)
        )
        with torch.no_grad():
            for layer, w, b in ((model[0], "w1", "b1"), (model[2], "w2", "b2")):
                layer.weight.copy_(torch.from_numpy(arrays[w]))
                layer.bias.copy_(torch.from_numpy(arrays[b]))
        kwargs = {"foreach": variant == "foreach", "fused": variant == "fused"}
        if variant == "default":
            kwargs = {}
        box["model"] = model
        box["opt"] = torch.optim.Adam(model.parameters(), lr=LR, amsgrad=True, eps=EPS, **kwargs)

    def run():
        model, opt = box["model"], box["opt"]
        loss_fn = torch.nn.MSELoss(reduction="sum")
        losses = []
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        box["losses"] = losses

    variants = {}
    for n_threads in threads:
        for variant in ("default", "foreach", "fused"):
            name = f"torch {variant}, {n_threads} thr"
            variants[name] = (partial(prepare, variant, n_threads), run, lambda: None)
    return variants, box


# --- driver -----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=500, help="training steps (seed: 500)")
    p.add_argument("--reps", type=int, default=30, help="interleaved repetitions")
    p.add_argument("--settle", type=float, default=0.02, help="sleep before each run, seconds")
    p.add_argument("--quick", action="store_true", help="smoke run: 100 steps, 3 repetitions")
    p.add_argument("--json", default="docs/bench/train.json", help="where to write the results")
    p.add_argument("--png", default="docs/img/bench_train.png", help="the plot ('' skips it)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.reps = 100, min(args.reps, 3)
    if args.steps < 1 or args.reps < 1:
        p.error("--steps and --reps must be >= 1")
    return args


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.2))
    names = [r["name"] for r in rows][::-1]
    med = np.array([r["ms_per_step"]["median"] for r in rows][::-1])
    lo = med - np.array([r["ms_per_step"]["p10"] for r in rows][::-1])
    hi = np.array([r["ms_per_step"]["p90"] for r in rows][::-1]) - med
    colors = [
        "tab:gray" if n.startswith("floor") else "tab:blue" if n.startswith("jax") else "tab:orange"
        for n in names
    ]
    ax.barh(names, med, xerr=[lo, hi], color=colors, capsize=3)
    ax.set(xlabel="ms per step (median, p10-p90)", title="The seed's training: 500 AMSGrad steps")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    import torch

    arrays = seed_arrays()
    info = common.machine()
    print(f"{info['date']}  {info['cpu']} x{info['cpu_count']}  load average {info['loadavg']}")
    jv, compile_s, jbox = jax_variants(arrays, args.steps)
    threads = sorted({1, os.cpu_count()})
    tv, tbox = torch_variants(torch, arrays, args.steps, threads)
    variants = {**tv, **jv}

    # Same problem, same numbers: the JAX scan's and PyTorch's losses must agree.
    jv["jax scan"][0]()
    jv["jax scan"][1]()
    jax_losses = np.asarray(jbox["losses"])
    jv["jax scan, fused_adam"][0]()
    jv["jax scan, fused_adam"][1]()
    fused_losses = np.asarray(jbox["losses"])
    fused_agree = float(np.max(np.abs(fused_losses - jax_losses) / np.abs(jax_losses)))
    print(f"fused_adam vs adam_jax.amsgrad losses, max relative difference: {fused_agree:.2e}")
    jv["jax train loop"][0]()
    jv["jax train loop"][1]()
    loop_losses = np.asarray(jbox["losses"])
    loop_agree = float(np.max(np.abs(loop_losses - jax_losses) / np.abs(jax_losses)))
    print(f"train loop (Flax) vs jax scan losses, max relative difference: {loop_agree:.2e}")
    tv[f"torch default, {threads[-1]} thr"][0]()
    tv[f"torch default, {threads[-1]} thr"][1]()
    torch_losses = np.asarray(tbox["losses"])
    early = slice(0, min(100, args.steps))  # later the loss is near 0 and relative noise grows
    agree = float(np.max(np.abs(jax_losses - torch_losses)[early] / np.abs(torch_losses[early])))
    print(
        f"loss at step 1 / {args.steps}: torch {torch_losses[0]:.4f} / {torch_losses[-1]:.6f}, "
        f"jax {jax_losses[0]:.4f} / {jax_losses[-1]:.6f}; max relative difference over the first "
        f"100 steps {agree:.2e}"
    )

    times = {name: np.empty(args.reps) for name in variants}
    rng = random.Random(0)
    order = list(variants)
    for r in range(args.reps):
        rng.shuffle(order)
        for name in order:
            prepare, run, sync = variants[name]
            prepare()
            time.sleep(args.settle)
            t0 = time.perf_counter()
            run()
            sync()
            times[name][r] = time.perf_counter() - t0
        print(f"repetition {r + 1}/{args.reps} done", file=sys.stderr, flush=True)
    torch.set_num_threads(os.cpu_count())

    per_step = {k: v / args.steps for k, v in times.items()}
    fastest_torch = min(
        (k for k in per_step if k.startswith("torch")), key=lambda k: np.median(per_step[k])
    )
    rows = []
    for name, t in sorted(per_step.items(), key=lambda kv: np.median(kv[1])):
        row = {
            "name": name,
            "ms_per_step": {k: 1e3 * v for k, v in common.summary(t).items()},
            "fastest_torch_over_this": common.ratio(per_step[fastest_torch], t),
            "this_over_floor_fwd_bwd": common.ratio(t, per_step["floor fwd+bwd"]),
            "times_s": times[name].tolist(),
        }
        if name in compile_s:
            row["compile_s"] = compile_s[name]
        rows.append(row)
    gflops = FLOP_PER_STEP / np.median(per_step["floor fwd+bwd"]) / 1e9

    print(
        f"\n{'variant':>26} {'ms/step':>8} {'p10-p90':>15} {'torch*/this':>11} "
        f"{'this/floor':>10} {'compile':>8}"
    )
    for r in rows:
        m = r["ms_per_step"]
        c = f"{r['compile_s']:.2f} s" if "compile_s" in r else ""
        print(
            f"{r['name']:>26} {m['median']:8.3f} {m['p10']:7.3f}-{m['p90']:<7.3f} "
            f"{r['fastest_torch_over_this']['median']:11.2f} "
            f"{r['this_over_floor_fwd_bwd']['median']:10.2f} {c:>8}"
        )
    print(f"torch* = fastest PyTorch variant: {fastest_torch}")
    print(f"floor fwd+bwd: {FLOP_PER_STEP / 1e6:.1f} MFLOP/step at {gflops:.0f} GFLOP/s")

    info["loadavg_end"] = list(os.getloadavg())
    result = {
        "machine": info,
        "settings": {
            "steps": args.steps,
            "reps": args.reps,
            "settle_s": args.settle,
            "lr": LR,
            "eps": EPS,
            "torch_threads": threads,
        },
        "losses_max_rel_diff_first_100_steps_jax_scan_vs_torch": agree,
        "losses_max_rel_diff_fused_adam_vs_jax_scan": fused_agree,
        "losses_max_rel_diff_train_loop_vs_jax_scan": loop_agree,
        "fastest_torch": fastest_torch,
        "flop_per_step": FLOP_PER_STEP,
        "floor_gflops": gflops,
        "rows": rows,
    }
    common.save(args, result, lambda path: plot(rows, path))
    return result


if __name__ == "__main__":
    main()
