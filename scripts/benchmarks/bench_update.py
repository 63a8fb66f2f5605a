"""Benchmark one optimizer step: adam_jax against optax and torch.optim.Adam.

One step is the update plus ``optax.apply_updates``, jitted, with params and optimizer state
donated and the gradients given (PyTorch: ``optimizer.step()`` on tensors whose ``.grad`` is set,
in place). It runs for fp32 params in one flat array of each ``--sizes``, and for a
transformer-like tree of about 150 arrays and 1e7 params measured together with the 1e7 array.
Adam and AMSGrad, with

- ``adam_jax[pytorch]``, ``adam_jax[optax]``: ``adam_jax.adam`` / ``adam_jax.amsgrad`` in that
  convention;
- ``adam_jax fused``: ``adam_jax.fused_adam`` (opt-in, CPU only): one C++ loop through
  ``jax.ffi`` that updates params and moments in place, no ``apply_updates``;
- ``optax``: ``optax.adam`` / ``optax.amsgrad``;
- ``torch foreach``, ``torch fused``: ``torch.optim.Adam(foreach=True)`` / ``(fused=True)``,
  ``torch.set_num_threads(os.cpu_count())``.

Each step must read params, gradients and moments and write params and moments: 28 bytes per
fp32 param for Adam, 36 for AMSGrad. The effective bandwidth is those bytes over the time, and
its yardstick is a STREAM-style in-place ``y += a * x`` (12 bytes per element) measured in the
same rounds, in JAX (``y`` donated) and in PyTorch (``add_``); ``%axpy`` is the step's effective
bandwidth over the faster of the two. Implementations are interleaved (see ``common.py``); ratios
are per repetition, then their median is reported with the 10th-90th percentiles. A turn runs
as many steps back to back as fill ``--budget`` seconds and then waits for the last one, as a
training loop does (JAX dispatches asynchronously; PyTorch on the CPU runs synchronously); the
time is per step. Caches are warm: the turn starts with one untimed step.

    python -m scripts.benchmarks.bench_update          # full run, writes docs/bench/update.json
    python -m scripts.benchmarks.bench_update --quick  # smoke run: 2 sizes, 5 repetitions
    python -m scripts.benchmarks.bench_update --sizes 1e6,1e7,1e8,3e8 --device gpu --json gpu.json

``--lowmem`` times another row set: ``adam_jax.adam`` / ``amsgrad`` with float32 moments against
the same with 8-bit block-quantized moments (``quantized_state=adam_jax.BlockQuantization()``,
rounded to the nearest code and stochastically), interleaved in the same rounds as the axpy.
There the bytes a step must stream are measured from its arrays: read params, gradients and
state, write params and state (28 B/param in float32, about 16 with 8-bit moments); the compiled
kernels' own traffic (``common.hlo_traffic``) is reported beside it.

    python -m scripts.benchmarks.bench_update --lowmem --sizes 1e5,1e6,1e7 --reps 20 --no-torch
"""

import argparse
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from scripts.benchmarks import common

BYTES_PER_PARAM = {
    "adam": 28,
    "amsgrad": 36,
}  # fp32: read p, g, m, v (, v_max); write p, m, v (, v_max)
AXPY_BYTES = 12  # read x, y; write y
LR = 1e-3


# --- implementations: each returns a callable doing one step and waiting for it -------------


def jax_step(tx, params, grads):
    """A donated, jitted ``tx`` step on a list of arrays: ``(step, sync), compiled``."""
    state = jax.device_put(tx.init(params), params[0].device)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = step.lower(params, state, grads).compile()
    box = [params, state]

    def run():
        box[0], box[1] = step(box[0], box[1], grads)

    return (run, lambda: jax.block_until_ready(box)), compiled


def jax_fused_step(fused, params, grads):
    """A donated, jitted ``adam_jax.fused_adam`` step: ``(step, sync), compiled``."""
    state = jax.device_put(fused.init(params), params[0].device)
    step = jax.jit(fused.step, donate_argnums=(0, 2))
    compiled = step.lower(params, grads, state).compile()
    box = [params, state]

    def run():
        box[0], box[1] = step(box[0], grads, box[1])

    return (run, lambda: jax.block_until_ready(box)), compiled


def jax_axpy(n: int, device):
    """In-place ``y += 0.5 x`` with ``y`` donated: ``(step, sync)``."""
    axpy = jax.jit(lambda y, x: y + 0.5 * x, donate_argnums=0)
    box = [jax.device_put(jnp.zeros(n, jnp.float32), device)]
    x = jax.device_put(jnp.ones(n, jnp.float32), device)

    def run():
        box[0] = axpy(box[0], x)

    return run, lambda: box[0].block_until_ready()


