"""Never lose, mix or silently accept (issue 8): run directories, crash-safe files, signals,
resume, isolated sweep jobs, exit codes. Each case of the issue's "What was seen" is a test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import cli, cli_in_process, run_overrides

from lossbench.analysis import load_run, load_summary, load_sweep, sweep_table
from lossbench.records import Divergence

FAST = ["trainer.progress=false", "trainer.save_params=false"]
TINY = ["model.widths=[8]", "probe=off", "trainer.steps=20", *FAST]
# A run on a two-parameter bowl, for tests where the model does not matter: no data set to
# load (the digits import scikit-learn: seconds a process) and a program that compiles in a
# fraction of the MLP's time.
SURFACE = ["model=quadratic", "data=none", "init.value=1.0", "probe=off", "trainer.steps=20"]
SURFACE = [*SURFACE, *FAST]


def _user_project(root: Path) -> dict[str, bytes]:
    """A directory holding a researcher's own files; returns their contents."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("my notes")
    (root / "data").mkdir()
    (root / "data" / "x.csv").write_text("1,2,3")
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_error_line(result, starts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    assert "Traceback" not in result.stderr


# 1. A rejected value never deletes a directory the user already had ----------------------


@pytest.mark.parametrize("extra", [["trainer.steps=0"], []])
def test_a_directory_with_user_files_is_refused_and_left_alone(tmp_path, extra):
    project = tmp_path / "some" / "project"
    before = _user_project(project)
    result = cli_in_process("hydra.run.dir=.", *extra, *TINY, cwd=project)
    assert result.returncode == 2
    _one_error_line(result, "error: hydra.run.dir=")
    assert "holds 2 entries: data, notes.txt" in result.stderr
    assert _snapshot(project) == before
    assert sorted(p.name for p in project.iterdir()) == ["data", "notes.txt"]


def test_a_bad_value_into_an_earlier_run_keeps_the_earlier_run(tmp_path):
    earlier = tmp_path / "earlier"
    assert cli_in_process(f"hydra.run.dir={earlier}", *SURFACE, cwd=tmp_path).returncode == 0
    before = _snapshot(earlier)
    result = cli_in_process(f"hydra.run.dir={earlier}", "optimizer.lr=-1", *SURFACE, cwd=tmp_path)
    assert result.returncode == 2
    assert _snapshot(earlier) == before


def test_a_bad_value_removes_only_what_this_invocation_created(tmp_path):
    empty = tmp_path / "made_by_user"
    empty.mkdir()
    result = cli_in_process(f"hydra.run.dir={empty}", "optimizer.lr=-1", *TINY, cwd=tmp_path)
    _one_error_line(result, "error: optimizer.lr=-1.0 is not allowed")
    assert empty.is_dir() and not any(empty.iterdir())  # the user's folder stays, emptied
    keep = tmp_path / "parent"
    keep.mkdir()
    result = cli_in_process(f"hydra.run.dir={keep}/a/b", "optimizer.lr=-1", *TINY, cwd=tmp_path)
    assert result.returncode == 2
    assert keep.is_dir() and not (keep / "a").exists()  # created parents go, the old one stays


# 2. A reused run directory never mixes two runs -------------------------------------------


@pytest.mark.slow
def test_a_second_run_into_a_used_directory_is_refused_or_moves_the_first_aside(tmp_path):
    run = tmp_path / "run"
    first = [
        *SURFACE,
        "probe=full",  # every probe file (probes.parquet, spectra.npz) to move aside
        "probe.every=10",
        "probe.lanczos_steps=10",
        "probe.density_steps=10",
        "probe.per_layer=false",  # a Lanczos program per layer to compile, no file of its own
    ]
    assert cli_in_process(f"hydra.run.dir={run}", *first, cwd=tmp_path).returncode == 0
    assert (run / "probes.parquet").exists() and (run / "spectra.npz").exists()
    before = _snapshot(run)
    refused = cli_in_process(f"hydra.run.dir={run}", *SURFACE, cwd=tmp_path)
    assert refused.returncode == 2 and "trainer.overwrite=true" in refused.stderr
    assert _snapshot(run) == before
    moved = cli_in_process(f"hydra.run.dir={run}", "trainer.overwrite=true", *SURFACE, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    previous = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(previous) == 1
    assert _snapshot(previous[0]) == before  # every byte of the first run, moved
    assert not (run / "probes.parquet").exists() and not (run / "spectra.npz").exists()
    assert load_run(run, "probes").empty
    assert load_summary(run)["config"]["probe"]["name"] == "off"


def test_the_python_api_refuses_a_used_directory(tmp_path):
    from lossbench.errors import ConfigError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("x")
    with pytest.raises(ConfigError, match="run_dir="):
        run_overrides(tmp_path, TINY)
    assert (tmp_path / "run" / "mine.txt").read_text() == "x"


# 3. Crash-safe files, signals, resume ------------------------------------------------------

# Long enough that a signal or a kill lands mid-run on a loaded machine (2000 steps take
# seconds), short enough that the three runs of the kill test stay cheap. Minibatches of the
# teacher's data (made by numpy: the digits would import scikit-learn in every process).
LONG_STEPS = 2000
LONG = [
    "model.widths=[8]",
    "data=teacher",
    f"trainer.steps={LONG_STEPS}",
    "trainer.log_every=10",
    "trainer.chunk=50",
    "probe=sharpness",
    "probe.every=50",
    "probe.lanczos_steps=8",
    "trainer.checkpoint_every=2",
    "trainer.batch_size=64",
    "trainer.progress=false",
]


# The runs of LONG on one xdist worker, one after another: the first compiles its programs
# into the session's persistent cache, the later processes load them (run side by side, each
# compiled the same programs at the same time).
LONG_GROUP = pytest.mark.xdist_group("long_run")


def _start(run: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "lossbench"
    return subprocess.Popen(
        [str(exe), f"hydra.run.dir={run}", *LONG, *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_steps(run: Path, steps: int, proc: subprocess.Popen, timeout=300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads((run / "summary.json").read_text())["steps_completed"] >= steps:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {steps} steps")


def _table_bytes(run: Path) -> dict[str, bytes]:
    return {
        n: (run / n).read_bytes() for n in ("metrics.parquet", "probes.parquet", "events.parquet")
    }


@pytest.mark.slow
@LONG_GROUP
def test_kill_9_leaves_readable_files_and_resume_gives_identical_files(tmp_path):
    reference = tmp_path / "reference"  # no process under test: run in this one
    done = cli_in_process(f"hydra.run.dir={reference}", *LONG, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    proc = _start(killed, tmp_path)
    # a random chunk after the first checkpoint (step 100) is written: a chunk is recorded
    # (summary.json) before the checkpoint of its step, so a kill at step 100 may find none
    kill_at = int(np.random.default_rng().integers(3, 30)) * 50
    _wait_for_steps(killed, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for name in ("metrics.parquet", "probes.parquet"):
        table = pq.read_table(killed / name)  # readable, however the kill fell
        assert table.num_rows > 0
    assert load_summary(killed)["status"] == "crashed"
    plotted = cli_in_process("plot", str(killed), cwd=tmp_path)
    assert plotted.returncode == 0, plotted.stderr  # the figures of a crashed run draw
    sweep = load_sweep(tmp_path)
    assert set(sweep.groupby("run").status.first()) == {"completed", "crashed"}
    resumed = cli_in_process("resume", str(killed), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_summary(killed)["status"] == "completed"
    assert load_summary(killed)["resumed_from"] >= 100
    assert _table_bytes(killed) == _table_bytes(reference)


@pytest.mark.slow
@LONG_GROUP
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_chunk_boundary_with_a_checkpoint_and_resumes(tmp_path, signum, code):
    run = tmp_path / "run"
    proc = _start(run, tmp_path)
    _wait_for_steps(run, 200, proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    summary = load_summary(run)
    assert summary["status"] == "interrupted" and summary["signal"] == signum.name
    stopped = summary["steps_completed"]
    assert stopped % 50 == 0 and (run / "checkpoint" / str(stopped)).is_dir()
    assert pq.read_table(run / "metrics.parquet").column("step").to_numpy().max() == stopped - 10
    if signum == signal.SIGTERM:
        again = cli_in_process(f"hydra.run.dir={run}", *LONG, "trainer.resume=true", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        summary = load_summary(run)
        assert summary["status"] == "completed" and summary["resumed_from"] == stopped
        steps = pq.read_table(run / "metrics.parquet").column("step").to_numpy()
        np.testing.assert_array_equal(steps, [*range(0, LONG_STEPS, 10), LONG_STEPS - 1])


def test_resume_refuses_a_different_config_naming_the_keys(tmp_path):
    run = tmp_path / "run"
    assert cli_in_process(f"hydra.run.dir={run}", *SURFACE, cwd=tmp_path).returncode == 0
    result = cli_in_process(
        f"hydra.run.dir={run}", *SURFACE, "optimizer.lr=0.5", "trainer.resume=true", cwd=tmp_path
    )
    assert result.returncode == 2
    _one_error_line(result, "error: trainer.resume=True is not allowed: the stored run's config")
    assert "optimizer.lr (0.001 -> 0.5)" in result.stderr


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path):
    none = tmp_path / "none"
    result = cli_in_process(f"hydra.run.dir={none}", "trainer.resume=true", *TINY, cwd=tmp_path)
    assert result.returncode == 2
    _one_error_line(result, "error: trainer.resume=True is not allowed")


# 4. One bad job does not end a sweep -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_with_one_bad_value_completes_the_others(tmp_path, launcher):
    """With joblib, the jobs run in worker processes of the console script: the launcher
    pickles the task function, which must hold no live JAX objects. (Not in-process: joblib's
    launcher run from the test process left the optimizer schemas unstorable for the tests
    after it on that worker.)"""
    sweep = tmp_path / "sweep"
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    run = cli if launcher == "joblib" else cli_in_process  # joblib: worker processes
    result = run(
        "-m", "optimizer.lr=0.1,-1,0.01", f"hydra.sweep.dir={sweep}", *extra, *SURFACE, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    table = sweep_table(sweep)
    assert table.status.tolist() == ["completed", "failed", "completed"]
    assert table.error[1].startswith("optimizer.lr=-1.0 is not allowed")
    for line in ("run", "completed", "failed", str(sweep)):
        assert line in result.stderr  # the end-of-sweep table
    frame = load_sweep(sweep)
    assert frame.groupby("run").status.first().tolist() == ["completed", "failed", "completed"]
    assert frame[frame.run == "1"]["optimizer.lr"].tolist() == [-1.0]
    assert sorted(frame[frame.status == "completed"]["optimizer.lr"].unique()) == [0.01, 0.1]


def test_load_sweep_names_a_damaged_file_and_goes_on(tmp_path):
    for name in ("0", "1"):
        run_overrides(tmp_path / "sweep", SURFACE, name=name)
    (tmp_path / "sweep" / "1" / "metrics.parquet").write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="metrics.parquet"):
        frame = load_sweep(tmp_path / "sweep")
    assert frame.groupby("run").size().to_dict() == {"0": 3, "1": 1}  # steps 0, 10, 19
    assert "metrics.parquet" in frame[frame.run == "1"].warning.iloc[0]


# 5. Silent acceptance ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+optimizer.lrr=0.1", "error: optimizer.lrr=0.1 is not allowed: a key of optimizer: "),
        ("+model._target_=mypkg.Net", "error: model._target_='mypkg.Net' is not allowed: a key"),
        ("+study_name=x", "error: study_name='x' is not allowed: a key of the config: "),
    ],
)
def test_keys_the_schema_does_not_have_are_refused(tmp_path, override, expected):
    result = cli_in_process(override, *TINY, cwd=tmp_path)
    assert result.returncode == 2
    _one_error_line(result, expected)
    assert not (tmp_path / "outputs").exists()


def test_one_lanczos_step_is_refused(tmp_path):
    result = cli_in_process(
        "probe=sharpness",
        "probe.lanczos_steps=1",
        "model.widths=[8]",
        "trainer.steps=20",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    _one_error_line(result, "error: probe.lanczos_steps=1 is not allowed: at least 2")


def test_probe_presets_fit_a_two_parameter_surface_exactly(tmp_path):
    """5x^2 - y^2 (a=5, b=1) has Hessian diag(10, -2): `probe=spectrum` (more steps than parameters)
    clamps to 2 and is exact."""
    summary, run = run_overrides(
        tmp_path,
        [
            "model=quadratic_saddle",
            "model.a=5",
            "data=none",
            "init=point",
            "init.value=[1.0,1.0]",
            "optimizer=gd",
            "optimizer.lr=0.01",
            "trainer.steps=20",
            "probe=spectrum",
            "probe.every=10",
        ],
    )
    probes = load_run(run, "probes")
    np.testing.assert_allclose(probes["lambda_max"], 10.0, rtol=1e-5)
    np.testing.assert_allclose(probes["lambda_min"], -2.0, rtol=1e-5)
    assert summary["warnings"] == []


def test_load_run_of_a_missing_or_foreign_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        load_run(tmp_path / "no" / "such" / "dir")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(tmp_path / "plain")


def test_a_loss_that_ends_far_above_its_start_is_diverged():
    divergence = Divergence(seeds=2, blowup=1e6, ratio=3.0)
    steps = np.arange(100)
    catapult = np.where((steps > 5) & (steps < 20), 138.0, 2.45 * np.exp(-steps / 10))
    grows = 2.45 + 0.1 * steps  # cross-entropy whose logits keep growing: 2.45 -> 12.35
    divergence.update(np.stack([catapult, grows]), 0)
    divergence.settle(100)
    assert divergence.step.tolist() == [-1, int(np.argmax(grows > 3 * 2.45))]


# Full-batch GD at a huge step on the digits MLP: this run and test_regimes.py's blow-up run
# differ only in the learning rate (a float, an input of the program): on one xdist worker the
# second reuses the first's compiled programs (`lossbench.programs`) instead of tracing them.
GD_BLOW_UP = [
    "optimizer=gd",
    "model.widths=[32]",
    "trainer.batch_size=null",
    "trainer.steps=200",
    "probe.every=20",
]


@pytest.mark.slow
@pytest.mark.xdist_group("gd_blow_up")
def test_gd_at_a_huge_step_with_cross_entropy_is_diverged(tmp_path):
    """Tanh saturates, so cross-entropy never overflows: the loss jumps from 2.4 to a few
    hundred and stays there. That is divergence, though every number is finite."""
    summary, run = run_overrides(tmp_path, [*GD_BLOW_UP, "optimizer.lr=3000.0"])
    losses = load_run(run).loss
    assert np.isfinite(losses).all() and losses.iloc[-1] > 30 * losses.iloc[0]
    assert summary["status"] == "diverged" and summary["diverged_at"] == [1]


def test_diagnose_checks_thresholds_and_writes_beside_the_run(tmp_path):
    run = tmp_path / "run"
    assert cli_in_process(f"hydra.run.dir={run}", *SURFACE, cwd=tmp_path).returncode == 0
    before = _snapshot(run)
    bad = cli_in_process("diagnose", str(run), "detect.grad_tol=-5", cwd=tmp_path)
    assert bad.returncode == 2
    _one_error_line(bad, "error: detect.grad_tol=-5.0 is not allowed: a number > 0")
    assert _snapshot(run) == before
    good = cli_in_process("diagnose", str(run), "detect.grad_tol=1e-2", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert _snapshot(run).items() >= before.items()  # the run's own files are untouched
    (out,) = [p for p in run.iterdir() if p.name.startswith("diagnosis-")]
    assert json.loads((out / "summary.json").read_text())["detect"]["grad_tol"] == 1e-2
    assert (out / "events.parquet").exists()


def test_a_bad_threshold_is_refused_before_training(tmp_path):
    result = cli_in_process("detect.window=0", *TINY, cwd=tmp_path)
    assert result.returncode == 2
    _one_error_line(result, "error: detect.window=0 is not allowed")
    assert not (tmp_path / "outputs").exists()


# 6. Exit codes -----------------------------------------------------------------------------


def test_exit_codes_follow_the_table(tmp_path):
    # the console script's own exit status, for a Hydra composition error and a completed run
    assert cli("optimizer=foo", *TINY, cwd=tmp_path).returncode == 2
    assert cli(*SURFACE, cwd=tmp_path).returncode == 0
    assert cli_in_process("optimizer.lr=abc", *TINY, cwd=tmp_path).returncode == 2
    assert cli_in_process("optimizer.lr=-1", *TINY, cwd=tmp_path).returncode == 2


def test_an_exception_in_a_run_exits_1_and_records_failed(tmp_path, monkeypatch):
    """A failure that is not a config error: status `failed`, the reason, exit code 1."""
    import lossbench.runner  # noqa: F401 (and the modules it imports)

    def boom(*args, **kwargs):
        raise RuntimeError("boom at chunk")

    # the training loop raises: every lossbench module holding `metric_rows` gets `boom`
    for name, module in list(sys.modules.items()):
        if name.startswith("lossbench") and hasattr(module, "metric_rows"):
            monkeypatch.setattr(module, "metric_rows", boom)
    run = tmp_path / "run"
    result = cli_in_process(f"hydra.run.dir={run}", *SURFACE, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    _one_error_line(result, "error: RuntimeError: boom at chunk")
    summary = load_summary(run)
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: boom at chunk"


# 7. Step counts that are not multiples of log_every, probe.every or chunk --------------------


@pytest.mark.parametrize(
    ("schedule", "steps"), [("constant", 105), ("cosine", 5), ("warmup_cosine", 105), ("step", 5)]
)
def test_step_counts_off_the_grid_train_and_log(tmp_path, schedule, steps):
    summary, run = run_overrides(
        tmp_path,
        [
            *SURFACE[:3],  # the step grid does not depend on the model
            f"trainer.steps={steps}",
            "trainer.log_every=10",
            "trainer.chunk=30",
            "probe=sharpness",
            "probe.every=30",
            "probe.lanczos_steps=4",
            f"optimizer.schedule.name={schedule}",
            "optimizer.schedule.warmup_steps=2",
            "optimizer.schedule.boundaries=[3]",
        ],
    )
    assert summary["status"] == "completed" and summary["steps_completed"] == steps
    metrics = load_run(run)
    expected = [
        s for start in range(0, steps, 30) for s in range(start, min(start + 30, steps), 10)
    ]
    assert metrics.step.tolist() == [*expected, steps - 1]  # the final step is always logged
    assert metrics.lr.notna().all()
    assert load_run(run, "probes").step.tolist() == [0, *range(30, steps, 30), steps]


def test_files_are_published_whole_at_every_moment(tmp_path):
    """The writer publishes by rename: no partial file, no temporary left behind."""
    from lossbench.results import RunWriter

    writer = RunWriter(tmp_path)
    for chunk in range(3):
        writer.metrics.append(pd.DataFrame({"step": [chunk * 10], "seed": [0], "loss": [1.0]}))
        writer.flush()
        assert pq.read_table(tmp_path / "metrics.parquet").num_rows == chunk + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.parquet"]
