"""scripts/train.py, run in-process through ``main(argv)`` on small step counts."""

import argparse
import importlib.util
import math
import os
import pathlib
import shutil
from importlib import metadata

import jax
import numpy as np
import pytest

import adam_jax
from tests.helpers import full_batch_steps, metrics_rows, read_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("flax", reason="scripts/train.py needs the train extra (flax)")
pytest.importorskip("orbax.checkpoint", reason="scripts/train.py needs the train extra (orbax)")


from adam_jax.training.tasks import seed  # noqa: E402

SEED_PARAMS = 1000 * 100 + 100 + 100 * 10 + 10  # the seed's MLP, 1000 -> 100 -> 10


def _load_train():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_train()
QUIET = ["--quiet"]


def run(*argv) -> int:
    return train.main([*map(str, argv), *QUIET])


def checkpoint_steps(out) -> list:
    return sorted(int(d) for d in os.listdir(os.path.join(out, "checkpoints")) if d.isdigit())


def snapshot(path) -> dict:
    """Every file under ``path`` with its bytes: to show nothing was written."""
    found = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


# --- the seed task ---------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """20 steps straight (A), and 10 steps (B) resumed to 20, chunks of 7 steps."""
    base = tmp_path_factory.mktemp("seed")
    a, b = str(base / "A"), str(base / "B")
    flags = ["--log-every", 7, "--ckpt-every", 5]
    assert run("--steps", 20, "--out", a, *flags) == 0
    assert run("--steps", 10, "--out", b, *flags) == 0
    b_first = metrics_rows(b)
    assert run("--resume", b, "--steps", 20) == 0
    return a, b, b_first


