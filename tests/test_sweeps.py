"""Sweeps: the report, final rows per seed, thread limits for local jobs, the SLURM preset and
the submitit path (requeue and resume) on this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, cli_in_process, run_overrides

from lossbench.analysis import final_rows, load_sweep
from lossbench.launchers.cluster import should_resume
from lossbench.launchers.threads import SINGLE_THREAD_XLA, thread_env, threads_per_job
from lossbench.report import FIGURE_FILE, REPORT_FILE, by_value, report_table, write_report

TINY = ["model.widths=[8]", "probe=off", "trainer.steps=20", *FAST]
LRS = (0.02, 0.05, 0.2)


# the tests of the `sweep` fixture run on one xdist worker (`--dist loadgroup`): built once
SWEEP_GROUP = pytest.mark.xdist_group("sweep")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Three jobs (optimizer.lr) of two seeds each, sharpness probed every 10 steps, written
    where a multirun would put them: SWEEP/0, SWEEP/1, SWEEP/2."""
    root = tmp_path_factory.mktemp("sweep")
    for job, lr in enumerate(LRS):
        overrides = [
            "model.widths=[8]",
            "optimizer=sgd",
            f"optimizer.lr={lr}",
            "trainer.steps=20",
            "trainer.seeds=2",
            "probe.every=10",
            "probe.lanczos_steps=4",
        ]
        run_overrides(root, overrides, name=str(job))
    return root


def _markdown_rows(text: str, header_start: str) -> list[dict]:
    """The rows of the markdown table whose header starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


@SWEEP_GROUP
def test_the_report_table_rows_are_the_runs_summaries(sweep):
    path = write_report(sweep)
    assert path == sweep / REPORT_FILE
    rows = _markdown_rows(path.read_text(), "| run |")
    assert [r["run"] for r in rows] == ["0", "1", "2"]
    for row, lr in zip(rows, LRS, strict=True):
        summary = json.loads((sweep / row["run"] / "summary.json").read_text())
        probes = pd.read_parquet(sweep / row["run"] / "probes.parquet")
        last = probes[probes.step == probes.step.max()]
        assert float(row["optimizer.lr"]) == lr
        assert row["status"] == summary["status"] == "completed"
        assert int(row["steps_completed"]) == 20
        assert float(row["final_loss"]) == pytest.approx(summary["final_loss"], rel=1e-3)
        assert float(row["final_test_accuracy"]) == pytest.approx(
            summary["final_test_accuracy"], rel=1e-3
        )
        # the last probe's lambda_max, averaged over the run's seeds (not the last seed's)
        assert len(last) == 2 and last.lambda_max.nunique() == 2
        assert float(row["lambda_max"]) == pytest.approx(last.lambda_max.mean(), rel=1e-3)
        assert row["final_regime"] == next(iter(summary["final_regime"].values()))
    figure = sweep / FIGURE_FILE
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@SWEEP_GROUP
def test_the_report_gives_final_figures_against_each_swept_value(sweep):
    table = report_table(sweep)
    assert [c for c in table.columns[:2]] == ["run", "optimizer.lr"]  # the only swept key
    per_lr = by_value(table, "optimizer.lr")
    assert list(per_lr.index) == [str(lr) for lr in sorted(LRS)]
    for lr in LRS:
        job = LRS.index(lr)
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert per_lr.loc[str(lr), "jobs"] == 1
        assert per_lr.loc[str(lr), "final_loss mean"] == pytest.approx(summary["final_loss"])
    section = _markdown_rows(write_report(sweep).read_text(), "| optimizer.lr |")
    assert [float(r["optimizer.lr"]) for r in section] == sorted(LRS)


@SWEEP_GROUP
def test_report_subcommand_writes_next_to_the_sweep(sweep, tmp_path):
    (sweep / REPORT_FILE).unlink(missing_ok=True)
    result = cli_in_process("report", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (sweep / REPORT_FILE).exists() and (sweep / FIGURE_FILE).exists()
    assert re.search(r"^2\s+completed\s+20\s", result.stdout, re.M)
    assert cli_in_process("report", str(tmp_path / "nothing"), cwd=tmp_path).returncode == 2


@SWEEP_GROUP
def test_final_rows_give_every_seeds_last_step(sweep):
    frame = load_sweep(sweep)
    final = final_rows(frame)
    assert len(final) == len(LRS) * 2
    assert set(zip(final.run, final.seed, strict=True)) == {
        (str(j), s) for j in range(len(LRS)) for s in (0, 1)
    }
    assert (final.step == 19).all()
    for row in final.itertuples():
        metrics = pd.read_parquet(sweep / row.run / "metrics.parquet")
        expected = metrics[(metrics.seed == row.seed) & (metrics.step == 19)].test_accuracy
        assert row.test_accuracy == pytest.approx(float(expected.iloc[0]))
    # the README's example: the mean over seeds of each seed's final value
    per_lr = final.groupby("optimizer.lr").test_accuracy.mean()
    last = frame.groupby("optimizer.lr").test_accuracy.last()  # what the README had
    for job, lr in enumerate(LRS):
        metrics = pd.read_parquet(sweep / str(job) / "metrics.parquet")
        seeds = metrics[metrics.step == 19].sort_values("seed").test_accuracy.to_numpy()
        assert per_lr[lr] == pytest.approx(seeds.mean())
        assert last[lr] == pytest.approx(seeds[-1])  # the last seed's alone
    assert not np.allclose(per_lr.to_numpy(), last.to_numpy())


def test_thread_limits_for_parallel_local_jobs():
    assert threads_per_job(2, 8, cores=2) == 1
    assert threads_per_job(-1, 8, cores=2) == 1
    assert threads_per_job(2, 1, cores=4) == 4  # one job alone has every core
    assert threads_per_job(2, 8, cores=16) == 8
    env = thread_env(1, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert env["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        *SINGLE_THREAD_XLA,
    ]
    # XLA reads no flag after a token that does not start with "--"
    assert all(flag.startswith("--") for flag in env["XLA_FLAGS"].split()), env["XLA_FLAGS"]
    assert env["OMP_NUM_THREADS"] == "1"
    assert "XLA_FLAGS" not in thread_env(4, {})  # XLA's flags can only make it single-threaded
    assert "OMP_NUM_THREADS" not in thread_env(1, {"OMP_NUM_THREADS": "3"})  # the user's wins


def test_should_resume_an_unfinished_run_with_a_checkpoint(tmp_path):
    assert not should_resume(tmp_path)
    for status, checkpoint, expected in [
        ("interrupted", True, True),
        ("running", True, True),  # died without a word
        ("interrupted", False, False),  # nothing to go on from: start again
        ("completed", True, False),
        ("failed", True, False),
    ]:
        run = tmp_path / f"{status}-{checkpoint}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"status": status}))
        if checkpoint:
            (run / "checkpoint" / "20").mkdir(parents=True)
        assert should_resume(run) is expected, (status, checkpoint)


class _Submitted(Exception):
    """Raised instead of submitting: carries the executor the launcher built."""


def test_the_slurm_preset_makes_the_batch_script_jax_needs(tmp_path, monkeypatch):
    """The preset's keys reach sbatch through the launcher: a GPU per task, requeue, USR2
    before the time limit, thread limits and no GPU preallocation before Python starts."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from lossbench.api import CONFIG_DIR
    from lossbench.schema import register_configs

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")

    def submit(executor, *args):
        raise _Submitted(executor)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    register_configs([])
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "model.widths=[8]"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.job.name = "lossbench"
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher.env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["optimizer.lr=0.1"]], initial_job_idx=0)
    executor = submitted.value.args[0]
    script = executor._executor._make_submission_file_text("python -m submitit", "uid")
    lines = script.splitlines()
    for line in [
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=240",
        "export XLA_PYTHON_CLIENT_PREALLOCATE=false",
        "export OMP_NUM_THREADS=4",
    ]:
        assert line in lines, (line, script)
    assert executor._executor.max_num_timeout == 20


