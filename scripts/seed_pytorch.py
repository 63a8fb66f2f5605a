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
before each step, all in ``--dtype``. ``seed_pytorch`` and ``seed_torch_steps`` below are the
one definition of the seed's program: ``scripts/interop_demo.py`` and the parity tests
(``tests/parity/harness.py``) import them from here.

With ``--save-at K`` the run is also written after K steps as a PyTorch
checkpoint, ``torch.save({"model": ..., "optimizer": ..., "x": ..., "y": ...})``
to ``--pt``, which ``train.py --init-from`` continues:

    python scripts/seed_pytorch.py --dtype float64 --save-at 250 --pt run.pt
    python scripts/train.py --init-from run.pt --steps 500   # steps 251 to 500 in JAX
"""

import argparse
import sys

import numpy as np

# torch is imported inside the functions, so that the parity harness imports without it.
SEED_STEPS, SEED_LR, SEED_EPS = 500, 1e-4, 1e-8


def seed_program(seed: int = 0, dtype: str = "float32"):
    """The seed's model, data and optimizer before the first step: ``(model, optimizer, x, y)``.

    The weights and data are drawn in float32 as in the seed, then cast to ``dtype``, so both
    dtypes train the same problem.
    """
    import torch

    n, (d_in, hidden, d_out) = 64, (1000, 100, 10)
    torch.manual_seed(seed)
    x, y = torch.randn(n, d_in), torch.randn(n, d_out)
    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d_out)
    )
    tdtype = getattr(torch, dtype)
    model, x, y = model.to(tdtype), x.to(tdtype), y.to(tdtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=SEED_LR, amsgrad=True, eps=SEED_EPS)
    return model, optimizer, x, y


def seed_pytorch(seed: int = 0, steps: int = SEED_STEPS, dtype: str = "float32") -> dict:
    """Runs the seed's PyTorch program; returns its initial weights, data and losses.

    The seed trains a 1000 -> 100 -> ReLU -> 10 MLP on 64 random inputs and
    targets with ``MSELoss(reduction="sum")`` and ``torch.optim.Adam(lr=1e-4,
    amsgrad=True, eps=1e-8)``, printing the loss before each step.

    Args:
      seed: ``torch.manual_seed`` of the data and the weights.
      steps: optimizer steps (the seed: 500).
      dtype: ``"float32"`` (the seed's) or ``"float64"``.

    Returns:
      NumPy arrays in ``dtype``: ``x`` (64, 1000), ``y`` (64, 10), the initial
      ``w1`` (100, 1000), ``b1`` (100,), ``w2`` (10, 100), ``b2`` (10,) in
      ``torch.nn.Linear``'s (out, in) layout (the layout of ``train.py
      --init-from``), and ``losses`` (steps,), the loss before each step.
    """
    model, optimizer, x, y = seed_program(seed, dtype)
    first, last = model[0], model[2]
    tensors = {"x": x, "y": y, "w1": first.weight, "b1": first.bias}
    tensors |= {"w2": last.weight, "b2": last.bias}
    saved = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    saved["losses"] = seed_torch_steps(model, optimizer, x, y, steps).astype(dtype)
    return saved


def seed_torch_steps(model, optimizer, x, y, steps: int) -> np.ndarray:
    """The seed's PyTorch loop, ``steps`` times: the sum-of-squares loss before each step."""
    import torch

    loss_fn = torch.nn.MSELoss(reduction="sum")
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return np.asarray(losses)


def save_torch_run(seed: int, dtype: str, steps: int, path: str) -> None:
    """Trains the seed's program for ``steps`` steps; writes the model's and the optimizer's
    state dicts, and ``x`` and ``y``, with ``torch.save``."""
    import torch

    model, optimizer, x, y = seed_program(seed, dtype)
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
    p.add_argument("--steps", type=int, default=SEED_STEPS, help="optimizer steps (seed: 500)")
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
        save_torch_run(args.seed, args.dtype, args.save_at, args.pt)
        print(f"wrote {args.pt} (step {args.save_at})")
    if not args.quiet:
        for t, loss in enumerate(saved["losses"]):
            print(t, float(loss))
    np.savez(args.out, **saved)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