def torch_sync(torch, device):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def torch_step(torch, grads_np, amsgrad, variant, device):
    """``torch.optim.Adam`` with ``foreach`` or ``fused``, stepping in place: ``(step, sync)``."""
    params = []
    for g in grads_np:
        p = torch.zeros(g.shape, dtype=torch.float32, device=device, requires_grad=True)
        p.grad = torch.as_tensor(g, device=device)
        params.append(p)
    opt = torch.optim.Adam(
        params, lr=LR, amsgrad=amsgrad, foreach=variant == "foreach", fused=variant == "fused"
    )
    return opt.step, torch_sync(torch, device)


def torch_axpy(torch, n, device):
    """In-place ``y.add_(x, alpha=0.5)``: ``(step, sync)``."""
    y = torch.zeros(n, device=device)
    x = torch.ones(n, device=device)
    return (lambda: y.add_(x, alpha=0.5)), torch_sync(torch, device)


def array_fusions(compiled) -> int:
    """Number of fusions in the entry computation whose result is not a scalar."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :]
    return sum(
        1
        for line in entry.splitlines()
        if " fusion(" in line and "[]" not in line.split("=")[1][:20]
    )


# --- one group of cases, measured together ---------------------------------------------------


def measure_group(cases, args, device, torch, torch_device):
    """Times every implementation of every case in ``cases`` round-robin."""
    impls, meta = {}, {}
    rng = np.random.default_rng(0)
    for label, shapes in cases:
        n = int(sum(np.prod(s) for s in shapes))
        grads_np = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
        grads = [jax.device_put(g, device) for g in grads_np]
        for algo in ("adam", "amsgrad"):
            ams = algo == "amsgrad"
            txs = {
                "adam_jax[pytorch]": adam_jax.adam(LR, amsgrad=ams, convention="pytorch"),
                "adam_jax[optax]": adam_jax.adam(LR, amsgrad=ams, convention="optax"),
                "optax": optax.amsgrad(LR) if ams else optax.adam(LR),
            }
            for name, tx in txs.items():
                params = [jax.device_put(jnp.zeros(s, jnp.float32), device) for s in shapes]
                run, compiled = jax_step(tx, params, grads)
                impls[(label, algo, name)] = run
                meta[(label, algo, name)] = {"n": n, "array_fusions": array_fusions(compiled)}
            if device.platform == "cpu":
                params = [jax.device_put(jnp.zeros(s, jnp.float32), device) for s in shapes]
                fused = adam_jax.fused_adam(LR, amsgrad=ams)
                run, compiled = jax_fused_step(fused, params, grads)
                impls[(label, algo, "adam_jax fused")] = run
                meta[(label, algo, "adam_jax fused")] = {
                    "n": n,
                    "array_fusions": array_fusions(compiled),
                }
            if torch is not None:
                for variant in ("foreach", "fused"):
                    key = (label, algo, f"torch {variant}")
                    impls[key] = torch_step(torch, grads_np, ams, variant, torch_device)
                    meta[key] = {"n": n}
        impls[(label, "axpy", "jax")] = jax_axpy(n, device)
        meta[(label, "axpy", "jax")] = {"n": n}
        if torch is not None:
            impls[(label, "axpy", "torch")] = torch_axpy(torch, n, torch_device)
            meta[(label, "axpy", "torch")] = {"n": n}
    times, calls = time_interleaved(impls, args)
    return times, meta, calls


def time_interleaved(impls, args):
    """Warms up (compiles, first touch, lazy state), sizes the batches of back-to-back calls,
    then times every implementation round-robin: ``(times, calls)``."""
    calls = {}
    for key, (step, sync) in impls.items():
        for _ in range(3):
            step()
            sync()
        once = common.interleaved({key: (step, sync)}, reps=3, settle_s=0)[key].min()
        calls[key] = common.calls_for(once, budget_s=args.budget)
    times = common.interleaved(impls, reps=args.reps, calls=calls, settle_s=args.settle)
    return times, calls


def analyse(times, meta, calls):
    """Per-implementation statistics, bandwidths and per-repetition ratios."""
    rows = []
    labels = list(dict.fromkeys(k[0] for k in times))
    for label in labels:
        axpy = {k[2]: v for k, v in times.items() if k[0] == label and k[1] == "axpy"}
        n = meta[(label, "axpy", "jax")]["n"]
        axpy_gbps = {k: AXPY_BYTES * n / np.median(v) / 1e9 for k, v in axpy.items()}
        best_axpy = max(axpy_gbps.values())
        for name, t in axpy.items():
            rows.append(
                {
                    "case": label,
                    "n": n,
                    "algo": "axpy",
                    "impl": name,
                    "calls": calls[(label, "axpy", name)],
                    "time_s": common.summary(t),
                    "gbps": axpy_gbps[name],
                    "times_s": t.tolist(),
                }
            )
        for algo in ("adam", "amsgrad"):
            group = {k[2]: v for k, v in times.items() if k[0] == label and k[1] == algo}
            for name, t in group.items():
                gbps = BYTES_PER_PARAM[algo] * n / np.median(t) / 1e9
                row = {
                    "case": label,
                    "n": n,
                    "algo": algo,
                    "impl": name,
                    "calls": calls[(label, algo, name)],
                    "time_s": common.summary(t),
                    "gbps": gbps,
                    "frac_axpy": gbps / best_axpy,
                    "ratio_to": {
                        ref: common.ratio(t, group[ref])
                        for ref in ("optax", "torch fused")
                        if ref in group and ref != name
                    },
                    "times_s": t.tolist(),
                    **{k: v for k, v in meta[(label, algo, name)].items() if k != "n"},
                }
                if algo == "amsgrad":
                    row["ratio_to"]["same impl, Adam"] = common.ratio(
                        t, times[(label, "adam", name)]
                    )
                rows.append(row)
    return rows


# --- low-memory Adam: float32 against 8-bit moments ------------------------------------------

# The moments' storage -> BlockQuantization's rounding (None: float32 moments).
STORAGES = {"float32": None, "8-bit nearest": "nearest", "8-bit stochastic": "stochastic"}


def streamed_bytes(params, state, grads) -> int:
    """Bytes a step must move, from the arrays: read params, grads, state; write params, state."""

    def size(tree) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

    return 2 * (size(params) + size(state)) + size(grads)


def measure_lowmem_group(cases, args, device, torch, torch_device):
    """Times float32 and 8-bit Adam and AMSGrad steps of every case in ``cases`` round-robin."""
    impls, meta = {}, {}
    rng = np.random.default_rng(0)
    for label, shapes in cases:
        n = int(sum(np.prod(s) for s in shapes))
        grads = [jax.device_put(rng.standard_normal(s, dtype=np.float32), device) for s in shapes]
        for algo in ("adam", "amsgrad"):
            for storage, rounding in STORAGES.items():
                options = {}
                if rounding is not None:
                    options["quantized_state"] = adam_jax.BlockQuantization(rounding=rounding)
                tx = adam_jax.adam(LR, amsgrad=algo == "amsgrad", **options)
                params = [jax.device_put(jnp.zeros(s, jnp.float32), device) for s in shapes]
                state_shapes = jax.eval_shape(tx.init, params)
                run, compiled = jax_step(tx, params, grads)
                impls[(label, algo, storage)] = run
                meta[(label, algo, storage)] = {
                    "n": n,
                    "array_fusions": array_fusions(compiled),
                    "bytes_per_param": streamed_bytes(params, state_shapes, grads) / n,
                    "hlo_bytes_per_param": common.hlo_traffic(compiled.as_text())["bytes"] / n,
                }
        impls[(label, "axpy", "jax")] = jax_axpy(n, device)
        if torch is not None:
            impls[(label, "axpy", "torch")] = torch_axpy(torch, n, torch_device)
    times, calls = time_interleaved(impls, args)
    return times, meta, calls


def analyse_lowmem(times, meta, calls):
    """Per-configuration statistics, the bandwidth floor's fraction, and 8-bit / float32."""
    rows = []
    for label in dict.fromkeys(k[0] for k in times):
        n = meta[(label, "adam", "float32")]["n"]
        axpy = {k[2]: v for k, v in times.items() if k[0] == label and k[1] == "axpy"}
        best_axpy = max(AXPY_BYTES * n / np.median(v) / 1e9 for v in axpy.values())
        for algo in ("adam", "amsgrad"):
            for storage in STORAGES:
                key = (label, algo, storage)
                t, m = times[key], meta[key]
                gbps = m["bytes_per_param"] * n / np.median(t) / 1e9
                row = {
                    "case": label,
                    "n": n,
                    "algo": algo,
                    "storage": storage,
                    "calls": calls[key],
                    "time_s": common.summary(t),
                    "time_per_param_ns": 1e9 * np.median(t) / n,
                    "gbps": gbps,
                    "axpy_gbps": best_axpy,
                    "frac_axpy": gbps / best_axpy,
                    "times_s": t.tolist(),
                    **{k: v for k, v in m.items() if k != "n"},
                }
                if storage != "float32":
                    row["ratio_to_float32"] = common.ratio(t, times[(label, algo, "float32")])
                rows.append(row)
    return rows


