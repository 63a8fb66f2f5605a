"""Mutation testing of adam_jax: every mutant below must make a test fail.

    python -m scripts.dev.mutants                  # all mutants (make mutants)
    python -m scripts.dev.mutants --only nan-to-zero k-sign-dropped
    python -m scripts.dev.mutants --list           # names, files and tests, nothing run

Each mutant is one small, meaningful change to ``adam_jax/`` (a wrong bias correction, eps
on the wrong side of the root, a NaN turned into 0, a loosened check, one line of the fused
kernel ``adam_jax/csrc/adam_step.cc`` ...) and the few tests that should notice it. The
working tree (tracked and untracked files, as ``git ls-files`` lists them) is copied into a
temporary directory once; each mutant is applied there alone, its tests run (``pytest -x``),
and the file is restored. The repository itself is never modified. The kernel is built in
the copy (``setup.py build_ext --inplace``) and rebuilt for each kernel mutant; a mutant
whose text is no longer in the source, or whose kernel does not compile, is reported as not
run rather than killed.

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

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench" / "mutants.json"
KERNEL = "adam_jax/csrc/adam_step.cc"
TIMEOUT_S = 900  # per pytest run; a mutant that hangs its tests counts as killed (timeout)

REF = "tests/test_reference_matrix.py::test_matches_float64_reference"
EPS_REF = "tests/test_reference_matrix.py::test_eps_root_and_betas_match_reference"
FUSED = "tests/test_fused.py::test_bitwise_equal_to_adam"
VALIDATION = "tests/test_validation.py::test_bad_hyperparameter_raises"
KILLS = "tests/test_mutant_kills.py"


@dataclasses.dataclass(frozen=True)
class Mutant:
    """``old`` -> ``new`` in ``path`` (each ``old`` must occur exactly once there)."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    why: str

    @property
    def kernel(self) -> bool:
        return self.path == KERNEL


def m(name, path, edits, tests, why):
    if isinstance(edits[0], str):
        edits = (edits,)
    return Mutant(name, f"adam_jax/{path}", tuple(edits), tuple(tests), why)


