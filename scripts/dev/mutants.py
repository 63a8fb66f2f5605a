"""Mutation testing of adam_jax: every mutant of ``mutants.toml`` must make a test fail.

    python -m scripts.dev.mutants                  # all mutants (make mutants)
    python -m scripts.dev.mutants --only nan-to-zero k-sign-dropped
    python -m scripts.dev.mutants --list           # names, files and tests, nothing run

Each mutant, a row of ``mutants.toml`` beside this file, is one small, meaningful change to
``adam_jax/`` (a wrong bias correction, eps on the wrong side of the root, a NaN turned into 0,
a loosened check, one line of the fused kernel ``adam_jax/csrc/adam_step.cc`` ...) and the few
tests that should notice it. The working tree (tracked and untracked files, as ``git ls-files``
lists them) is copied into a temporary directory once; each mutant is applied there alone, its
tests run (``pytest -x``), and the file is restored. The repository itself is never modified.
The kernel is built in the copy (``setup.py build_ext --inplace``) and rebuilt for each kernel
mutant; a mutant whose text is no longer in the source, or whose kernel does not compile, is
reported as not run rather than killed.

Before the mutants, the union of their tests runs on the unmutated copy: a test that fails
there cannot kill anything. Prints a table and writes ``docs/bench/mutants.json``.
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench" / "mutants.json"
TABLE = pathlib.Path(__file__).with_name("mutants.toml")
KERNEL = "adam_jax/csrc/adam_step.cc"
TIMEOUT_S = 900  # per pytest run; a mutant that hangs its tests counts as killed (timeout)


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A row of ``mutants.toml``: ``old`` -> ``new`` in ``path`` (each ``old`` exactly once)."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    why: str

    @property
    def kernel(self) -> bool:
        return self.path == KERNEL


def load(table: pathlib.Path = TABLE) -> list[Mutant]:
    """The mutants of ``table``, in its order; a row with a missing or unknown key raises."""
    mutants = []
    for row in tomllib.loads(table.read_text())["mutant"]:
        edits = row.pop("edit", None) or [{"old": row.pop("old"), "new": row.pop("new")}]
        mutants.append(
            Mutant(
                name=row.pop("name"),
                path=row.pop("file"),
                edits=tuple((e["old"], e["new"]) for e in edits),
                tests=tuple(row.pop("tests")),
                why=row.pop("why"),
            )
        )
        if row:
            raise ValueError(f"{table.name}: mutant {mutants[-1].name!r} has unknown keys {row}")
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise ValueError(f"{table.name}: mutant names repeat")
    return mutants


def _copy_tree(dest: pathlib.Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _build_kernel(copy: pathlib.Path) -> tuple[bool, str]:
    for so in (copy / "adam_jax").glob("_adam_step*.so"):
        so.unlink()
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    built = any((copy / "adam_jax").glob("_adam_step*.so"))
    return proc.returncode == 0 and built, (proc.stdout + proc.stderr)[-2000:]


def _pytest(copy: pathlib.Path, tests, *, stop_first: bool = True):
    """Runs ``tests`` in ``copy`` (its adam_jax first on sys.path); (status, first failure)."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header"]
    cmd += ["-x"] if stop_first else []
    try:
        proc = subprocess.run(
            [*cmd, *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"tests ran past {TIMEOUT_S} s"
    output = proc.stdout + proc.stderr
    # "FAILED <node id> - <message>"; a node id may hold spaces (a parameter's repr).
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)
    if proc.returncode == 0:
        return "passed", ""
    if proc.returncode == 5:
        return "no tests", output[-500:]
    return "failed", failed[0] if failed else output[-500:]


def _apply(copy: pathlib.Path, mutant: Mutant) -> str | None:
    """Applies ``mutant`` in ``copy``; the original text, or None if an edit is stale."""
    path = copy / mutant.path
    original = text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def run(mutants: list[Mutant], out: pathlib.Path | None) -> list[dict]:
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="adam_jax_mutants_") as tmp:
        copy = pathlib.Path(tmp)
        _copy_tree(copy)
        kernel_ok, log = _build_kernel(copy) if any(x.kernel for x in mutants) else (False, "")
        if any(x.kernel for x in mutants) and not kernel_ok:
            print(f"the kernel does not build in the copy; kernel mutants not run:\n{log}")

        # Tests that fail unmutated cannot kill a mutant.
        union = sorted({t for x in mutants for t in x.tests})
        status, failure = _pytest(copy, union, stop_first=False)
        broken = set()
        if status != "passed":
            print(f"baseline: {status}: {failure}")
            for t in union:
                if _pytest(copy, [t])[0] != "passed":
                    broken.add(t)
            print(f"tests failing unmutated: {sorted(broken)}")

        # Python mutants first: a kernel mutant leaves its build behind.
        for mutant in sorted(mutants, key=lambda x: x.kernel):
            t0 = time.time()
            row = {
                "name": mutant.name,
                "file": mutant.path,
                "why": mutant.why,
                "tests": list(mutant.tests),
            }
            if broken & set(mutant.tests):
                row.update(status="not run", detail="a test fails unmutated")
            elif mutant.kernel and not kernel_ok:
                row.update(status="not run", detail="kernel does not build in the copy")
            else:
                original = _apply(copy, mutant)
                if original is None:
                    row.update(status="not run", detail="mutated text not found (source changed)")
                else:
                    built, log = _build_kernel(copy) if mutant.kernel else (True, "")
                    if not built:
                        row.update(status="not run", detail="mutant does not compile")
                    else:
                        result, detail = _pytest(copy, mutant.tests)
                        killed = result in ("failed", "timeout")
                        row.update(status="killed" if killed else "SURVIVED", detail=detail)
                    (copy / mutant.path).write_text(original)
            row["seconds"] = round(time.time() - t0, 1)
            rows.append(row)
            print(f"{row['status']:9} {mutant.name:34} {row['seconds']:6.1f} s  {row['detail']}")
            sys.stdout.flush()
        if kernel_ok and any(x.kernel for x in mutants):
            _build_kernel(copy)

    _print_table(rows)
    if out is not None:
        run_ = [r for r in rows if r["status"] != "not run"]
        summary = {
            "date": datetime.date.today().isoformat(),
            "machine": _machine(),
            "mutants": len(rows),
            "run": len(run_),
            "killed": sum(r["status"] == "killed" for r in run_),
            "not_run": len(rows) - len(run_),
            "minutes": round((time.time() - started) / 60, 1),
            "rows": rows,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return rows


def _print_table(rows) -> None:
    """The results as a Markdown table (docs/reliability.md shows it), then the kill rate."""
    ran = [r for r in rows if r["status"] != "not run"]
    killed = sum(r["status"] == "killed" for r in ran)
    print(
        "\n| mutant | file | what it breaks | result | first test to fail |\n|---|---|---|---|---|"
    )
    for r in rows:
        by = f"`{r['detail']}`" if r["status"] == "killed" else r["detail"]
        file = r["file"].removeprefix("adam_jax/")
        print(f"| {r['name']} | `{file}` | {r['why']} | {r['status']} | {by} |")
    rate = f"{killed}/{len(ran)}" + (f" ({100 * killed / len(ran):.0f}%)" if ran else "")
    print(f"\nkilled {rate}; not run {len(rows) - len(ran)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=pathlib.Path, default=OUT, help=f"default {OUT}")
    parser.add_argument(
        "--table", action="store_true", help="print the table of the --json file and exit"
    )
    args = parser.parse_args(argv)
    # A kill (SIGTERM) unwinds like Ctrl-C, so the temporary copy is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.table:
        _print_table(json.loads(args.json.read_text())["rows"])
        return 0
    mutants = load()
    if args.only:
        unknown = set(args.only) - {x.name for x in mutants}
        if unknown:
            parser.error(f"unknown mutants {sorted(unknown)}")
        mutants = [x for x in mutants if x.name in args.only]
    if args.list:
        for x in mutants:
            print(f"{x.name:34} {x.path:28} {' '.join(x.tests)}")
        return 0
    rows = run(mutants, None if args.only else args.json)
    return 0 if all(r["status"] != "SURVIVED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