def print_lowmem_table(rows):
    head = (
        f"{'case':>8} {'algo':>8} {'state':>16} {'median':>10} {'p10-p90':>21} {'ns/param':>8} "
        f"{'B/param':>7} {'HLO B':>6} {'GB/s':>6} {'%axpy':>6} {'/fp32 [p10, p90]':>19}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r["time_s"]
        spread = f"{common.fmt_time(t['p10'])}-{common.fmt_time(t['p90'])}"
        ratio = r.get("ratio_to_float32")
        versus = f"{ratio['median']:.2f} [{ratio['p10']:.2f}, {ratio['p90']:.2f}]" if ratio else ""
        print(
            f"{r['case']:>8} {r['algo']:>8} {r['storage']:>16} {common.fmt_time(t['median']):>10} "
            f"{spread:>21} {r['time_per_param_ns']:8.3f} {r['bytes_per_param']:7.2f} "
            f"{r['hlo_bytes_per_param']:6.1f} {r['gbps']:6.1f} {100 * r['frac_axpy']:6.0f} "
            f"{versus:>19}"
        )


def tree_vs_flat(times, tree_label, flat_label, n_tree, n_flat):
    """Per-param time of the tree over the flat array, per repetition."""
    out = {}
    for algo in ("adam", "amsgrad"):
        for key in [k for k in times if k[0] == tree_label and k[1] == algo]:
            flat = times[(flat_label, algo, key[2])] / n_flat
            out[f"{algo} {key[2]}"] = common.ratio(times[key] / n_tree, flat)
    return out


def print_table(rows):
    head = (
        f"{'case':>10} {'algo':>8} {'impl':>18} {'median':>10} {'p10-p90':>21} {'GB/s':>6} "
        f"{'%axpy':>6} {'/optax':>6} {'/t.fused':>8} {'fus':>4}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r["time_s"]
        spread = f"{common.fmt_time(t['p10'])}-{common.fmt_time(t['p90'])}"
        ro = r.get("ratio_to", {})
        fo = f"{ro['optax']['median']:.2f}" if "optax" in ro else ""
        ft = f"{ro['torch fused']['median']:.2f}" if "torch fused" in ro else ""
        frac = f"{100 * r['frac_axpy']:.0f}" if "frac_axpy" in r else ""
        fus = str(r.get("array_fusions", ""))
        print(
            f"{r['case']:>10} {r['algo']:>8} {r['impl']:>18} {common.fmt_time(t['median']):>10} "
            f"{spread:>21} {r['gbps']:6.1f} {frac:>6} {fo:>6} {ft:>8} {fus:>4}"
        )


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = [r for r in rows if r["case"] != "tree"]
    tree = [r for r in rows if r["case"] == "tree"]
    # Stacked, so that each panel and its legend stay readable at the docs column width.
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 15))
    for ax, algo in zip(axes[:2], ("adam", "amsgrad"), strict=True):
        impls = list(dict.fromkeys(r["impl"] for r in flat if r["algo"] == algo))
        for i, impl in enumerate(impls):
            rs = [r for r in flat if r["algo"] == algo and r["impl"] == impl]
            (line,) = ax.plot([r["n"] for r in rs], [r["gbps"] for r in rs], "o-", label=impl)
            for r in tree:
                if r["algo"] == algo and r["impl"] == impl:
                    ax.plot(
                        r["n"] * (1.08 + 0.02 * i), r["gbps"], "*", ms=11, color=line.get_color()
                    )
        best = {}
        for r in flat:
            if r["algo"] == "axpy":
                best[r["n"]] = max(best.get(r["n"], 0), r["gbps"])
        ns = sorted(best)
        ax.plot(ns, [best[n] for n in ns], "k--", label="axpy (12 B/elem)")
        ax.set(
            xscale="log",
            xlabel="fp32 params",
            ylabel=f"effective GB/s ({BYTES_PER_PARAM[algo]} B/param)",
            title=f"{'Adam' if algo == 'adam' else 'AMSGrad'} step (★ = many-array tree)",
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=9)
    ax = axes[2]
    for algo, style in (("adam", "-"), ("amsgrad", "--")):
        for impl in ("adam_jax[pytorch]", "adam_jax fused"):
            rs = [r for r in flat if r["algo"] == algo and r["impl"] == impl]
            for ref in ("optax", "torch fused"):
                if rs and all(ref in r["ratio_to"] for r in rs):
                    ax.plot(
                        [r["n"] for r in rs],
                        [r["ratio_to"][ref]["median"] for r in rs],
                        ("s" if "fused" in impl else "o") + style,
                        label=f"{algo}: {impl} / {ref}",
                    )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(
        xscale="log",
        xlabel="fp32 params",
        ylabel="median per-repetition time ratio",
        title="adam_jax relative time (<1 is faster)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes", default="1e4,1e5,1e6,1e7,3e7", help="flat fp32 sizes, comma-separated"
    )
    p.add_argument("--no-tree", action="store_true", help="skip the 150-leaf transformer-like tree")
    p.add_argument(
        "--reps", type=int, default=30, help="interleaved repetitions (>= 30 for results)"
    )
    p.add_argument(
        "--budget", type=float, default=0.02, help="seconds of back-to-back calls per turn"
    )
    p.add_argument("--settle", type=float, default=0.01, help="sleep before each turn, seconds")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="JAX backend")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: sizes 1e4,1e6, small tree, 5 reps"
    )
    p.add_argument(
        "--lowmem", action="store_true", help="float32 against 8-bit moments (see above)"
    )
    p.add_argument(
        "--json",
        help="where to write the results (default docs/bench/update.json, "
        "with --lowmem docs/bench/update_lowmem.json)",
    )
    p.add_argument(
        "--png", default="docs/img/bench_update.png", help="where to write the plot ('' skips it)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.reps = "1e4,1e6", min(args.reps, 5)
    args.sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.json is None:
        args.json = "docs/bench/update_lowmem.json" if args.lowmem else "docs/bench/update.json"
    if args.lowmem:
        args.png = ""  # the table and the JSON are its results
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = jax.devices()[0] if args.device == "auto" else jax.devices(args.device)[0]
    torch, torch_device = None, "cpu"
    if not args.no_torch:
        import torch

        torch.set_num_threads(os.cpu_count())
        if device.platform == "gpu" and torch.cuda.is_available():
            torch_device = "cuda"
        elif device.platform != "cpu":
            print(f"note: JAX runs on {device.platform}, PyTorch on cpu (no CUDA in this torch)")
    info = common.machine()
    info["jax_device"] = str(device)
    info["torch_device"] = torch_device if torch is not None else None
    print(f"{info['date']}  {info['cpu']} x{info['cpu_count']}  JAX on {device}")
    print(f"load average {info['loadavg']}")

    tree_shapes = (
        common.transformer_shapes(width=64, layers=4, vocab=512, context=128)
        if args.quick
        else common.transformer_shapes()
    )
    n_tree = int(sum(np.prod(s) for s in tree_shapes))
    tree_with = min(args.sizes, key=lambda n: abs(np.log(n / n_tree)))
    all_rows, all_times, tree_ratio = [], {}, None
    for n in args.sizes:
        cases = [(f"{n:.0e}", [(n,)])]
        if not args.no_tree and n == tree_with:
            cases.append(("tree", tree_shapes))
        if args.lowmem:
            times, meta, calls = measure_lowmem_group(cases, args, device, torch, torch_device)
            rows = analyse_lowmem(times, meta, calls)
            print_lowmem_table(rows)
            all_rows += rows
            continue
        times, meta, calls = measure_group(cases, args, device, torch, torch_device)
        rows = analyse(times, meta, calls)
        print_table(rows)
        all_rows += rows
        all_times.update(times)
        if len(cases) == 2:
            tree_ratio = tree_vs_flat(times, "tree", cases[0][0], n_tree, n)
            print(f"tree ({len(tree_shapes)} arrays, {n_tree} params) / flat {n}, per param:")
            for k, v in tree_ratio.items():
                print(f"  {k:28s} {v['median']:.3f}  [{v['p10']:.3f}, {v['p90']:.3f}]")
    info["loadavg_end"] = list(os.getloadavg())
    result = {
        "machine": info,
        "settings": {
            "lowmem": args.lowmem,
            "reps": args.reps,
            "budget_s": args.budget,
            "settle_s": args.settle,
            "bytes_per_param": BYTES_PER_PARAM,
            "axpy_bytes": AXPY_BYTES,
            "lr": LR,
        },
        "tree": {
            "arrays": len(tree_shapes),
            "params": n_tree,
            "measured_with": f"{tree_with:.0e}",
            "per_param_ratio_to_flat": tree_ratio,
        },
        "rows": all_rows,
    }
    common.save(args, result, lambda path: plot(all_rows, path))
    return result


if __name__ == "__main__":
    main()
