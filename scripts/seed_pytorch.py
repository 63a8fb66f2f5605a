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

With ``--save-at K`` the run is also written after K steps as a PyTorch
checkpoint, ``torch.save({"model": ..., "optimizer": ..., "x": ..., "y": ...})``
to ``--pt``, which ``train.py --init-from`` continues:

    python scripts/seed_pytorch.py --dtype float64 --save-at 250 --pt run.pt
    python scripts/train.py --init-from run.pt --steps 500   # steps 251 to 500 in JAX
"""

import argparse
import sys

import numpy as np

from adam_jax.training.parity import SEED_EPS, SEED_LR, seed_pytorch, seed_torch_steps


def save_torch_run(saved: dict, steps: int, path: str) -> None:
    """Trains the seed's model from ``saved``'s initial weights and data (as
    :func:`~adam_jax.training.parity.seed_pytorch` does) for ``steps`` steps; writes the
    model's and the optimizer's state dicts, and ``x`` and ``y``, with ``torch.save``."""
    import torch

    x, y = torch.from_numpy(saved["x"]), torch.from_numpy(saved["y"])
    (d_out, hidden), d_in = saved["w2"].shape, x.shape[1]
    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d_out)
    ).to(x.dtype)
    with torch.no_grad():
        for layer, (w, b) in ((model[0], ("w1", "b1")), (model[2], ("w2", "b2"))):
            layer.weight.copy_(torch.from_numpy(saved[w]))
            layer.bias.copy_(torch.from_numpy(saved[b]))
    optimizer = torch.optim.Adam(model.parameters(), lr=SEED_LR, amsgrad=True, eps=SEED_EPS)
    seed_torch_steps(model, optimizer, x, y, steps)
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "x": x, "y": y}, path
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="seed_torch.npz", help="output .npz path")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps (seed: 500)")
    p.add_argument("--quiet", action="store_true", help="do not print the losses")
    p.add_argument("--save-at", type=int, metavar="K", help="write the run after K steps to --pt")
    p.add_argument("--pt", default="seed_torch.pt", help="the --save-at checkpoint's path")
    args = p.parse_args(argv)
    if args.steps <= 0:
        p.error(f"--steps must be a positive integer, got {args.steps}")
    if args.save_at is not None and not 0 <= args.save_at <= args.steps:
        p.error(f"--save-at must be in [0, --steps {args.steps}], got {args.save_at}")
    saved = seed_pytorch(args.seed, args.steps, args.dtype)
    if args.save_at is not None:
        save_torch_run(saved, args.save_at, args.pt)
        print(f"wrote {args.pt} (step {args.save_at})")
    if not args.quiet:
        for t, loss in enumerate(saved["losses"]):
            print(t, float(loss))
    np.savez(args.out, **saved)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
