"""The release: the wheel, installed as users install it, works without the source tree.

``python -m build`` makes the sdist and, from it, the wheel. The wheel goes into a fresh
virtual environment (``pip install --no-deps --no-index``: nothing is built or fetched at
install time), and everything runs from an empty temporary folder, so neither the
repository nor scripts/ is on ``sys.path``. The dependencies (jax, optax, flax, ...) come from
the test environment through a path file, which adds their folder to ``sys.path`` without
running its .pth files, so this repository's editable install of adam_jax stays invisible.

The build runs with ``--no-isolation`` (the build requirements, setuptools and jax, are those
of the test environment): an isolated build installs jax and jaxlib twice, 2 minutes here.
``make wheel`` makes the release with an isolated build.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="needs the build package (test extra)")

ROOT = Path(__file__).resolve().parents[1]
_INIT = (ROOT / "adam_jax" / "__init__.py").read_text()
VERSION = re.search(r'^__version__ = "([^"]+)"', _INIT, re.M)[1]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The built sdist and wheel, and a fresh venv with the wheel installed."""
    tmp = tmp_path_factory.mktemp("release")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "test_environment_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        # --ignore-installed: the dependencies' folder holds this version's editable install,
        # which pip would take for the wheel, installing nothing.
        + ["--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True,
    )
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return {"wheel": wheel, "sdist": sdist, "python": python, "site": Path(site), "cwd": cwd}


