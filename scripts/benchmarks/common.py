"""Shared helpers of the benchmark scripts: interleaved timing, statistics, machine facts.

A benchmark here times several implementations of the same thing on a noisy machine. They are
run round-robin: each repetition runs every implementation once, in a freshly shuffled order, so
that a burst of load from another process hits all of them alike, and ratios are taken within a
repetition before their median is. Before each implementation's turn the process sleeps for
``settle_s``: PyTorch's OpenMP workers and XLA's thread pool spin for a while after their work,
and on a 2-core machine a spinning pool steals a core from whatever runs next.
"""

import datetime
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np


def interleaved(
    impls: dict[str, tuple[Callable[[], None], Callable[[], None]]],
    *,
    reps: int,
    calls: dict[str, int] | int = 1,
    settle_s: float = 0.005,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Times each ``impls[name]()`` round-robin; returns seconds per call, one per repetition.

    Args:
      impls: name -> ``(step, sync)``: ``step()`` does one unit of work (it may return before
        the work is done, as JAX's asynchronous dispatch does), ``sync()`` waits for all of it.
      reps: repetitions; each runs every implementation once, in a shuffled order.
      calls: ``step()`` calls timed back to back per repetition, followed by one ``sync()``
        (a dict gives one count per name); the recorded time is their mean. One untimed
        synced call precedes them.
      settle_s: sleep before each implementation's turn (see the module docstring).
      seed: seed of the shuffling.

    Returns:
      name -> array of ``reps`` seconds per call.
    """
    rng = random.Random(seed)
    times = {name: np.empty(reps) for name in impls}
    names = list(impls)
    for r in range(reps):
        rng.shuffle(names)
        for name in names:
            step, sync = impls[name]
            k = calls[name] if isinstance(calls, dict) else calls
            time.sleep(settle_s)
            step()
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            sync()
            times[name][r] = (time.perf_counter() - t0) / k
    return times


def summary(x: np.ndarray) -> dict[str, float]:
    """Median, quartiles and 10th/90th percentiles of ``x``."""
    q = np.percentile(x, [10, 25, 50, 75, 90])
    return {"median": q[2], "p10": q[0], "p25": q[1], "p75": q[3], "p90": q[4]}


def ratio(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Summary of the per-repetition ratios ``a / b``."""
    return summary(np.asarray(a) / np.asarray(b))


def calls_for(expected_s: float, budget_s: float = 0.02, most: int = 200) -> int:
    """How many back-to-back calls fill about ``budget_s`` when one takes ``expected_s``."""
    return int(max(1, min(most, budget_s // max(expected_s, 1e-7))))


def machine() -> dict:
    """Facts about this run: CPU, cores, load, library versions, date, command line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    versions = {}
    for mod in ("jax", "jaxlib", "optax", "torch", "numpy", "flax"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": command_line(),
    }


def command_line() -> str:
    """How this program was started: ``python -m scripts.benchmarks.<name> <args>``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # None when run as a file
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return " ".join([os.path.basename(sys.executable), *program, *sys.argv[1:]])


def write_json(path: str, obj) -> None:
    """Writes ``obj`` as indented JSON, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)
        f.write("\n")


def save(args, result: dict, draw=None) -> None:
    """Writes ``result`` to ``args.json`` and, with ``draw(path)``, the plot to ``args.png``."""
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if draw is not None and args.png:
        draw(args.png)
        print(f"wrote {args.png}")


def fmt_time(s: float) -> str:
    """Seconds as a short string in us or ms."""
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "c64": 8,
    "c128": 16,
}
_SHAPE = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) (\w[\w-]*)\((.*?)\)(?:, |$)")


def _shape_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES.get(dtype, 4)
    return total


def hlo_traffic(compiled_text: str) -> dict[str, int]:
    """Kernels of the entry computation that touch arrays, and the bytes they stream.

    Counts every fusion (and unfused copy) whose result is not a scalar, and the bytes of its
    operands plus its results: a lower bound on the memory traffic of one run, each kernel
    reading its inputs and writing its outputs once.

    Returns:
      ``{"kernels": ..., "bytes": ...}``.
    """
    entry = compiled_text[compiled_text.index("\nENTRY") :]
    shapes, kernels, traffic = {}, 0, 0
    for line in entry.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op, operands = m.groups()
        shapes[name] = shape
        if op not in ("fusion", "copy") or _shape_bytes(shape) <= 16:
            continue
        kernels += 1
        names = re.findall(r"%([^\s,)]+)", operands)
        traffic += _shape_bytes(shape) + sum(_shape_bytes(shapes.get(o, "")) for o in names)
    return {"kernels": kernels, "bytes": traffic}


COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def hlo_collectives(compiled_text: str) -> dict[str, dict[str, int]]:
    """The collectives of the entry computation: kind -> ``{"count": ..., "bytes": ...}``,
    the bytes of their results (an async ``-start`` counts as its collective)."""
    entry = compiled_text[compiled_text.index("\nENTRY") :]
    found: dict[str, dict[str, int]] = {}
    for line in entry.splitlines():
        m = _INSTR.match(line)
        kind = m.group(3).removesuffix("-start") if m else ""
        if kind in COLLECTIVES:
            counts = found.setdefault(kind, {"count": 0, "bytes": 0})
            counts["count"] += 1
            counts["bytes"] += _shape_bytes(m.group(2))
    return dict(sorted(found.items()))


def transformer_shapes(width: int = 256, layers: int = 12, vocab: int = 1536, context: int = 512):
    """Parameter shapes of a GPT-like stack: about 150 arrays, 1.0e7 params at the defaults."""
    shapes = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (width, 3 * width), (3 * width,), (width, width), (width,)]
        shapes += [
            (width,),
            (width,),
            (width, 4 * width),
            (4 * width,),
            (4 * width, width),
            (width,),
        ]
    return shapes + [(width,), (width,)]
