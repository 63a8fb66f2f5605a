"""``fused_adam`` without its kernel, and no compiler or subprocess at import or trace time."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import adam_jax
from adam_jax import _ffi
from tests.test_package import README_BLOCKS

ROOT = Path(__file__).resolve().parents[1]
# The README example that calls fused_adam: the others run in a fresh interpreter, which has
# the kernel whatever this process blocks, so only this one's skip depends on it.
FUSED_README_EXAMPLE = next(i for i, b in enumerate(README_BLOCKS) if "fused_adam(" in b)
# Importing adam_jax with the extension module blocked is what an install without a C++
# compiler gives: `from adam_jax import _adam_step` raises ImportError.
BLOCK_KERNEL = "import sys; sys.modules['adam_jax._adam_step'] = None\n"


@pytest.fixture
def no_kernel(monkeypatch):
    monkeypatch.setitem(sys.modules, "adam_jax._adam_step", None)
    _ffi.kernel_module.cache_clear()
    yield
    monkeypatch.undo()
    _ffi.kernel_module.cache_clear()


def test_missing_kernel_gives_one_clear_error(no_kernel):
    assert adam_jax.fused_available() is False
    with pytest.raises(
        RuntimeError, match=r"not built when adam_jax was installed.*adam_jax\.adam"
    ):
        adam_jax.fused_adam(1e-3)
    adam_jax.adam(1e-3)  # the pure-JAX optimizer needs no kernel


def test_suite_passes_without_the_kernel(tmp_path):
    """fused_adam's doctests, README example and tests skip, with their reason, and pass."""
    code = BLOCK_KERNEL + textwrap.dedent(
        f"""
        import pytest
        raise SystemExit(pytest.main([
            "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", {str(ROOT)!r},
            "--doctest-modules", "adam_jax/_fused.py",
            "tests/test_package.py::test_readme_python_examples_run[{FUSED_README_EXAMPLE}]",
            "tests/test_fused.py::test_validates_hyperparameters",
        ]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout
    assert "SKIPPED" in summary and "no C++ compiler" in summary, summary
    assert "adam_jax._fused.fused_adam" in summary or "_fused.py" in summary, summary
    assert "test_fused.py" in summary and "failed" not in summary, summary


AUDITED = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork")


def test_import_and_tracing_start_no_subprocess():
    """``import adam_jax`` and tracing, compiling and running a fused step spawn nothing."""
    code = textwrap.dedent(
        f"""
        import sys
        started = []
        sys.addaudithook(lambda event, args: started.append(event) if event in {AUDITED!r}
                         or event.startswith(("os.exec", "os.spawn")) else None)
        import jax, jax.numpy as jnp
        import adam_jax
        if adam_jax.fused_available():
            fused = adam_jax.fused_adam(1e-3, amsgrad=True)
            params = {{"w": jnp.ones((4, 3))}}
            step = jax.jit(fused.step, donate_argnums=(0, 2))
            params, state = step(params, {{"w": jnp.ones((4, 3))}}, fused.init(params))
            jax.block_until_ready(params)
        print(sorted(set(started)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