MUTANTS = [
    # --- the conventions table and the step's scalars --------------------------------------
    m(
        "max-of-raw-for-optax",
        "_conventions.py",
        ('Convention("optax", True, False,', 'Convention("optax", False, False,'),
        [f"{REF}[optax-True-none-False]"],
        "AMSGrad's maximum over the raw v where optax takes it over v / c2",
    ),
    m(
        "max-of-corrected-for-pytorch",
        "_conventions.py",
        ('Convention("pytorch", False, False,', 'Convention("pytorch", True, False,'),
        [f"{REF}[pytorch-True-none-False]"],
        "AMSGrad's maximum over v / c2 where torch takes it over the raw v",
    ),
    m(
        "drop-first-bias-correction",
        "_conventions.py",
        (
            "return StepCoefficients(1 / bc1, 1 / bc2, one)",
            "return StepCoefficients(one, 1 / bc2, one)",
        ),
        [f"{REF}[pytorch-False-none-False]"],
        "m_t not divided by 1 - b1^t",
    ),
    m(
        "drop-second-bias-correction",
        "_conventions.py",
        (
            "return StepCoefficients(1 / bc1, 1 / bc2, one)",
            "return StepCoefficients(1 / bc1, one, one)",
        ),
        [f"{REF}[pytorch-False-none-False]"],
        "v_t not divided by 1 - b2^t",
    ),
    m(
        "keras-without-epsilon-hat",
        "_conventions.py",
        ("StepCoefficients(jnp.sqrt(bc2) / bc1, one, one)", "StepCoefficients(1 / bc1, one, one)"),
        [f"{REF}[keras-False-none-False]"],
        "Keras' sqrt(c2) / c1 factor replaced by 1 / c1",
    ),
    m(
        "paper-amsgrad-bias-corrected",
        "_conventions.py",
        (
            "one = jnp.ones_like(bc1)\n    if amsgrad and not convention.amsgrad_bias_correction:",
            "one = jnp.ones_like(bc1)\n    if False:",
        ),
        [f"{REF}[paper-True-none-False]"],
        "Reddi et al.'s AMSGrad given a bias correction it does not have",
    ),
    # --- the update equations ----------------------------------------------------------------
    m(
        "eps-inside-root",
        "_transform.py",
        (
            "denom = jnp.sqrt(r * c(k.inside) + c(eps_root)) + c(eps)",
            "denom = jnp.sqrt(r * c(k.inside) + c(eps_root) + c(eps))",
        ),
        [f"{REF}[pytorch-False-none-False]"],
        "eps added under the square root",
    ),
    m(
        "eps-root-outside-root",
        "_transform.py",
        (
            "denom = jnp.sqrt(r * c(k.inside) + c(eps_root)) + c(eps)",
            "denom = jnp.sqrt(r * c(k.inside)) + c(eps_root) + c(eps)",
        ),
        [f"{EPS_REF}[False-pytorch]"],
        "eps_root added outside the square root",
    ),
    m(
        "eps-root-dropped",
        "_transform.py",
        (
            "denom = jnp.sqrt(r * c(k.inside) + c(eps_root)) + c(eps)",
            "denom = jnp.sqrt(r * c(k.inside)) + c(eps)",
        ),
        [f"{EPS_REF}[False-pytorch]"],
        "eps_root ignored",
    ),
    m(
        "swap-b1-b2-in-moments",
        "_transform.py",
        ("m_new = c(b1) * m + (1 - c(b1)) * g", "m_new = c(b2) * m + (1 - c(b2)) * g"),
        [f"{REF}[pytorch-False-none-False]"],
        "the first moment decays with b2",
    ),
    m(
        "swap-b1-b2-in-bias-corrections",
        "_transform.py",
        (
            "_numerics.bias_correction(b1, count, scalar_dtype),\n"
            "            _numerics.bias_correction(b2, count, scalar_dtype),",
            "_numerics.bias_correction(b2, count, scalar_dtype),\n"
            "            _numerics.bias_correction(b1, count, scalar_dtype),",
        ),
        [f"{REF}[pytorch-False-none-False]"],
        "c1 computed from b2 and c2 from b1",
    ),
    m(
        "amsgrad-maximum-dropped",
        "_transform.py",
        ("r = jnp.maximum(v_max, v_new * c(k.before_max))", "r = v_new * c(k.before_max)"),
        [f"{REF}[pytorch-True-none-False]"],
        "AMSGrad without its running maximum (plain Adam)",
    ),
    m(
        "compute-in-16-bit",
        "_transform.py",
        (
            "dtype = _numerics.compute_dtype(jnp.result_type(g))",
            "dtype = jnp.result_type(g)",
        ),
        ["tests/test_low_precision.py"],
        "16-bit gradients stepped in 16-bit arithmetic instead of float32",
    ),
    m(
        "update-not-cast-back",
        "_transform.py",
        (
            "step = [s.astype(jnp.result_type(g)) for (s, *_), g in zip(out, grads, strict=True)]",
            "step = [s for (s, *_), g in zip(out, grads, strict=True)]",
        ),
        ["tests/test_nonfinite.py::test_nonfinite_gradient_gives_nonfinite_update"],
        "a bfloat16 gradient gets a float32 update",
    ),
    m(
        "gradient-shape-broadcasts",
        "_transform.py",
        (
            "if jnp.shape(gradient) != jnp.shape(moment):",
            "if jnp.ndim(gradient) != jnp.ndim(moment):",
        ),
        ["tests/test_validation.py::test_gradient_of_another_shape_raises_instead_of_broadcasting"],
        "a (1,) gradient for a (3,) param broadcasts silently",
    ),
    m(
        "complex-abs-squared-wrong",
        "_transform.py",
        ("return jnp.real(x * jnp.conj(x))", "return jnp.real(x * x)"),
        [f"{KILLS}::test_complex_params_match_optax"],
        "|g|^2 of a complex gradient computed as Re(g^2)",
    ),
    # --- numerics ------------------------------------------------------------------------------
    m(
        "nan-to-zero",
        "_numerics.py",
        (
            "jnp.where(denominator == 0, jnp.zeros_like(numerator), numerator / denominator)",
            "jnp.where(denominator > 0, numerator / denominator, jnp.zeros_like(numerator))",
        ),
        ["tests/test_nonfinite.py"],
        "the old `denominator > 0`: a NaN gradient gives a hidden 0 step",
    ),
    m(
        "off-by-one-step",
        "_numerics.py",
        (
            "return 1 - decay ** count.astype(dtype)",
            "return 1 - decay ** (count.astype(dtype) + 1)",
        ),
        [f"{REF}[pytorch-False-none-False]"],
        "bias corrections of step t + 1",
    ),
    m(
        "count-wraps",
        "_numerics.py",
        (
            "return jnp.where(count < _INT32_MAX, count + 1, count).astype(jnp.int32)",
            "return (count + 1).astype(jnp.int32)",
        ),
        ["tests/test_composition.py::test_count_saturates_instead_of_wrapping"],
        "the step count wraps to -2**31 instead of saturating",
    ),
    m(
        "moments-in-16-bit",
        "_numerics.py",
        ("        return compute_dtype(dtype)\n", "        return dtype\n"),
        ["tests/test_low_precision.py", f"{KILLS}::test_16bit_params_keep_float32_moments"],
        "16-bit params get 16-bit moments by default",
    ),
    # --- the chain -----------------------------------------------------------------------------
    m(
        "coupled-for-decoupled",
        "_chain.py",
        (
            (
                "*([decay] if decays_weights and not decoupled_weight_decay else []),",
                "*([decay] if decays_weights and decoupled_weight_decay else []),",
            ),
            (
                "*([decay] if decays_weights and decoupled_weight_decay else []),\n"
                "        optax.scale_by_learning_rate",
                "*([decay] if decays_weights and not decoupled_weight_decay else []),\n"
                "        optax.scale_by_learning_rate",
            ),
        ),
        [f"{REF}[pytorch-False-decoupled-False]"],
        "weight decay added to the gradient where AdamW adds it to the step, and back",
    ),
    m(
        "adamw-coupled",
        "_alias.py",
        (
            "AdamSpec(decoupled_weight_decay=True, **locals())",
            "AdamSpec(decoupled_weight_decay=False, **locals())",
        ),
        ["tests/test_spec.py::test_factory_builds_the_spec_it_advertises", f"{KILLS}::test_mask"],
        "adamw with torch.optim.Adam's coupled decay",
    ),
    m(
        "maximize-sign",
        "_chain.py",
        ("[optax.scale(-1.0)] if maximize", "[optax.scale(1.0)] if maximize"),
        [f"{REF}[pytorch-False-none-True]"],
        "maximize=True descends",
    ),
    m(
        "mask-ignored",
        "_chain.py",
        (
            "decay = optax.add_decayed_weights(weight_decay, mask)",
            "decay = optax.add_decayed_weights(weight_decay, None)",
        ),
        [f"{KILLS}::test_mask"],
        "mask= ignored: every param decayed",
    ),
    # --- conventions' complex numbers and NAdam ---------------------------------------------
    m(
        "complex-as-real-off",
        "_conventions.py",
        (
            'Convention("pytorch", False, False, True, True,',
            'Convention("pytorch", False, False, True, False,',
        ),
        [f"{KILLS}::test_complex_params_match_torch"],
        "pytorch convention keeps |g|^2 for complex params instead of torch's view_as_real",
    ),
    m(
        "nadam-mu-next-is-mu",
        "_conventions.py",
        (
            "mu_next = nadam_momentum(b1, momentum_decay, count + 1, dtype)",
            "mu_next = nadam_momentum(b1, momentum_decay, count, dtype)",
        ),
        [f"{KILLS}::test_nadam_matches_torch"],
        "NAdam's look-ahead momentum mu_{t+1} replaced by mu_t",
    ),
    m(
        "nadam-schedule-exponent",
        "_conventions.py",
        (
            "exponent = count.astype(dtype) * jnp.asarray(momentum_decay, dtype)",
            "exponent = (count.astype(dtype) + 1) * jnp.asarray(momentum_decay, dtype)",
        ),
        [f"{KILLS}::test_nadam_matches_torch"],
        "the momentum schedule 0.96^(t psi) one step ahead",
    ),
    m(
        "nadam-gradient-weight",
        "_conventions.py",
        ("(1 - mu) / (1 - mu_product)", "mu / (1 - mu_product)"),
        [f"{KILLS}::test_nadam_matches_torch"],
        "the gradient's term weighted by mu_t instead of 1 - mu_t",
    ),
    m(
        "optax-nadam-next-correction",
        "_conventions.py",
        (
            "next_bc1 = 1 - b1_ ** (count.astype(dtype) + 1)",
            "next_bc1 = 1 - b1_ ** count.astype(dtype)",
        ),
        [f"{KILLS}::test_nadam_matches_optax"],
        "optax's Nesterov term corrected by 1 - b1^t instead of 1 - b1^(t+1)",
    ),
    # --- validation ----------------------------------------------------------------------------
    m(
        "decay-below-1-check-removed",
        "_validation.py",
        ("check_range(name, value, high=1.0)", "check_range(name, value)"),
        [VALIDATION],
        "b1 >= 1 no longer rejected by the range check",
    ),
    m(
        "decay-float32-check-removed",
        "_validation.py",
        ("if x is not None and np.float32(x) >= 1:", "if x is not None and x >= 1:"),
        [VALIDATION],
        "b1=0.99999999 (1.0 in float32) accepted",
    ),
    m(
        "bool-check-removed",
        "_validation.py",
        ("    if not isinstance(value, bool):\n", "    if value is None:\n"),
        [VALIDATION],
        "maximize='no' accepted (and maximizes)",
    ),
    m(
        "bool-accepted-as-number",
        "_validation.py",
        (
            "if isinstance(value, (bool, np.bool_)) or value is None or",
            "if value is None or",
        ),
        [VALIDATION],
        "lr=True accepted as 1.0",
    ),
    m(
        "inf-accepted",
        "_validation.py",
        (
            "inside = low <= x and (x <= high if high_inclusive else x < high)",
            "inside = low <= x and x <= high",
        ),
        [VALIDATION],
        "lr=inf, weight_decay=inf accepted",
    ),
    m(
        "nan-accepted",
        "_validation.py",
        (
            "inside = low <= x and (x <= high if high_inclusive else x < high)",
            "inside = not (x < low or (x > high if high_inclusive else x >= high))",
        ),
        [VALIDATION],
        "lr=nan, eps=nan accepted (NaN compares false both ways)",
    ),
    m(
        "eps-float32-check-removed",
        "_validation.py",
        ("if x is not None and x > 0 and np.float32(x) == 0:", "if False:"),
        [VALIDATION],
        "eps=1e-50 (0 in float32) accepted",
    ),
    m(
        "integer-moment-dtype",
        "_validation.py",
        (
            '_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")',
            '_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8")',
        ),
        [VALIDATION],
        "mu_dtype='int8' accepted",
    ),
    m(
        "mask-check-removed",
        "_validation.py",
        ("if value is None or callable(value):", "if True:"),
        [VALIDATION],
        "mask={'w': 'yes'} accepted",
    ),
    # --- adam_atan2 --------------------------------------------------------------------------
    m(
        "atan2-b-dropped",
        "_atan2.py",
        ("c(b) * jnp.sqrt(r / c(k.bc2))", "jnp.sqrt(r / c(k.bc2))"),
        ["tests/test_atan2.py::test_matches_float64_reference"],
        "Adam-atan2's denominator scale b ignored",
    ),
    # --- fused_adam's Python side ------------------------------------------------------------
    m(
        "fused-one-minus-b1",
        "_fused.py",
        ("                1 - c(b1),\n", "                1 - c(b2),\n"),
        [f"{FUSED}[pytorch-False-none-False-constant]"],
        "the kernel gets 1 - b2 where it needs 1 - b1",
    ),
    m(
        "fused-maximize-sign",
        "_fused.py",
        ("c(-1.0 if maximize else 1.0)", "c(1.0)"),
        [f"{FUSED}[pytorch-False-none-True-constant]"],
        "fused_adam ignores maximize",
    ),
    m(
        "fused-mask-ignored",
        "_fused.py",
        (
            "decayed = _decayed_leaves(mask, params, treedef) if decays else [False] * n",
            "decayed = [decays] * n",
        ),
        ["tests/test_fused.py::test_masked_weight_decay"],
        "fused_adam decays the leaves the mask leaves out",
    ),
    m(
        "fused-eps-root-not-passed",
        "_fused.py",
        ("                c(eps_root),\n", "                c(0.0),\n"),
        [f"{KILLS}::test_fused_eps_root"],
        "the kernel is given eps_root = 0",
    ),
]

