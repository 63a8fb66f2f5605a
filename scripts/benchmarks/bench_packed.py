"""Benchmark the packed layout (``PackedLayout``): one buffer per dtype instead of a tree.

(a) The 148-array GPT-like tree of bench_update.py (1.0e7 fp32 params), one fused step
(``adam_jax.fused_adam``, jitted, params and state donated) on: the buffers of
``PackedLayout`` (``packed``), the tree itself (``tree``), one flat array of the same size
(``flat``); and ``torch.optim.Adam(fused=True)`` on the tree's 148 tensors and on one tensor.
Adam and AMSGrad, interleaved (``common.interleaved``), ratios per repetition, medians with
the 10th-90th percentiles.

(b) A tree of many small params (``--leaves``, 10,000 by default: embeddings, norms,
biases): the compile time (trace, lower and compile of the jitted step, each once, in
alternating order) and the per-step time of ``adam_jax.adam`` and ``optax.adam``, on the
tree and packed (plus ``fused_adam`` packed).

    python -m scripts.benchmarks.bench_packed                 # writes docs/bench/packed.json
    python -m scripts.benchmarks.bench_packed --quick --json /tmp/p.json   # smoke run
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from adam_jax import PackedLayout
from scripts.benchmarks import common

LR = 1e-3
SMALL_SHAPES = ((64,), (16, 16), (8,), (32, 4))  # a norm, a tiny matrix, a bias, an embedding


def fused_step(fused, params, grads):
    """A donated, jitted fused step on ``params`` (a tree): ``(step, sync)``."""
    state = fused.init(params)
    step = jax.jit(fused.step, donate_argnums=(0, 2))
    box = [params, state]

    def run():
        box[0], box[1] = step(box[0], grads, box[1])

    return run, lambda: jax.block_until_ready(box)


def optax_step(tx, params, grads):
    """A donated, jitted ``tx`` step plus ``apply_updates``: ``(step, sync), compile_s``."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    compile_s = time.perf_counter() - t0
    box = [params, state]

    def run():
        box[0], box[1] = compiled(box[0], box[1], grads)

    return (run, lambda: jax.block_until_ready(box)), compile_s


def fused_compile_s(fused, params, grads) -> float:
    """Seconds to trace, lower and compile one fused step."""
    t0 = time.perf_counter()
    jax.jit(fused.step, donate_argnums=(0, 2)).lower(params, grads, fused.init(params)).compile()
    return time.perf_counter() - t0


def torch_fused_step(torch, shapes, amsgrad):
    """``torch.optim.Adam(fused=True)`` on tensors of ``shapes``: ``(step, sync)``."""
    rng = np.random.default_rng(0)
    params = []
    for shape in shapes:
        p = torch.zeros(shape, dtype=torch.float32, requires_grad=True)
        p.grad = torch.as_tensor(rng.standard_normal(shape, dtype=np.float32))
        params.append(p)
    optimizer = torch.optim.Adam(params, lr=LR, amsgrad=amsgrad, fused=True)
    return optimizer.step, lambda: None


def timed(impls, args):
    """Warm every implementation, size its batch, then time all of them interleaved."""
    calls = {}
    for key, (step, sync) in impls.items():
        for _ in range(3):
            step()
            sync()
        once = common.interleaved({key: (step, sync)}, reps=3, settle_s=0)[key].min()
        calls[key] = common.calls_for(once, budget_s=args.budget)
    return common.interleaved(impls, reps=args.reps, calls=calls, settle_s=args.settle), calls


# --- (a) the 148-array tree -----------------------------------------------------------------


def bench_tree(args, torch):
    shapes = common.transformer_shapes(**({"width": 64, "layers": 4} if args.quick else {}))
    n = int(sum(np.prod(s) for s in shapes))
    rng = np.random.default_rng(0)
    grads_tree = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    layout = PackedLayout.from_params(grads_tree)
    grads_packed = layout.pack(grads_tree)
    grads_flat = jnp.asarray(rng.standard_normal(n, dtype=np.float32))
    impls = {}
    for algo in ("adam", "amsgrad"):
        fused = adam_jax.fused_adam(LR, amsgrad=algo == "amsgrad")
        tree = [jnp.zeros(s, jnp.float32) for s in shapes]
        impls[(algo, "packed")] = fused_step(fused, layout.pack(tree), grads_packed)
        impls[(algo, "tree")] = fused_step(fused, tree, grads_tree)
        impls[(algo, "flat")] = fused_step(fused, jnp.zeros(n, jnp.float32), grads_flat)
        if torch is not None:
            impls[(algo, "torch fused")] = torch_fused_step(torch, shapes, algo == "amsgrad")
            impls[(algo, "torch fused, one tensor")] = torch_fused_step(
                torch, [(n,)], algo == "amsgrad"
            )
    times, calls = timed(impls, args)
    rows = []
    for algo in ("adam", "amsgrad"):
        group = {k[1]: v for k, v in times.items() if k[0] == algo}
        for name, t in group.items():
            rows.append(
                {
                    "algo": algo,
                    "impl": name,
                    "calls": calls[(algo, name)],
                    "time_s": common.summary(t),
                    "ratio_to": {
                        ref: common.ratio(t, group[ref])
                        for ref in ("flat", "tree", "torch fused")
                        if ref in group and ref != name
                    },
                    "times_s": t.tolist(),
                }
            )
    return {"arrays": len(shapes), "params": n, "rows": rows}


