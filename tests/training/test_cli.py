"""train.py's command line under fuzzed argv: every bad input is one line and exit 2."""

import pytest

pytest.importorskip("flax", reason="adam_jax.training needs the train extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adam_jax.training import cli, config, flags, tasks  # noqa: E402

FLAGS = sorted([*map(config.flag, config.SETTINGS), "--resume"])
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "7",
            "0.5",
            "1e-50",
            "1e308",
            "nan",
            "inf",
            "-inf",
            "abc",
            "",
            "=",
            str(2**31),
            "9" * 30,
            "float16",
            "int8",
            "adam",
            "adam_atan2",
            "digits",
            "lm",
            "torch",
            "cosine",
            "warmup-cosine",
            "optax",
            "no-such.npz",
            "--steps",
        ]
    ),
    st.text(max_size=4),
)
ARGV = st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=5).map(
    lambda pairs: [x for flag, value in pairs for x in (flag, value)]
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(argv=ARGV)
def test_fuzzed_argv_is_one_line_exit_2(tmp_path, capsys, argv):
    # An existing --out (a file) makes every otherwise valid command fail too, after all the
    # flags are checked: nothing trains, and every exit must be a one-line exit 2.
    taken = tmp_path / "taken"
    taken.write_text("")
    code = cli.main([*argv, "--out", str(taken)])
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: "), (argv, err)
    assert taken.read_text() == ""


def test_help_lists_every_task(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: train.py")
    for name in tasks.TASKS:
        assert f"{name}:" in out


def test_every_setting_is_one_flag_and_every_flag_one_setting():
    given, resume_dir = flags.parse([])
    assert list(given) == list(config.SETTINGS) and resume_dir is None
    assert set(given.values()) == {None}  # unset: config.resolve fills in the defaults
    resolved = config.resolve({"out": "never-written", "task": "digits"})
    assert resolved.log_every == tasks.TASKS["digits"].defaults["log_every"]
    assert resolved.rng_seed == 0 and resolved.ckpt_every == config.DEFAULTS["ckpt_every"]