def test_seed_writes_every_output_file(seed_runs):
    a, _, _ = seed_runs
    metrics = metrics_rows(a)
    assert [r["step"] for r in metrics] == list(range(1, 21))
    for r in metrics:
        assert set(r) == {"step", "loss", "lr", "eps_dominated"}
        assert r["lr"] == pytest.approx(1e-4, rel=1e-7)
        dominated = r["eps_dominated"] * SEED_PARAMS  # a fraction of the seed's coordinates
        assert dominated == pytest.approx(round(dominated), abs=0.05)
    losses = [r["loss"] for r in metrics]
    assert losses[-1] < 0.8 * losses[0]

    config = read_json(os.path.join(a, "config.json"))
    assert config["args"]["optimizer"] == "amsgrad" and config["args"]["lr"] == 1e-4
    assert config["args"]["steps"] == 20 and config["args"]["eps"] == 1e-8
    for name in ("jax", "optax", "flax"):
        assert config["versions"][name] == metadata.version(name), name
    assert config["versions"]["adam_jax"] == adam_jax.__version__
    assert config["device"]["platform"] == jax.default_backend()

    summary = read_json(os.path.join(a, "summary.json"))
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert summary["final_loss"] == losses[-1]
    assert summary["steps_per_s"] > 0 and summary["wall_s"] > 0 and summary["compile_s"] > 0

    with open(os.path.join(a, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert checkpoint_steps(a) == [10, 15, 20]  # every 5 steps, the newest 3 kept


def test_seed_resume_is_bitwise(seed_runs):
    a, b, b_first = seed_runs
    assert [r["step"] for r in b_first] == list(range(1, 11))
    assert metrics_rows(b) == metrics_rows(
        a
    )  # the seed task has no evaluation rows: every line equal
    assert read_json(os.path.join(b, "config.json"))["args"]["steps"] == 20
    assert checkpoint_steps(b) == [10, 15, 20]


def test_chunk_length_does_not_change_results(seed_runs, tmp_path):
    a, _, _ = seed_runs
    assert run("--steps", 20, "--out", tmp_path / "c", "--log-every", 3) == 0
    assert metrics_rows(tmp_path / "c") == metrics_rows(a)


def _numpy_seed_losses(saved, steps, lr=1e-4, b1=0.9, b2=0.999, eps=1e-8):
    """The seed's MLP and PyTorch's AMSGrad, in float64 NumPy from the equations."""
    x, y = saved["x"], saved["y"]
    p = {k: saved[k].copy() for k in ("w1", "b1", "w2", "b2")}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(w) for k, w in p.items()}
    v_max = {k: np.zeros_like(w) for k, w in p.items()}
    losses = []
    for t in range(1, steps + 1):
        z = x @ p["w1"].T + p["b1"]
        h = np.maximum(z, 0.0)
        pred = h @ p["w2"].T + p["b2"]
        losses.append(np.sum((pred - y) ** 2))
        d_pred = 2.0 * (pred - y)
        d_z = (d_pred @ p["w2"]) * (z > 0)
        g = {"w2": d_pred.T @ h, "b2": d_pred.sum(0), "w1": d_z.T @ x, "b1": d_z.sum(0)}
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            v_max[k] = np.maximum(v_max[k], v[k])
            denom = np.sqrt(v_max[k] / (1 - b2**t)) + eps
            p[k] = p[k] - lr * (m[k] / (1 - b1**t)) / denom
    return np.array(losses)


def test_seed_float64_matches_numpy_amsgrad(tmp_path):
    rng = np.random.default_rng(7)
    bound1, bound2 = 1 / math.sqrt(1000), 1 / math.sqrt(100)
    saved = {
        "x": rng.normal(size=(64, 1000)),
        "y": rng.normal(size=(64, 10)),
        "w1": rng.uniform(-bound1, bound1, (100, 1000)),
        "b1": rng.uniform(-bound1, bound1, 100),
        "w2": rng.uniform(-bound2, bound2, (10, 100)),
        "b2": rng.uniform(-bound2, bound2, 10),
    }
    np.savez(tmp_path / "seed.npz", **saved)
    out = tmp_path / "run"
    assert run("--init-from", tmp_path / "seed.npz", "--steps", 8, "--out", out) == 0
    config = read_json(out / "config.json")
    assert config["args"]["dtype"] == "float64"  # taken from the file
    ours = np.array([r["loss"] for r in metrics_rows(out)])
    np.testing.assert_allclose(ours, _numpy_seed_losses(saved, 8), rtol=1e-10, atol=0)


def test_warmup_cosine_learning_rate(tmp_path):
    peak, steps, warmup = 1e-3, 20, 5
    argv = ["--lr", peak, "--steps", steps, "--schedule", "warmup-cosine", "--warmup-steps", warmup]
    assert run(*argv, "--out", tmp_path / "run") == 0
    count = np.arange(steps)  # step t uses the schedule at count t - 1, as optax does
    cosine = 0.5 * peak * (1 + np.cos(np.pi * (count - warmup) / (steps - warmup)))
    expected = np.where(count < warmup, peak * count / warmup, cosine)
    logged = np.array([r["lr"] for r in metrics_rows(tmp_path / "run")])
    np.testing.assert_allclose(logged, expected, rtol=1e-6, atol=1e-6 * peak)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_seed_trains_in_16_bit_compute(tmp_path, dtype):
    assert run("--compute-dtype", dtype, "--steps", 200, "--out", tmp_path / "run") == 0
    losses = np.array([r["loss"] for r in metrics_rows(tmp_path / "run")])
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.01 * losses[0]
    assert read_json(tmp_path / "run" / "config.json")["args"]["param_dtype"] == "float32"


def test_16_bit_params_stress_mode(tmp_path):
    argv = ["--param-dtype", "bfloat16", "--mu-dtype", "bfloat16", "--nu-dtype", "float32"]
    assert run(*argv, "--steps", 30, "--out", tmp_path / "run") == 0
    losses = np.array([r["loss"] for r in metrics_rows(tmp_path / "run")])
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    args = read_json(tmp_path / "run" / "config.json")["args"]
    assert args["compute_dtype"] == "bfloat16"  # follows the params


def test_adam_atan2_logs_no_epsilon_metric(tmp_path):
    assert run("--optimizer", "adam_atan2", "--steps", 5, "--out", tmp_path / "run") == 0
    metrics = metrics_rows(tmp_path / "run")
    assert all(set(r) == {"step", "loss", "lr"} for r in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]


def test_default_out_is_runs_task_timestamp(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run("--steps", 3, "--init", "flax") == 0
    (out,) = os.listdir(tmp_path / "runs")
    assert out.startswith("seed-")
    assert f"run written to {os.path.join('runs', out)}" in capsys.readouterr().out
    losses = [r["loss"] for r in metrics_rows(tmp_path / "runs" / out)]
    assert len(losses) == 3 and losses[2] < losses[0]


def test_nonfinite_run_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    # A peak learning rate of 1e5 overflows Adam's second moment within the warmup.
    out = tmp_path / "run"
    argv = ["--lr", 1e5, "--schedule", "warmup-cosine", "--warmup-steps", 100, "--steps", 200]
    assert run(*argv, "--log-every", 4, "--ckpt-every", 4, "--out", out) == 1
    err = capsys.readouterr().err
    assert "stopped" in err and "NaN or inf" in err
    summary = read_json(out / "summary.json")
    stopped_at = summary["steps"]
    assert summary["status"] != "completed" and stopped_at < 200
    assert max(checkpoint_steps(out)) == summary["checkpoint_step"] < stopped_at
    first = metrics_rows(out)
    # The kept checkpoint is good: resuming it one step reproduces that step bitwise.
    good = summary["checkpoint_step"]
    assert run("--resume", out, "--steps", good + 1) == 0
    assert metrics_rows(out) == first[: good + 1]


def test_nonfinite_loss_stops_at_that_step(tmp_path, capsys):
    # With lr 1e8 the first update makes the weights ~1e8: the next loss overflows float32.
    out = tmp_path / "run"
    assert run("--lr", 1e8, "--steps", 10, "--out", out) == 1
    assert "the loss is inf at step 2" in capsys.readouterr().err
    metrics = metrics_rows(out)
    assert [r["step"] for r in metrics] == [1, 2] and metrics[-1]["loss"] == math.inf
    summary = read_json(out / "summary.json")
    assert summary["steps"] == 2 and summary["checkpoint_step"] is None
    assert not os.path.exists(out / "checkpoints" / "2")


# --- the digits task ----------------------------------------------------------------
def test_digits_reaches_good_accuracy(tmp_path):
    out = tmp_path / "run"
    assert run("--task", "digits", "--steps", 400, "--log-every", 100, "--out", out) == 0
    metrics = metrics_rows(out)
    assert len(metrics) == 400
    evals = [r for r in metrics if "test_accuracy" in r]
    assert [r["step"] for r in evals] == [100, 200, 300, 400]
    assert [r["epoch"] for r in metrics[:23]] == [0] * 22 + [1]  # 1,438 // 64 = 22 batches
    summary = read_json(out / "summary.json")
    assert summary["test_accuracy"] == evals[-1]["test_accuracy"] >= 0.95
    assert summary["final_loss"] < 0.2 * metrics[0]["loss"]


def test_digits_resume_is_bitwise(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    flags = ["--task", "digits", "--log-every", 7, "--ckpt-every", 5]
    assert run(*flags, "--steps", 30, "--out", a) == 0
    assert run(*flags, "--steps", 12, "--out", b) == 0
    assert run("--resume", b, "--steps", 30) == 0
    straight, resumed = metrics_rows(a), metrics_rows(b)
    # B also evaluates at its stop, step 12; from step 13 on every line is equal.
    assert resumed[12:] == straight[12:]
    for r, s in zip(resumed[:12], straight[:12], strict=True):
        assert {k: r[k] for k in s} == s


# --- bad input: one line naming the flag, exit code 2, nothing written -----------------
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--task", "mnist"], "--task"),
        (["--optimizer", "sgd"], "--optimizer"),
        (["--convention", "jax"], "--convention"),
        (["--steps", "0"], "--steps"),
        (["--steps", "-5"], "--steps"),
        (["--steps", "ten"], "--steps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--task", "digits", "--batch-size", "5000"], "--batch-size"),
        (["--log-every", "0"], "--log-every"),
        (["--ckpt-every", "-1"], "--ckpt-every"),
        (["--lr", "-1e-3"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--b2", "1"], "--b2"),
        (["--eps", "1e-50"], "--eps"),
        (["--loss-scale", "0"], "--loss-scale"),
        (["--compute-dtype", "int8"], "--compute-dtype"),
        (["--schedule", "cosine", "--warmup-steps", "600"], "--warmup-steps"),
        (["--init-from", "no-such-file.npz"], "--init-from"),
        (["--task", "digits", "--init-from", "x.npz"], "--init-from"),
        (["--resume", "no-such-run"], "--resume"),
        (["--optimizer", "adam_atan2", "--eps", "1e-3"], "--eps"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(tmp_path)
    assert train.main(argv if "--resume" in argv else [*argv, "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "error" in err
    assert os.listdir(tmp_path) == []


def test_existing_out_needs_overwrite(tmp_path, capsys):
    empty, out = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    assert run("--steps", 2, "--out", empty) == 2
    assert os.listdir(empty) == []
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run("--steps", 2, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("argument --out") == 2
    assert snapshot(out) == {"notes.txt": b"mine"}
    assert run("--steps", 2, "--out", out, "--overwrite") == 0
    assert len(metrics_rows(out)) == 2 and (out / "notes.txt").exists()  # only the run's files go


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run("--steps", 4, "--ckpt-every", 2, "--out", out) == 0
    return out


@pytest.mark.parametrize(
    "damage",
    ["config_garbage", "config_missing", "checkpoints_missing", "checkpoint_corrupt", "new_flag"],
)
def test_bad_resume_exits_2_and_writes_nothing(finished_run, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    argv = ["--resume", out, "--steps", 8]
    if damage == "config_garbage":
        (out / "config.json").write_text("{not json")
    elif damage == "config_missing":
        (out / "config.json").unlink()
    elif damage == "checkpoints_missing":
        shutil.rmtree(out / "checkpoints")
    elif damage == "checkpoint_corrupt":  # every checkpoint: nothing to fall back to
        for dirpath, _, files in os.walk(out / "checkpoints"):
            for name in files:
                with open(os.path.join(dirpath, name), "wb") as f:
                    f.write(b"\0garbage")
    else:
        argv += ["--lr", "1e-2"]
    before = snapshot(out)
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert ("--lr" if damage == "new_flag" else "--resume") in err
    assert snapshot(out) == before


def test_resume_needs_more_steps(finished_run, capsys):
    before = snapshot(finished_run)
    assert run("--resume", finished_run, "--steps", 4) == 2
    assert "--steps" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_print_loss_prints_the_seeds_lines(tmp_path, capsys):
    out = tmp_path / "printed"
    assert run("--steps", 7, "--log-every", 3, "--print-loss", "--out", out) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()[:7]]
    assert [int(t) for t, _ in printed] == list(range(7))  # the seed counts t from 0
    assert [float(loss) for _, loss in printed] == [row["loss"] for row in metrics_rows(out)]


# --- --optimizer nadam ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("convention", "momentum_decay"), [("pytorch", None), ("keras", 0.5), ("optax", None)]
)
def test_nadam_is_adam_jax_nadam_with_the_same_flags(tmp_path, convention, momentum_decay):
    flags = ["--optimizer", "nadam", "--convention", convention, "--lr", 1e-3, "--b1", 0.8]
    flags += [] if momentum_decay is None else ["--momentum-decay", momentum_decay]
    assert run(*flags, "--steps", 6, "--log-every", 4, "--out", tmp_path / "run") == 0
    ours = [r["loss"] for r in metrics_rows(tmp_path / "run")]
    args = read_json(tmp_path / "run" / "config.json")["args"]
    assert (args["optimizer"], args["momentum_decay"]) == ("nadam", momentum_decay)

    config = argparse.Namespace(
        rng_seed=0, batch_size=64, dtype="float32", init="torch", init_from=None
    )
    problem = seed.make_problem(config, {"param_dtype": np.float32, "dtype": np.float32})
    opt = adam_jax.nadam(1e-3, b1=0.8, momentum_decay=momentum_decay, convention=convention)
    _, _, expected = full_batch_steps(problem, opt, 6)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    assert ours[-1] < ours[0]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--optimizer", "adam", "--momentum-decay", "0.004"], "--momentum-decay"),
        (["--optimizer", "nadam", "--momentum-decay", "-1"], "--momentum-decay"),
        (["--optimizer", "nadam", "--convention", "optax", "--momentum-decay", "1"], "optax"),
    ],
)
def test_nadam_flags_refused(tmp_path, capsys, argv, flag):
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
    assert not (tmp_path / "run").exists()