def run(release, code: str, *args: str, timeout: float = 300, path: str | None = None) -> str:
    """Runs Python code (or a script, with ``args``) in the venv, from the empty folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if path is not None:
        env["PATH"] = path
    command = [str(release["python"]), *(args or ["-c", textwrap.dedent(code)])]
    done = subprocess.run(
        command, cwd=release["cwd"], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_build_gives_a_wheel_and_an_sdist_of_the_version(release):
    assert release["wheel"].name.startswith(f"adam_jax-{VERSION}-")
    assert release["sdist"].name == f"adam_jax-{VERSION}.tar.gz"
    with tarfile.open(release["sdist"]) as sdist:
        names = {Path(n).relative_to(f"adam_jax-{VERSION}").as_posix() for n in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "adam_jax/__init__.py"} <= names
    assert "adam_jax/csrc/adam_step.cc" in names  # the kernel can be built from the sdist
    with zipfile.ZipFile(release["wheel"]) as wheel:
        metadata = wheel.read(f"adam_jax-{VERSION}.dist-info/METADATA").decode()
    assert f"\nVersion: {VERSION}\n" in metadata
    for dependency in ("jax", "optax", "chex", "numpy"):
        assert f"Requires-Dist: {dependency}" in metadata


def test_the_wheel_holds_the_library_and_no_test_harness(release):
    """The wheel is adam_jax/ and its metadata: no tests, no programs, no parity harness."""
    with zipfile.ZipFile(release["wheel"]) as wheel:
        names = wheel.namelist()
    dist_info = f"adam_jax-{VERSION}.dist-info/"
    library = [n for n in names if not n.startswith(dist_info)]
    assert all(n.startswith("adam_jax/") for n in library), library
    assert not [n for n in names if "parity" in n or n.startswith(("tests/", "scripts/"))]
    sources = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "adam_jax").rglob("*")
        if p.suffix in (".py", ".cc", ".typed") and "__pycache__" not in p.parts
    )
    assert "adam_jax/training/__init__.py" in sources  # the train extra's modules ship too
    missing = sorted(set(sources) - set(names))
    assert missing == []
    assert {dist_info + "METADATA", dist_info + "RECORD"} <= set(names)


def test_the_installed_package_is_the_wheel(release):
    out = run(
        release,
        """
        import importlib.metadata, json, adam_jax
        print(json.dumps([adam_jax.__file__, adam_jax.__version__,
                          importlib.metadata.version("adam_jax")]))
        """,
    )
    path, version, metadata_version = json.loads(out)
    assert Path(path).is_relative_to(release["site"])
    assert not Path(path).is_relative_to(ROOT)
    assert version == metadata_version == VERSION


def test_readme_usage_example(release):
    usage = readme_python_blocks()[0]
    assert "adam_jax.amsgrad" in usage
    loss = float(run(release, usage).split()[-1])
    # x @ w + b = 3 everywhere at the start; the loss printed is the third step's, taken after
    # two Adam steps, each of which moves every param by lr (a gradient that keeps its sign
    # has m_hat / sqrt(v_hat) = 1): the 8 outputs are 3 - 3 * 2e-4 - 2e-4.
    assert loss == pytest.approx(8 * (3 - 4 * 2e-4) ** 2, rel=1e-6)


def test_fused_kernel_from_the_wheel(release):
    """The kernel is compiled into the wheel: it runs with no compiler on the PATH."""
    with zipfile.ZipFile(release["wheel"]) as wheel:
        compiled = [n for n in wheel.namelist() if re.match(r"adam_jax/_adam_step.*\.so$", n)]
    prebuilt = run(release, "import adam_jax; print(hasattr(adam_jax, 'fused_available'))")
    out = run(
        release,
        """
        import jax, jax.numpy as jnp, optax, adam_jax
        print(adam_jax.fused_available() if hasattr(adam_jax, "fused_available") else "n/a")
        params = {"w": jnp.linspace(-1.0, 1.0, 3000).reshape(30, 100)}
        grads = {"w": jnp.cos(jnp.arange(3000.0)).reshape(30, 100)}
        fused = adam_jax.fused_adam(1e-3, amsgrad=True)
        step = jax.jit(fused.step, donate_argnums=(0, 2))
        p, state = jax.tree.map(jnp.copy, params), fused.init(params)  # donated: a copy
        reference = adam_jax.amsgrad(1e-3)
        q, ref_state = dict(params), reference.init(params)
        for _ in range(3):
            p, state = step(p, grads, state)
            updates, ref_state = reference.update(grads, ref_state, q)
            q = optax.apply_updates(q, updates)
        print(float(jnp.max(jnp.abs(p["w"] - q["w"]))))
        """,
        # Where the kernel is built at install time, nothing may compile it at run time.
        path=str(release["python"].parent) if prebuilt.strip() == "True" else None,
    )
    available, difference = out.split()
    if prebuilt.strip() == "True":
        assert compiled, "the wheel has no compiled fused_adam kernel"
        assert available == "True"
    assert float(difference) <= 1e-6  # as adam_jax.amsgrad + optax.apply_updates


def test_public_docstring_examples(release):
    """Every public name's Examples (epsilon_report's among them) against the installed code."""
    out = run(
        release,
        """
        import doctest, adam_jax
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        names = []
        for name in adam_jax.__all__:
            for test in finder.find(getattr(adam_jax, name), name, globs={}):
                if test.examples:
                    runner.run(test)
                    names.append(test.name)
        print(runner.summarize(verbose=False).failed, " ".join(names))
        """,
    )
    failed, *names = out.split()
    assert failed == "0", out
    assert "epsilon_report" in names


def test_epsilon_report(release):
    """A huge eps dominates every coordinate, eps=0 none (the report of the installed code)."""
    out = run(
        release,
        """
        import jax.numpy as jnp, adam_jax
        params = {"w": jnp.ones((4, 5))}
        grads = {"w": jnp.linspace(0.1, 2.0, 20).reshape(4, 5)}
        for eps in (1e6, 0.0):
            optimizer = adam_jax.adam(1e-3, eps=eps)
            state = optimizer.init(params)
            _, state = optimizer.update(grads, state, params)
            report = adam_jax.epsilon_report(state, optimizer)
            print(float(report["dominated_fraction"]))
        """,
    )
    assert [float(x) for x in out.split()] == [1.0, 0.0]


def test_train_script_runs_against_the_installed_package(release, tmp_path):
    script = release["cwd"] / "train.py"
    shutil.copy(ROOT / "scripts" / "train.py", script)
    run(release, "", str(script), "--steps", "5", "--out", str(tmp_path / "run"), "--quiet")
    installed = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in installed] == [1, 2, 3, 4, 5]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_loss"] == installed[-1]["loss"]
    # The same 5 steps from the source tree, in this process: the same losses, bit for bit.
    cli = pytest.importorskip("adam_jax.training.cli", reason="needs the train extra")
    assert cli.main(["--steps", "5", "--out", str(tmp_path / "source"), "--quiet"]) == 0
    source = [json.loads(line) for line in (tmp_path / "source" / "metrics.jsonl").open()]
    assert [r["loss"] for r in installed] == [r["loss"] for r in source]
