"""The seed's PyTorch program, seeded, saving its weights, data and losses.

The seed trains a 1000 -> 100 -> ReLU -> 10 MLP on 64 random inputs and
targets with ``MSELoss(reduction="sum")`` and ``torch.optim.Adam(lr=1e-4,
amsgrad=True, eps=1e-8)`` for 500 steps, printing the loss before each step.
This is that program with a fixed seed (the seed's ``amsgrad=true`` typo
fixed), and a ``--dtype`` flag: the weights and data are drawn in float32 as
in the seed, then cast, so both dtypes train the same problem.

    python scripts/seed_pytorch.py --out seed_torch.npz
    python scripts/train.py --init-from seed_torch.npz   # the same run in JAX

The ``.npz`` holds ``x`` (64, 1000), ``y`` (64, 10), the initial ``w1``
(100, 1000), ``b1`` (100,), ``w2`` (10, 100), ``b2`` (10,) in
``torch.nn.Linear``'s (out, in) layout, and ``losses`` (steps,), the loss
before each step, all in ``--dtype``. The program itself is
``adam_jax.training.parity.seed_pytorch``, which the parity tests run too.
"""

import argparse
import sys

import numpy as np

from adam_jax.training.parity import seed_pytorch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="seed_torch.npz", help="output .npz path")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps (seed: 500)")
    p.add_argument("--quiet", action="store_true", help="do not print the losses")
    args = p.parse_args(argv)
    if args.steps <= 0:
        p.error(f"--steps must be a positive integer, got {args.steps}")
    saved = seed_pytorch(args.seed, args.steps, args.dtype)
    if not args.quiet:
        for t, loss in enumerate(saved["losses"]):
            print(t, float(loss))
    np.savez(args.out, **saved)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