# --- the kernel, one mutant per line of the per-element loop (and its helpers) --------------
_K = "csrc/adam_step.cc"
_KF = f"{FUSED}[pytorch-False-none-False-constant]"
KERNEL_MUTANTS = [
    m(
        "k-fma-off",
        _K,
        ("return __builtin_fmaf(a, b, c);", "return a * b + c;"),
        [_KF],
        "MulAdd rounds twice where XLA fuses the multiply-add",
    ),
    m(
        "k-max-hides-nan",
        _K,
        ("return (a != a || a > b) ? a : b;", "return a > b ? a : b;"),
        [
            "tests/test_fused.py::test_nan_and_inf_gradients_propagate_as_in_adam",
            f"{KILLS}::test_fused_nan_in_the_maximum_stays",
        ],
        "AMSGrad's maximum drops a NaN already in v_max",
    ),
    m(
        "k-sign-dropped",
        _K,
        ("float gi = sign * g[i];", "float gi = g[i];"),
        [f"{FUSED}[pytorch-False-none-True-constant]"],
        "maximize ignored by the kernel",
    ),
    m(
        "k-coupled-decay-dropped",
        _K,
        ("gi = MulAdd<kFma>(wdc, pi, gi);", "gi = MulAdd<kFma>(wdd, pi, gi);"),
        [f"{FUSED}[pytorch-False-coupled-False-constant]"],
        "coupled weight decay not added to the gradient",
    ),
    m(
        "k-first-moment-b2",
        _K,
        ("MulAdd<kFma>(b1, m[i], omb1 * gi)", "MulAdd<kFma>(b2, m[i], omb2 * gi)"),
        [_KF],
        "m decays with b2",
    ),
    m(
        "k-second-moment-omb1",
        _K,
        ("MulAdd<kFma>(b2, v[i], omb2 * (gi * gi))", "MulAdd<kFma>(b2, v[i], omb1 * (gi * gi))"),
        [_KF],
        "v weighted by 1 - b1",
    ),
    m(
        "k-m-not-stored",
        _K,
        ("    m[i] = mi;\n", "    (void)mi;\n"),
        [_KF],
        "the first moment is not written back",
    ),
    m(
        "k-v-not-stored",
        _K,
        ("    v[i] = vi;\n", "    (void)vi;\n"),
        [_KF],
        "the second moment is not written back",
    ),
    m(
        "k-before-max-ignored",
        _K,
        ("r = Max(v_max[i], vi * before_max);", "r = Max(v_max[i], vi);"),
        [f"{FUSED}[optax-True-none-False-constant]"],
        "optax's maximum over v / c2 taken over the raw v",
    ),
    m(
        "k-vmax-not-stored",
        _K,
        ("      v_max[i] = r;\n", "      (void)r;\n"),
        [f"{FUSED}[pytorch-True-none-False-constant]"],
        "AMSGrad's maximum is not written back",
    ),
    m(
        "k-eps-inside-root",
        _K,
        (
            "std::sqrt(MulAdd<kFma>(r, inside, eps_root)) + eps;",
            "std::sqrt(MulAdd<kFma>(r, inside, eps_root) + eps);",
        ),
        [_KF],
        "eps under the square root",
    ),
    m(
        "k-eps-root-dropped",
        _K,
        ("std::sqrt(MulAdd<kFma>(r, inside, eps_root)) + eps;", "std::sqrt(r * inside) + eps;"),
        [f"{KILLS}::test_fused_eps_root"],
        "eps_root ignored by the kernel",
    ),
    m(
        "k-numerator-dropped",
        _K,
        ("(numerator * mi) / denom", "mi / denom"),
        [_KF],
        "no first bias correction",
    ),
    m(
        "k-nan-to-zero",
        _K,
        ("denom == 0.0f ? 0.0f : quotient", "denom > 0.0f ? quotient : 0.0f"),
        ["tests/test_fused.py::test_nan_and_inf_gradients_propagate_as_in_adam"],
        "the old `denominator > 0` in the kernel: NaN hidden as a 0 step",
    ),
    m(
        "k-decoupled-decay-dropped",
        _K,
        ("kDecoupled ? MulAdd<kFma>(wdd, pi, step) : step", "step"),
        [f"{FUSED}[pytorch-False-decoupled-False-constant]"],
        "decoupled weight decay not applied",
    ),
    m(
        "k-lr-rounded-twice",
        _K,
        ("p[i] = MulAdd<kFma>(neg_lr, update, pi);", "p[i] = pi + update * neg_lr;"),
        [_KF],
        "the learning rate's multiply rounded apart from the add, where XLA fuses them",
    ),
    m(
        "k-chunk-short",
        _K,
        ("std::min(n, b + kChunk)", "std::min(n, b + kChunk - 1)"),
        [_KF],
        "the last element of each chunk is skipped",
    ),
    m(
        "k-chunk-offset-lost",
        _K,
        ("float* p = leaf.p + begin;", "float* p = leaf.p;"),
        [_KF],
        "every chunk writes its params over the first chunk's",
    ),
    m(
        "k-scalars-swapped",
        _K,
        ("  kB1,\n  kOneMinusB1,\n", "  kOneMinusB1,\n  kB1,\n"),
        [_KF],
        "the kernel reads b1 and 1 - b1 from each other's slots",
    ),
]


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
    mutants = MUTANTS + KERNEL_MUTANTS
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
