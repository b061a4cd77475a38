"""Fused sweeps (`hydra/launcher=fused`): jobs that differ in float optimizer / init values
and seeds train as one program, each writing the files of a run of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, cli_in_process, compose_config

import lossbench
from lossbench.launchers.fused import batches, groups, run_fused
from lossbench.runner import prepare

BASE = [
    *FAST,
    "model.widths=[8]",
    "optimizer=sgd",
    "optimizer.momentum=0.9",
    "trainer.steps=20",
    "trainer.seeds=2",
    "probe.every=10",
    "probe.lanczos_steps=4",
    "trainer.checkpoint_every=1",  # a checkpoint at step 10
]
# lr 30 diverges (NaN within the run): its rows must not touch the others
JOBS = [
    ["optimizer.lr=0.02", "init.scale=0.5"],
    ["optimizer.lr=0.05", "init.scale=1.0", "trainer.seed=7"],
    ["optimizer.lr=30.0", "init.scale=1.0"],
]
# float32 rows of one vmapped program against a program of their own: the same arithmetic
# batched differently by XLA, rounding differs in the last bits and grows over 20 steps
RTOL, ATOL = 2e-4, 1e-6


def _configs(jobs):
    return [compose_config([*BASE, *job]) for job in jobs]


# the tests of the shared fixture on one xdist worker: it is built once (~35 s), not per worker
FIXTURE_GROUP = pytest.mark.xdist_group("fused_and_alone")
# tests whose sweeps run one program (BASE, optimizer.lr traced, 4 rows): on one worker, the
# second loads it from the persistent compilation cache
LR_PROGRAM_GROUP = pytest.mark.xdist_group("fused_lr_program")


@pytest.fixture(scope="module")
def fused_and_alone(tmp_path_factory):
    """The jobs fused (max_batch 4: two batches, padded to one size) and each run alone."""
    root = tmp_path_factory.mktemp("fused")
    fused_dirs = [root / "fused" / str(i) for i in range(len(JOBS))]
    alone_dirs = [root / "alone" / str(i) for i in range(len(JOBS))]
    log: list[str] = []
    summaries = run_fused(_configs(JOBS), fused_dirs, max_batch=4, log=log.append)
    alone = [lossbench.run(cfg, d) for cfg, d in zip(_configs(JOBS), alone_dirs, strict=True)]
    return summaries, alone, fused_dirs, alone_dirs, log


def _frame(run_dir: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / name)
    return frame.sort_values([c for c in ("step", "seed") if c in frame]).reset_index(drop=True)


def _assert_same_frames(f_frame: pd.DataFrame, a_frame: pd.DataFrame, where: str) -> None:
    assert list(f_frame.columns) == list(a_frame.columns), where
    assert len(f_frame) == len(a_frame) > 0, where
    for column in f_frame.columns:
        if pd.api.types.is_numeric_dtype(a_frame[column]):
            np.testing.assert_allclose(
                f_frame[column], a_frame[column], rtol=RTOL, atol=ATOL, err_msg=f"{where} {column}"
            )
        else:
            assert f_frame[column].equals(a_frame[column]), f"{where} {column}"


@FIXTURE_GROUP
def test_fused_jobs_write_the_files_of_separate_runs(fused_and_alone):
    summaries, alone, fused_dirs, alone_dirs, log = fused_and_alone
    assert any("traced init.scale, optimizer.lr" in line for line in log), log
    assert any("padded to 4" in line for line in log), log
    pairs = zip(summaries, alone, fused_dirs, alone_dirs, strict=True)
    for job, (fused, single, f_dir, a_dir) in enumerate(pairs):
        assert sorted(p.name for p in f_dir.iterdir()) == sorted(p.name for p in a_dir.iterdir())
        for key in ("status", "seeds", "config"):
            assert fused[key] == single[key], (job, key)
        assert fused["fused"]["traced"] == ["init.scale", "optimizer.lr"]
        for name in ("metrics.parquet", "probes.parquet"):
            f_frame, a_frame = _frame(f_dir, name), _frame(a_dir, name)
            if fused["status"] == "diverged":
                # on its way to NaN the dynamics amplify rounding: only the start compares
                f_frame, a_frame = (
                    f[f.step == 0].reset_index(drop=True) for f in (f_frame, a_frame)
                )
            _assert_same_frames(f_frame, a_frame, f"job {job} {name}")
        if fused["status"] == "completed":
            assert fused["steps_completed"] == single["steps_completed"] == 20
            for key in ("final_loss", "final_test_accuracy"):
                np.testing.assert_allclose(fused[key], single[key], rtol=RTOL, atol=ATOL)


@FIXTURE_GROUP
def test_a_diverging_job_leaves_the_others_intact(fused_and_alone):
    summaries, *_ = fused_and_alone
    assert [s["status"] for s in summaries] == ["completed", "completed", "diverged"]
    assert summaries[0]["final_loss"] < 2.3 and summaries[1]["final_loss"] < 2.3
    assert summaries[1]["seeds"] == [7, 8]


@FIXTURE_GROUP
def test_a_fused_job_resumes_alone_from_its_checkpoint(fused_and_alone, tmp_path):
    """Its checkpoint (step 10) is the state of a run of its own: resumed alone from there,
    it writes the files of the run done alone."""
    _, _, fused_dirs, alone_dirs, _ = fused_and_alone
    run_dir = tmp_path / "run"
    shutil.copytree(fused_dirs[1], run_dir)
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir() if p.name.isdigit()) == ["10"]
    summary = lossbench.run(compose_config([*BASE, *JOBS[1], "trainer.resume=true"]), run_dir)
    assert summary["resumed_from"] == 10 and summary["status"] == "completed"
    for name in ("metrics.parquet", "probes.parquet"):
        pd.testing.assert_frame_equal(
            _frame(run_dir, name),
            _frame(alone_dirs[1], name),
            rtol=RTOL,
            atol=ATOL,
            check_like=True,
        )


def test_a_mixed_sweep_forms_the_right_groups():
    base = [*FAST, "model.widths=[8]", "trainer.steps=20", "probe=off"]
    sweep = [
        ["optimizer=sgd", "optimizer.lr=0.1"],
        ["optimizer=sgd", "optimizer.lr=0.2", "trainer.seed=3"],
        ["optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.5"],
        ["optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.0"],  # no momentum trace
        ["optimizer=sgd", "optimizer.lr=0.1", "model.widths=[4]"],
        ["optimizer=adam", "optimizer.lr=0.1"],
        ["optimizer=adam", "optimizer.lr=0.3", "optimizer.b1=0.8"],
        ["optimizer=sgd", "optimizer.lr=0.1", "init.scale=2.0", "trainer.seeds=3"],
    ]
    prepared = [prepare(compose_config([*base, *job])) for job in sweep]
    found = sorted((tuple(members), traced) for members, traced in groups(prepared))
    assert found == [
        ((0, 1, 2, 7), ("init.scale", "optimizer.lr", "optimizer.momentum")),
        ((3,), ()),
        ((4,), ()),
        ((5, 6), ("optimizer.b1", "optimizer.lr")),
    ]
    cut = batches(prepared, max_batch=4, devices=1)
    first = [b for b in cut if 0 in b.jobs or 7 in b.jobs]
    assert [b.jobs for b in first] == [(0, 1, 2), (7,)]  # 3 rows, then 3 (3 + 3 > 4)
    assert {b.rows for b in first} == {3}  # one program size for the group
    assert [b.rows for b in cut if b.jobs == (3,)] == [0]  # alone: a plain run's program
    assert {b.rows for b in batches(prepared, devices=2) if len(b.jobs) > 1} == {6, 2}
    # on 2 devices the group's program size is a multiple of 2: 3 rows padded to 4
    on_two = [b for b in batches(prepared, max_batch=4, devices=2) if 0 in b.jobs or 7 in b.jobs]
    assert [(b.jobs, b.rows) for b in on_two] == [((0, 1, 2), 4), ((7,), 4)]


@FIXTURE_GROUP
def test_two_devices_give_the_rows_of_one(fused_and_alone, tmp_path):
    """The row axis sharded over 2 (forced host) devices equals one device's results: the
    fixture's sweep (one device, this process) again in a process with 2 devices."""
    summaries, _, fused_dirs, _, _ = fused_and_alone
    code = (
        "import sys, json, lossbench\n"
        "from lossbench.launchers.fused import run_fused\n"
        "import jax; assert len(jax.devices()) == 2, jax.devices()\n"
        f"base, jobs = {BASE!r}, {JOBS!r}\n"
        "cfgs = [lossbench.compose(*base, *j) for j in jobs]\n"
        "dirs = [sys.argv[1] + f'/{i}' for i in range(len(jobs))]\n"
        "out = run_fused(cfgs, dirs, max_batch=4, log=print)\n"
        "print(json.dumps([[s['status'], s['final_loss_per_seed']] for s in out]))\n"
    )
    # the suite's own flags (fast compiles, one thread) and the device count
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": flags},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the second batch's 2 rows padded to the group's 4, which 2 devices hold 2 and 2
    assert "1 job(s), 2 rows (padded to 4)" in done.stdout, done.stdout
    two = json.loads(done.stdout.strip().splitlines()[-1])
    assert [status for status, _ in two] == [s["status"] for s in summaries]
    for job, ((status, losses), one) in enumerate(zip(two, summaries, strict=True)):
        frames = [_frame(d, "metrics.parquet") for d in (tmp_path / str(job), fused_dirs[job])]
        if status == "completed":
            np.testing.assert_allclose(
                losses, one["final_loss_per_seed"], rtol=1e-5, atol=1e-7, err_msg=f"job {job}"
            )
        else:  # on its way to NaN the dynamics amplify rounding: only the start compares
            frames = [f[f.step == 0].reset_index(drop=True) for f in frames]
        pd.testing.assert_frame_equal(*frames, rtol=1e-5, obj=f"job {job} metrics")


