"""Memory of an Adam step: optimizer-state bytes per param, and what one compiled step holds.

1. State bytes per param (the step count excluded): adam_jax in fp32, with 16-bit moments
   (``mu_dtype``/``nu_dtype``) and with bfloat16 params; optax; torch.optim.Adam after one step.
2. The compiled step's memory analysis (``compiled.memory_analysis()``): arguments, outputs,
   outputs aliased to donated arguments, temporaries, and the peak they imply
   (arguments + outputs - aliased + temporaries), with and without donating params and state.
   With donation the new params and state are written over the old ones: no second copy.
3. The kernels of the compiled step that touch arrays and the bytes they stream per param
   (each kernel reading its operands and writing its results once): 28 B/param would be one
   pass over params, gradients and moments; AMSGrad 36.

    python -m scripts.benchmarks.bench_memory                   # writes docs/bench/memory.json
    XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion \\
        python -m scripts.benchmarks.bench_memory --json /tmp/memory_mof.json
"""

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from scripts.benchmarks import common


def optimizers():
    return {
        "adam_jax.adam": adam_jax.adam(1e-3),
        "adam_jax.amsgrad": adam_jax.amsgrad(1e-3),
        "optax.adam": optax.adam(1e-3),
        "optax.amsgrad": optax.amsgrad(1e-3),
    }


def state_bytes_per_param(torch) -> list[dict]:
    """Bytes of optimizer state per param for several configurations."""
    n = 1000
    configs = [
        ("adam_jax.adam", jnp.float32, adam_jax.adam(1e-3)),
        ("adam_jax.amsgrad", jnp.float32, adam_jax.amsgrad(1e-3)),
        ("adam_jax.adam(mu_dtype=bf16)", jnp.float32, adam_jax.adam(1e-3, mu_dtype=jnp.bfloat16)),
        (
            "adam_jax.adam(mu_dtype=nu_dtype=bf16)",
            jnp.float32,
            adam_jax.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
        ),
        (
            "adam_jax.amsgrad(mu_dtype=nu_dtype=bf16)",
            jnp.float32,
            adam_jax.amsgrad(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
        ),
        ("adam_jax.adam, bf16 params", jnp.bfloat16, adam_jax.adam(1e-3)),
        ("optax.adam", jnp.float32, optax.adam(1e-3)),
        ("optax.amsgrad", jnp.float32, optax.amsgrad(1e-3)),
    ]
    rows = []
    for name, dtype, tx in configs:
        state = tx.init(jnp.zeros(n, dtype))
        size = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0)
        rows.append({"optimizer": name, "param_dtype": jnp.dtype(dtype).name, "bytes": size / n})
    if torch is not None:
        for ams in (False, True):
            p = torch.zeros(n, requires_grad=True)
            p.grad = torch.ones(n)
            opt = torch.optim.Adam([p], amsgrad=ams)
            opt.step()
            size = sum(t.nbytes for t in opt.state[p].values() if t.dim() > 0)
            name = f"torch.optim.Adam(amsgrad={ams})"
            rows.append({"optimizer": name, "param_dtype": "float32", "bytes": size / n})
    return rows


def step_analysis(tx, shapes, donate: bool) -> dict:
    """Memory analysis and HLO traffic of one jitted step on fp32 params of ``shapes``."""
    params = [jnp.zeros(s, jnp.float32) for s in shapes]
    grads = [jnp.ones(s, jnp.float32) for s in shapes]
    state = tx.init(params)

    @partial(jax.jit, donate_argnums=(0, 1) if donate else ())
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = step.lower(params, state, grads).compile()
    ma = compiled.memory_analysis()
    n = sum(int(np.prod(s)) for s in shapes)
    arg, out = ma.argument_size_in_bytes, ma.output_size_in_bytes
    alias, temp = ma.alias_size_in_bytes, ma.temp_size_in_bytes
    traffic = common.hlo_traffic(compiled.as_text())
    return {
        "params": n,
        "arrays": len(shapes),
        "donate": donate,
        "argument_bytes": arg,
        "output_bytes": out,
        "alias_bytes": alias,
        "temp_bytes": temp,
        "peak_bytes": arg + out - alias + temp,
        "peak_over_arguments": (arg + out - alias + temp) / arg,
        "kernels": traffic["kernels"],
        "kernels_per_array": traffic["kernels"] / len(shapes),
        "hlo_bytes_per_param": traffic["bytes"] / n,
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=float, default=1e7, help="params in the flat case")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--json", default="docs/bench/memory.json", help="where to write the results")
    args = p.parse_args(argv)
    torch = None
    if not args.no_torch:
        import torch
    info = common.machine()
    print(f"{info['date']}  JAX {jax.__version__} on {jax.devices()[0]}")
    print(f"XLA_FLAGS={info['xla_flags']!r}")

    state_rows = state_bytes_per_param(torch)
    print("\noptimizer-state bytes per param")
    for r in state_rows:
        print(f"  {r['optimizer']:42s} {r['param_dtype']:9s} {r['bytes']:5.1f}")

    cases = {f"flat {args.size:.0e}": [(int(args.size),)], "tree": common.transformer_shapes()}
    step_rows = []
    print(
        f"\n{'case':>10} {'optimizer':>17} {'donate':>6} {'args MB':>8} {'out MB':>7} "
        f"{'alias MB':>8} {'temp B':>7} {'peak/args':>9} {'kern/arr':>8} {'HLO B/param':>11}"
    )
    for case, shapes in cases.items():
        for name, tx in optimizers().items():
            for donate in (True, False):
                r = {"case": case, "optimizer": name, **step_analysis(tx, shapes, donate)}
                step_rows.append(r)
                print(
                    f"{case:>10} {name:>17} {str(donate):>6} {r['argument_bytes'] / 1e6:8.1f} "
                    f"{r['output_bytes'] / 1e6:7.1f} {r['alias_bytes'] / 1e6:8.1f} "
                    f"{r['temp_bytes']:7d} {r['peak_over_arguments']:9.3f} "
                    f"{r['kernels_per_array']:8.2f} {r['hlo_bytes_per_param']:11.2f}"
                )
    result = {"machine": info, "state_bytes_per_param": state_rows, "step": step_rows}
    common.save(args, result)
    return result


if __name__ == "__main__":
    main()
