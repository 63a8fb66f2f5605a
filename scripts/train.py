"""Train with adam_jax: the seed's MLP by default, any registered task on request.

    python scripts/train.py                              # the seed's run
    python scripts/train.py --task digits                # >= 95% test accuracy
    python scripts/train.py --optimizer adam --convention optax --steps 100
    python scripts/train.py --init-from seed_torch.npz   # PyTorch's weights and data
    python scripts/train.py --compute-dtype bfloat16     # mixed precision
    python scripts/train.py --steps 1000 --resume runs/seed-20261125-101500

Each run writes config.json, metrics.jsonl, summary.json, loss.png and orbax
checkpoints to --out (default runs/<task>-<timestamp>). The program is
``adam_jax.training.cli`` (with ``flags.py``, ``config.py`` and ``run.py``): tasks in
``adam_jax/training/tasks/``, the step and the scan-chunked loop in ``loop.py``; see
docs/training.md.
"""

import os
import sys

import jax

from adam_jax.training.cli import main
from adam_jax.training.run import EXIT_INTERRUPTED

if __name__ == "__main__":
    code = main()
    if code == EXIT_INTERRUPTED and jax.process_count() == 1:
        # Ctrl-C: the checkpoint, metrics and summary are written and closed. Tearing down the
        # interpreter (some 1,600 modules) would take 1-3 s more: answer at once instead.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
