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
before each step, all in ``--dtype``.
"""

import argparse
import sys

import numpy as np
import torch

N, D_IN, HIDDEN, D_OUT = 64, 1000, 100, 10  # batch, input, hidden, output sizes


def run(seed: int = 0, steps: int = 500, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Runs the seed's program; returns its initial weights, data and losses.

    Args:
      seed: ``torch.manual_seed`` of the data and the weights.
      steps: optimizer steps (the seed: 500).
      dtype: ``"float32"`` (the seed's) or ``"float64"``.

    Returns:
      The arrays saved by ``main``, NumPy in ``dtype``.
    """
    torch.manual_seed(seed)
    x = torch.randn(N, D_IN)
    y = torch.randn(N, D_OUT)
    model = torch.nn.Sequential(
        torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, D_OUT)
    )
    tdtype = getattr(torch, dtype)
    model, x, y = model.to(tdtype), x.to(tdtype), y.to(tdtype)
    saved = {"x": x, "y": y, "w1": model[0].weight, "b1": model[0].bias}
    saved |= {"w2": model[2].weight, "b2": model[2].bias}
    saved = {k: v.detach().numpy().copy() for k, v in saved.items()}

    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True, eps=1e-8)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    saved["losses"] = np.asarray(losses, dtype)
    return saved


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
    saved = run(args.seed, args.steps, args.dtype)
    if not args.quiet:
        for t, loss in enumerate(saved["losses"]):
            print(t, float(loss))
    np.savez(args.out, **saved)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
