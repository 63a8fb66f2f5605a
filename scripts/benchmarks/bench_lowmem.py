"""Memory of low-memory Adam: optimizer-state bytes per param, measured from the state's arrays.

For each configuration (Adam and AMSGrad with float32 or 8-bit block-quantized moments, 16-bit
params with each rounding), ``tx.init(params)`` builds the state and the bytes of every array in it
(moments, codes, scales, error buffers, counts, keys) are summed and divided by the number of
params: nothing is computed from a formula. Two param trees:

- ``lm``: the lm task's transformer (``adam_jax.training.tasks.lm``), 875,264 params in 53 arrays,
  most of them 128-wide matrices (a row of 128 is one block of 128: blocks never cross rows);
- ``tree 1e7``: the GPT-like tree of the other benchmarks (``common.transformer_shapes``), 148
  arrays, 1.0e7 params, rows of 256 to 1024.

It also compiles one donated step on the 1e7 tree and on one leaf of 1e7 and reads its memory
analysis: the temporaries the step holds besides its arguments (the quantized step runs over
chunks of whole blocks, ``adam_jax._chunked``), and its peak.
And it plots the two dynamic code maps (``docs/img/lowmem_code_map.png``).

    python -m scripts.benchmarks.bench_lowmem     # writes docs/bench/lowmem_memory.json
"""

import argparse
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from adam_jax._quantize import QuantizedArray, code_map
from adam_jax.training.tasks import lm
from scripts.benchmarks import common

ACCEPTANCE = {"adam": 2.1, "amsgrad": 3.1}  # the 8-bit state's bytes per param, at most
LR = 1e-3


def configurations() -> list[dict]:
    """Each configuration: its name, the algorithm, the params' dtype and the optimizer."""
    eight_bit = adam_jax.BlockQuantization()

    def config(name, algo, param_dtype, tx, quantized=False):
        return dict(name=name, algo=algo, param_dtype=param_dtype, tx=tx, eight_bit=quantized)

    f32, bf16 = jnp.float32, jnp.bfloat16
    rows = []
    for algo, factory in (("adam", adam_jax.adam), ("amsgrad", adam_jax.amsgrad)):
        rows.append(config(f"{algo}, float32 state", algo, f32, factory(LR)))
        rows.append(
            config(f"{algo}, 8-bit state", algo, f32, factory(LR, quantized_state=eight_bit), True)
        )
    stochastic = adam_jax.adam(LR, param_rounding="stochastic", rounding_seed=0)
    compensated = adam_jax.adam(LR, param_rounding="compensated")
    both = adam_jax.adam(LR, quantized_state=eight_bit, param_rounding="compensated")
    return rows + [
        config("adam, bf16 params", "adam", bf16, adam_jax.adam(LR)),
        config("adam, bf16 params, stochastic rounding", "adam", bf16, stochastic),
        config("adam, bf16 params, compensated", "adam", bf16, compensated),
        config("adam, 8-bit state, bf16 params, compensated", "adam", bf16, both),
    ]


def lm_params(dtype) -> list[jax.Array]:
    """The lm task's initial params (GPT-2 init, seed 0), stored in ``dtype``."""
    _, params = lm.init_lm("flax", 0, {"param_dtype": dtype, "dtype": jnp.float32})
    return jax.tree.leaves(params)


def tree_params(dtype) -> list[jax.Array]:
    """The 1e7-param GPT-like tree, standard normal."""
    rng = np.random.default_rng(0)
    return [
        jnp.asarray(rng.standard_normal(s, dtype=np.float32), dtype)
        for s in common.transformer_shapes()
    ]


def one_leaf_params(dtype) -> list[jax.Array]:
    """One 1-D leaf of 1e7 params, standard normal (its last chunk is ragged)."""
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.standard_normal(10_000_000, dtype=np.float32), dtype)]


def state_breakdown(state, n_params: int) -> dict[str, float]:
    """Bytes per param of every array in ``state``, in total and by role.

    Roles: ``codes`` and ``scales`` of quantized moments; ``full`` for other arrays of at least
    one dimension (float32 moments of small leaves, error buffers); ``scalars`` (step counts,
    rounding keys: 0-d arrays).
    """
    parts = {"codes": 0, "scales": 0, "full": 0, "scalars": 0}
    is_quantized = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
    for leaf in jax.tree.leaves(state, is_leaf=is_quantized):
        if is_quantized(leaf):
            parts["codes"] += leaf.codes.nbytes
            parts["scales"] += leaf.scales.nbytes
        elif leaf.ndim == 0:
            parts["scalars"] += leaf.nbytes
        else:
            parts["full"] += leaf.nbytes
    total = sum(parts.values())
    return {"total": total / n_params, **{k: v / n_params for k, v in parts.items()}}


