"""Train the seed's MLP with adam_jax under jax.jit.

The seed is a PyTorch program: a 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares
loss on 64 random inputs and targets, ``torch.optim.Adam(lr=1e-4,
amsgrad=True, eps=1e-8)``, 500 steps, printing the loss of every step. This is
its JAX counterpart:

    python scripts/train.py                      # the seed's run
    python scripts/train.py --optimizer adam --convention optax --steps 100
    python scripts/train.py --init-from seed_torch.npz   # PyTorch's weights and data
    python scripts/train.py --out runs/seed      # also writes runs/seed/metrics.jsonl
"""

import argparse
import json
import math
import os
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import adam_jax

# --- the seed's problem ------------------------------------------------------
N, D_IN, HIDDEN, D_OUT = 64, 1000, 100, 10  # batch, input, hidden, output sizes
OPTIMIZERS = {"adam": adam_jax.adam, "amsgrad": adam_jax.amsgrad, "adamw": adam_jax.adamw}


def torch_uniform(fan_in: int):
    """``torch.nn.Linear``'s default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MLP(nnx.Module):
    """Linear -> ReLU -> Linear, as the seed's ``torch.nn.Sequential``."""

    def __init__(self, d_in, hidden, d_out, *, init, dtype, rngs):
        def linear(fan_in, fan_out):
            kwargs = {"param_dtype": dtype, "dtype": dtype, "rngs": rngs}
            if init == "torch":
                kwargs |= {"kernel_init": torch_uniform(fan_in), "bias_init": torch_uniform(fan_in)}
            return nnx.Linear(fan_in, fan_out, **kwargs)

        self.hidden = linear(d_in, hidden)
        self.out = linear(hidden, d_out)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def sum_of_squares(pred, target):
    """``torch.nn.MSELoss(reduction='sum')``."""
    return jnp.sum((pred - target) ** 2)


def seed_problem(args):
    """The model and its data: from ``--init-from`` or drawn with ``--seed``."""
    dtype = jnp.dtype(args.dtype)
    key_model, key_x, key_y = jax.random.split(jax.random.key(args.seed), 3)
    model = MLP(D_IN, HIDDEN, D_OUT, init=args.init, dtype=dtype, rngs=nnx.Rngs(key_model))
    if args.init_from is None:
        x = jax.random.normal(key_x, (N, D_IN), dtype)
        y = jax.random.normal(key_y, (N, D_OUT), dtype)
        return model, x, y
    saved = np.load(args.init_from)
    # torch.nn.Linear stores weights as (out, in); Flax kernels are (in, out).
    model.hidden.kernel.value = jnp.asarray(saved["w1"].T, dtype)
    model.hidden.bias.value = jnp.asarray(saved["b1"], dtype)
    model.out.kernel.value = jnp.asarray(saved["w2"].T, dtype)
    model.out.bias.value = jnp.asarray(saved["b2"], dtype)
    return model, jnp.asarray(saved["x"], dtype), jnp.asarray(saved["y"], dtype)


def make_optimizer(args) -> optax.GradientTransformation:
    kwargs = {"eps": args.eps, "convention": args.convention}
    if args.weight_decay is not None:
        kwargs["weight_decay"] = args.weight_decay
    return OPTIMIZERS[args.optimizer](args.lr, **kwargs)


def train(args) -> np.ndarray:
    """Runs ``args.steps`` steps; returns the loss before each step."""
    model, x, y = seed_problem(args)
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(args)
    opt_state = optimizer.init(params)

    def loss_fn(params):
        return sum_of_squares(nnx.merge(graphdef, params)(x), y)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @partial(jax.jit, donate_argnums=(0, 1))
    def run(params, opt_state):
        return jax.lax.scan(step, (params, opt_state), length=args.steps)

    _, losses = run(params, opt_state)
    return np.asarray(losses)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=500, help="optimizer steps (seed: 500)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (seed: 1e-4)")
    p.add_argument("--eps", type=float, default=1e-8, help="Adam's epsilon (seed: 1e-8)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="amsgrad")
    p.add_argument("--convention", choices=sorted(adam_jax.CONVENTIONS), default="pytorch")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the optimizer's")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of weights and data")
    p.add_argument("--init", choices=["torch", "flax"], default="torch", help="weight init")
    p.add_argument("--init-from", default=None, help=".npz of scripts/seed_pytorch.py")
    p.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="params and data dtype (default float32, or the --init-from file's)",
    )
    p.add_argument("--out", default=None, help="directory for metrics.jsonl")
    p.add_argument("--quiet", action="store_true", help="do not print the losses")
    args = p.parse_args(argv)
    if args.steps <= 0:
        p.error(f"--steps must be a positive integer, got {args.steps}")
    if args.dtype is None:
        args.dtype = "float32"
        if args.init_from is not None:
            args.dtype = str(np.load(args.init_from)["x"].dtype)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    losses = train(args)
    if not args.quiet:
        for t, loss in enumerate(losses):
            print(t, float(loss))
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "metrics.jsonl"), "w") as f:
            for t, loss in enumerate(losses, start=1):
                f.write(json.dumps({"step": t, "loss": float(loss)}) + "\n")
        print(f"wrote {os.path.join(args.out, 'metrics.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