@pytest.mark.slow
def test_submitit_local_sweep_requeues_a_signalled_job_and_resumes_it(tmp_path):
    """Two jobs through submitit (hydra/launcher=slurm_local, the SLURM preset's path): job 0
    gets SIGUSR2 (what SLURM sends before the time limit) after its first chunk, stops at a
    chunk boundary with a checkpoint, is requeued and resumes; both complete, the sweep
    prints its table and `lossbench report` reads it."""
    sweep = tmp_path / "sweep"
    steps = 4000
    args = [
        "-m",
        "optimizer.lr=0.1,0.01",
        # a two-parameter bowl: each job's process loads no data set and compiles a small
        # program; its 40 chunks still take far longer than the poll below (0.05 s)
        "model=quadratic",
        "data=none",
        "init.value=1.0",
        "probe=off",
        f"trainer.steps={steps}",
        "trainer.log_every=100",
        "trainer.checkpoint_every=0",
        *FAST,
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=slurm_local",
    ]
    exe = Path(sys.executable).parent / "lossbench"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    with subprocess.Popen(
        [str(exe), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        summary_path = sweep / "0" / "summary.json"
        deadline = time.time() + 1200
        while time.time() < deadline:
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            if summary.get("steps_completed", 0) > 0:
                os.kill(summary["pid"], signal.SIGUSR2)
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("job 0 did not finish a chunk")
        out, err = proc.communicate(timeout=1800)  # minutes on a loaded 2-core machine
    assert proc.returncode == 0, err.decode()[-3000:]
    summaries = [json.loads((sweep / str(j) / "summary.json").read_text()) for j in (0, 1)]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["steps_completed"] for s in summaries] == [steps, steps]
    assert 0 < summaries[0]["resumed_from"] < steps  # stopped, requeued, resumed
    assert "resumed_from" not in summaries[1]
    assert "trainer.resume=true" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    metrics = pd.read_parquet(sweep / "0" / "metrics.parquet")
    assert metrics.step.is_unique and metrics.step.is_monotonic_increasing  # nothing twice
    assert list(metrics.step) == [*range(0, steps, 100), steps - 1]
    table = err.decode()
    for job in (0, 1):
        assert re.search(rf"^{job}\s+completed\s+{steps}\s", table, re.M), table[-2000:]
    assert f"sweep dir: {sweep}" in table
    assert cli_in_process("report", str(sweep), cwd=tmp_path).returncode == 0
    rows = _markdown_rows((sweep / REPORT_FILE).read_text(), "| run |")
    assert [(r["run"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
