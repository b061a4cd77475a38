"""The command line: bad input, sweeps loaded back as one frame, subcommands.

Most cases run `lossbench.cli.main` in this process (`cli_in_process`), sweeps with the basic
launcher included; the traceback goes through the console script (the joblib launcher's worker
processes: test_reliability's sweep with one bad value)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import cli, cli_in_process

from lossbench.analysis import load_run, load_sweep, run_dirs

FAST = ["trainer.progress=false", "trainer.save_params=false"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-1", "error: optimizer.lr=-1.0 is not allowed: a number > 0"),
        ("trainer.steps=0", "error: trainer.steps=0 is not allowed: a positive integer"),
        (
            "trainer.batch_size=5000",
            "error: trainer.batch_size=5000 is not allowed: null (full "
            "batch) or an integer in [1, 1438]",
        ),
        (
            "data=teacher loss=cross_entropy",  # data=teacher alone selects loss=mse
            "error: loss.name='cross_entropy' is not allowed: fits classification; "
            "losses for regression: [",
        ),
    ],
)
def test_bad_values_give_one_line_and_leave_no_run_dir(tmp_path, override, expected):
    result = cli_in_process(*override.split(), *FAST, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer=foo", "Could not find 'optimizer/foo'"),
        ("optimizer.lrr=0.1", "Could not override 'optimizer.lrr'"),  # adam has no lrr
        ("optimizer.momentum=0.9", "Could not override 'optimizer.momentum'"),
        ("optimizer.lr=abc", "Value 'abc' of type 'str' could not be converted to Float"),
    ],
)
def test_unknown_options_and_wrong_types_fail_at_compose(tmp_path, override, expected):
    result = cli_in_process(override, *FAST, cwd=tmp_path)
    assert result.returncode == 2  # a bad config, as a bad value (README: exit codes)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_full_error_shows_the_traceback(tmp_path):
    result = cli("optimizer.lr=-1", *FAST, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_a_four_run_sweep_loads_as_one_frame(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli_in_process(
        "-m",
        "optimizer=sgd,adam",
        "optimizer.lr=0.01,0.1",
        "probe=off",
        "trainer.steps=30",
        "trainer.log_every=10",
        "model.widths=[8]",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(run_dirs(sweep)) == 4
    frame = load_sweep(sweep)
    assert len(frame) == 4 * 4  # steps 0, 10, 20 and the last, 29
    runs = frame.groupby("run")[["optimizer.name", "optimizer.lr"]].first()
    assert sorted(map(tuple, runs.values.tolist())) == [
        ("adam", 0.01),
        ("adam", 0.1),
        ("sgd", 0.01),
        ("sgd", 0.1),
    ]
    assert (frame["model.widths"] == (8,)).all()
    assert (frame["status"] == "completed").all()
    for run in runs.index:
        single = load_run(sweep / run)
        rows = frame[frame.run == run].drop(columns="run").reset_index(drop=True)
        # the sweep frame unites every option's config keys (adam's b1, sgd's momentum): a
        # run's rows hold its own, the others are empty
        assert rows.drop(columns=single.columns).isna().all().all()
        rows = rows[single.columns]
        pd.testing.assert_frame_equal(rows, single, check_dtype=False)


def test_losses_subcommand_prints_the_property_table():
    result = cli_in_process("losses")
    assert result.returncode == 0
    for name in ("mse", "cross_entropy", "huber", "savage", "ctc", "triplet"):
        assert f"| {name} " in result.stdout


def test_readme_loss_table_matches_the_catalogue():
    from conftest import REPO

    from lossbench.cli import README_LOSS_COLUMNS
    from lossbench.losses import format_properties_table

    readme = (REPO / "README.md").read_text()
    assert format_properties_table(README_LOSS_COLUMNS).strip() in readme


def test_readme_opens_with_the_two_commands():
    from conftest import REPO

    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines() if line.strip()]
    assert lines[1].startswith("make run") and lines[2].startswith("make test")


def test_help_lists_the_subcommands_then_hydras_groups():
    from lossbench.cli import SUBCOMMANDS

    result = cli_in_process("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"lossbench {name} " in result.stdout
    assert "== Configuration groups ==" in result.stdout and "optimizer: " in result.stdout
    for name in SUBCOMMANDS:
        sub = cli_in_process(name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: lossbench {name}")