# --- (b) many small params ------------------------------------------------------------------


def bench_many_leaves(args):
    shapes = [SMALL_SHAPES[i % len(SMALL_SHAPES)] for i in range(args.leaves)]
    rng = np.random.default_rng(1)
    grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    layout = PackedLayout.from_params(grads)
    grads_packed = layout.pack(grads)
    params = lambda: [jnp.zeros(s, jnp.float32) for s in shapes]  # noqa: E731
    optimizers = {"adam_jax": adam_jax.adam(LR), "optax": optax.adam(LR)}
    impls, compile_s = {}, {}
    # Alternate the order so that a burst of load does not favour one optimizer.
    for form in ("tree", "packed"):
        for name in sorted(optimizers, reverse=form == "packed"):
            p, g = (params(), grads) if form == "tree" else (layout.pack(params()), grads_packed)
            impls[(name, form)], compile_s[(name, form)] = optax_step(optimizers[name], p, g)
            print(f"  compiled {name} {form}: {compile_s[(name, form)]:.2f} s", flush=True)
    if adam_jax.fused_available():
        fused = adam_jax.fused_adam(LR)
        buffers = layout.pack(params())
        compile_s[("fused_adam", "packed")] = fused_compile_s(fused, buffers, grads_packed)
        impls[("fused_adam", "packed")] = fused_step(fused, buffers, grads_packed)
    times, calls = timed(impls, args)
    rows = []
    for key, t in times.items():
        same_form = {k[0]: v for k, v in times.items() if k[1] == key[1]}
        rows.append(
            {
                "impl": key[0],
                "form": key[1],
                "compile_s": compile_s[key],
                "calls": calls[key],
                "time_s": common.summary(t),
                "ratio_to": {
                    **({"optax": common.ratio(t, same_form["optax"])} if key[0] != "optax" else {}),
                    **(
                        {"same, tree": common.ratio(t, times[(key[0], "tree")])}
                        if key[1] == "packed" and (key[0], "tree") in times
                        else {}
                    ),
                },
                "times_s": t.tolist(),
            }
        )
    return {
        "leaves": len(shapes),
        "params": int(sum(np.prod(s) for s in shapes)),
        "shapes": [list(s) for s in SMALL_SHAPES],
        "rows": rows,
    }


def print_rows(title, rows, columns):
    print(title)
    for r in rows:
        t = r["time_s"]
        spread = f"[{common.fmt_time(t['p10'])}, {common.fmt_time(t['p90'])}]"
        ratios = "  ".join(
            f"/{ref} {r['ratio_to'][ref]['median']:.2f} "
            f"[{r['ratio_to'][ref]['p10']:.2f}, {r['ratio_to'][ref]['p90']:.2f}]"
            for ref in columns
            if ref in r["ratio_to"]
        )
        label = " ".join(str(r[k]) for k in ("algo", "impl", "form") if k in r)
        extra = f"  compile {r['compile_s']:.2f} s" if "compile_s" in r else ""
        print(f"  {label:34s} {common.fmt_time(t['median']):>10} {spread:>22}  {ratios}{extra}")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=30, help="interleaved repetitions (>= 30)")
    p.add_argument("--leaves", type=int, default=10_000, help="leaves of the small-param tree")
    p.add_argument("--budget", type=float, default=0.02, help="seconds of calls per turn")
    p.add_argument("--settle", type=float, default=0.01, help="sleep before each turn, seconds")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument(
        "--torch-threads", type=int, default=os.cpu_count(), help="torch.set_num_threads"
    )
    p.add_argument("--no-tree", action="store_true", help="skip (a), the 148-array tree")
    p.add_argument("--quick", action="store_true", help="smoke run: small trees, 5 repetitions")
    p.add_argument("--json", default="docs/bench/packed.json", help="where to write the results")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.leaves = min(args.reps, 5), min(args.leaves, 200)
    if args.reps < 1 or args.leaves < 1:
        p.error(f"--reps and --leaves must be >= 1, got {args.reps} and {args.leaves}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not adam_jax.fused_available() or jax.default_backend() != "cpu":
        raise SystemExit("bench_packed needs fused_adam's kernel and JAX on the CPU")
    torch = None
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.torch_threads)
    info = common.machine()
    print(f"{info['date']}  {info['cpu']} x{info['cpu_count']}  load {info['loadavg']}")
    settings = {"reps": args.reps, "budget_s": args.budget, "settle_s": args.settle, "lr": LR}
    result = {"machine": info, "settings": {**settings, "torch_threads": args.torch_threads}}
    if not args.no_tree:
        result["tree"] = bench_tree(args, torch)
        tree = result["tree"]
        print_rows(
            f"(a) fused step, {tree['arrays']} arrays, {tree['params']:.2e} params",
            tree["rows"],
            ("flat", "tree", "torch fused"),
        )
    result["many_leaves"] = bench_many_leaves(args)
    many = result["many_leaves"]
    print_rows(
        f"(b) {many['leaves']} leaves, {many['params']:.2e} params: step time, compile time",
        many["rows"],
        ("optax", "same, tree"),
    )
    info["loadavg_end"] = list(os.getloadavg())
    common.save(args, result)
    return result


if __name__ == "__main__":
    main()