def step_memory(tx, params) -> dict:
    """The donated step's memory analysis: temporaries, and the peak over its arguments."""
    grads = [jnp.ones_like(p) for p in params]

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = step.lower(params, tx.init(params), grads).compile()
    ma = compiled.memory_analysis()
    peak = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
    peak += ma.temp_size_in_bytes
    n = sum(p.size for p in params)
    return {
        "argument_bytes_per_param": ma.argument_size_in_bytes / n,
        "temp_bytes_per_param": ma.temp_size_in_bytes / n,
        "alias_bytes_per_param": ma.alias_size_in_bytes / n,
        "peak_bytes_per_param": peak / n,
    }


def plot_code_maps(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, signed in zip(axes, (True, False), strict=True):
        values = code_map(signed).astype(np.float64)
        ax.plot(np.arange(256), values, ".", ms=3)
        ax.set(
            xlabel="code",
            ylabel="value (times the block's absmax)",
            title=f"{'signed (m)' if signed else 'unsigned (v, AMSGrad max)'}",
        )
        ax.grid(True, alpha=0.3)
        inset = ax.inset_axes([0.55, 0.1, 0.4, 0.4] if signed else [0.1, 0.5, 0.4, 0.4])
        positive = values[values > 0]
        inset.semilogy(np.arange(positive.size), positive, ".", ms=2)
        inset.set_title("|values| > 0, log scale", fontsize=7)
        inset.tick_params(labelsize=6)
    fig.suptitle("The dynamic 8-bit code maps of Dettmers et al. (2022)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", default="docs/bench/lowmem_memory.json", help="results ('' skips)")
    p.add_argument("--png", default="docs/img/lowmem_code_map.png", help="code maps ('' skips)")
    p.add_argument("--no-step", action="store_true", help="skip the compiled step's analysis")
    args = p.parse_args(argv)
    info = common.machine()
    print(f"{info['date']}  JAX {jax.__version__} on {jax.devices()[0]}")
    trees = {"lm": lm_params, "tree 1e7": tree_params}
    rows = []
    head = f"{'params':>9} {'configuration':>44} {'B/param':>8} {'codes':>6} {'scales':>6} "
    head += f"{'full':>6} {'+params':>8}  acceptance"
    print(head)
    for tree_name, make_params in trees.items():
        for config in configurations():
            params = make_params(config["param_dtype"])
            n = sum(x.size for x in params)
            state = config["tx"].init(params)
            b = state_breakdown(state, n)
            param_bytes = sum(x.nbytes for x in params) / n
            row = {
                "params": tree_name,
                "n_params": n,
                "arrays": len(params),
                "configuration": config["name"],
                "algo": config["algo"],
                "param_dtype": jnp.dtype(config["param_dtype"]).name,
                "state_bytes_per_param": b,
                "params_plus_state_bytes_per_param": param_bytes + b["total"],
            }
            verdict = ""
            if config["eight_bit"]:
                bound = ACCEPTANCE[config["algo"]]
                row["acceptance"] = {"at_most": bound, "met": b["total"] <= bound}
                verdict = f"<= {bound}: {'met' if b['total'] <= bound else 'NOT met'}"
            rows.append(row)
            print(
                f"{tree_name:>9} {config['name']:>44} {b['total']:8.3f} {b['codes']:6.3f} "
                f"{b['scales']:6.3f} {b['full']:6.3f} "
                f"{row['params_plus_state_bytes_per_param']:8.3f}  {verdict}"
            )
    steps = []
    step_params = {"tree 1e7": tree_params, "one leaf of 1e7": one_leaf_params}
    for params_name, make_step_params in step_params.items() if not args.no_step else ():
        print(f"\ndonated step on the {params_name}, float32 params: bytes per param")
        for config in configurations()[:4]:
            m = step_memory(config["tx"], make_step_params(jnp.float32))
            steps.append({"params": params_name, "configuration": config["name"], **m})
            print(
                f"  {config['name']:28s} arguments {m['argument_bytes_per_param']:6.3f}  "
                f"temporaries {m['temp_bytes_per_param']:6.3f}  "
                f"peak {m['peak_bytes_per_param']:6.3f}"
            )
    result = {"machine": info, "state": rows, "step": steps}
    if args.json:
        common.write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.png:
        plot_code_maps(args.png)
        print(f"wrote {args.png}")
    return result


if __name__ == "__main__":
    main()