@LR_PROGRAM_GROUP
def test_the_fused_launcher_from_the_command_line(tmp_path):
    """`lossbench -m ... hydra/launcher=fused`: a run directory per job with Hydra's files, a
    refused value fails its job alone, the end-of-sweep table, exit code 1 for the failure."""
    sweep = tmp_path / "sweep"
    done = cli_in_process(
        "-m",
        *BASE,
        "optimizer.lr=0.02,0.05,-1",
        "hydra/launcher=fused",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1, done.stderr
    assert "error: job 2: optimizer.lr=-1.0 is not allowed" in done.stderr
    assert "fused: 2 job(s), 4 rows, traced optimizer.lr" in done.stderr
    statuses = {}
    for job in range(3):
        assert (sweep / str(job) / ".hydra" / "config.yaml").exists()
        statuses[job] = json.loads((sweep / str(job) / "summary.json").read_text())["status"]
    assert statuses == {0: "completed", 1: "completed", 2: "failed"}
    assert f"sweep dir: {sweep}" in done.stderr
    table = lossbench.load_sweep(sweep)
    assert set(table["status"]) == {"completed", "failed"}


def test_loss_hyperparameters_are_program_inputs(tmp_path):
    """Focal's gamma and the l2 weight penalty traced: one program, each job's files those
    of its own run (gamma 0 with no penalty is plain cross entropy)."""
    base = [*BASE, "loss=focal", "trainer.checkpoint_every=0"]
    jobs = [["loss.gamma=0.0", "loss.l2=0.0"], ["loss.gamma=2.0", "loss.l2=0.01"]]
    configs = _configs([["loss=focal", "trainer.checkpoint_every=0", *job] for job in jobs])
    log: list[str] = []
    fused = run_fused(configs, [tmp_path / "f" / str(i) for i in range(2)], log=log.append)
    assert any("2 job(s), 4 rows, traced loss.gamma, loss.l2" in line for line in log), log
    for i, job in enumerate(jobs):
        alone = lossbench.run(compose_config([*base, *job]), tmp_path / "a" / str(i))
        assert fused[i]["status"] == alone["status"] == "completed"
        np.testing.assert_allclose(
            fused[i]["final_loss_per_seed"], alone["final_loss_per_seed"], rtol=RTOL, atol=ATOL
        )
        for name in ("metrics.parquet", "probes.parquet"):
            f_frame, a_frame = (
                _frame(tmp_path / "f" / str(i), name),
                _frame(tmp_path / "a" / str(i), name),
            )
            _assert_same_frames(f_frame, a_frame, f"job {i} {name}")
    assert fused[0]["final_loss"] != pytest.approx(fused[1]["final_loss"], rel=1e-2)


@LR_PROGRAM_GROUP
def test_the_batches_of_a_group_share_one_program(tmp_path, monkeypatch):
    """A group cut into batches (max_batch) builds its jitted functions once: one compile for
    every batch, not one per batch (jax caches compiled programs per function object)."""
    from lossbench.launchers import fused

    built: list[int] = []
    original = fused.group_trainer

    def counting(job, rows, *traced):
        built.append(rows)
        return original(job, rows, *traced)

    monkeypatch.setattr(fused, "group_trainer", counting)
    jobs = [["optimizer.lr=0.02"], ["optimizer.lr=0.05"], ["optimizer.lr=0.03"]]
    configs = _configs([["trainer.checkpoint_every=0", *job] for job in jobs])
    log: list[str] = []
    out = run_fused(configs, [tmp_path / str(i) for i in range(3)], max_batch=4, log=log.append)
    batch_lines = [line for line in log if "job(s)" in line]
    assert batch_lines == [
        "fused: 2 job(s), 4 rows, traced optimizer.lr",
        "fused: 1 job(s), 2 rows (padded to 4), traced optimizer.lr",
    ], log
    assert built == [4]
    assert [s["status"] for s in out] == ["completed"] * 3
