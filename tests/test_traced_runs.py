"""A plain run takes its float `optimizer.*` / `init.*` / `loss.*` values as program inputs:
runs that differ only in them run one compiled program, the later ones loading it from the
persistent compilation cache, with the results of the program that closes them in as
constants (`lossbench.runner.program_inputs`)."""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, compose_config
from test_fused import BASE, FIXTURE_GROUP

import lossbench
from lossbench import programs, runner
from lossbench.compile_cache import cache_disabled

RUNS = [  # the second differs from the first in lr only, the third from the second in scale
    ["optimizer.lr=0.02", "init.scale=0.5"],
    ["optimizer.lr=0.05", "init.scale=0.5"],
    ["optimizer.lr=0.05", "init.scale=2.0"],
]
# the tests of the shared runs on one xdist worker (`--dist loadgroup`): without it each
# worker that drew one of them built the six runs again (~21-34 s a build). The worker of
# test_fused's runs alone: they are these runs' program (BASE, every float an input), so the
# session compiles it once, here or there, and loads it from the cache everywhere else.
RUNS_GROUP = FIXTURE_GROUP
# float32, a value as a program input against the same value folded into the program as a
# constant: XLA simplifies the two differently, rounding differs in the last bits over 20 steps
RTOL, ATOL = 1e-4, 1e-6


@contextmanager
def chunk_programs():
    """The persistent cache's answers ("hit" / "miss") for the chunk programs compiled inside."""
    answers: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "cache hit for 'jit_compiled_chunk'" in message:
                answers.append("hit")
            elif "CACHE MISS for 'jit_compiled_chunk'" in message:
                answers.append("miss")

    logger = logging.getLogger("jax._src.compiler")
    handler, level = Handler(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield answers
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def traced_and_constant(tmp_path_factory):
    """The runs with their values as inputs, then each with every value a constant."""
    root = tmp_path_factory.mktemp("traced")
    traced = []
    with chunk_programs() as answers:
        for i, run in enumerate(RUNS):
            programs.clear()  # as in a new process: ask the persistent cache, not this one's
            traced.append(lossbench.run(compose_config([*BASE, *run]), root / f"traced{i}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "program_inputs", lambda job: ())
        constant = [
            lossbench.run(compose_config([*BASE, *run]), root / f"constant{i}")
            for i, run in enumerate(RUNS)
        ]
    return root, traced, constant, answers


def _frame(run_dir, name):
    frame = pd.read_parquet(run_dir / name)
    return frame.sort_values(["step", "seed"]).reset_index(drop=True)


@pytest.mark.slow
@RUNS_GROUP
def test_runs_differing_in_lr_or_init_scale_compile_one_chunk_program(traced_and_constant):
    assert not cache_disabled(), "the persistent compilation cache is on in the tests"
    _, traced, constant, answers = traced_and_constant
    inputs = ["init.scale", "optimizer.lr", "optimizer.momentum", "optimizer.schedule.factor"]
    assert [s["program_inputs"] for s in traced] == [inputs] * 3
    assert [s["program_inputs"] for s in constant] == [[]] * 3
    # one program for the three: compiled by the first run (a miss) or by test_fused's runs
    # alone (no miss), loaded by the others; with every value a constant, each run missed
    # (three different programs)
    assert len(answers) == 3 and answers.count("miss") <= 1, answers


@pytest.mark.slow
@RUNS_GROUP
def test_a_traced_run_writes_the_files_of_its_constant_twin(traced_and_constant):
    root, traced, constant, _ = traced_and_constant
    for i, (mine, twin) in enumerate(zip(traced, constant, strict=True)):
        assert mine["status"] == twin["status"] == "completed"
        assert "fused" not in mine and "fused" not in twin
        assert sorted(p.name for p in (root / f"traced{i}").iterdir()) == sorted(
            p.name for p in (root / f"constant{i}").iterdir()
        )
        for name in ("metrics.parquet", "probes.parquet"):
            pd.testing.assert_frame_equal(
                _frame(root / f"traced{i}", name),
                _frame(root / f"constant{i}", name),
                rtol=RTOL,
                atol=ATOL,
            )
        for key in ("final_loss_per_seed", "final_test_accuracy_per_seed"):
            np.testing.assert_allclose(mine[key], twin[key], rtol=RTOL, atol=ATOL)
    # the values do reach the program: each run is its own
    assert traced[0]["final_loss"] != pytest.approx(traced[1]["final_loss"], rel=1e-3)
    assert traced[1]["final_loss"] != pytest.approx(traced[2]["final_loss"], rel=1e-3)


@pytest.mark.slow
@RUNS_GROUP
def test_a_constant_run_resumes_as_a_traced_one(traced_and_constant, tmp_path):
    """A checkpoint of a run with its values as constants (every run before) has the state
    layout of a traced one: resumed with traced values, it writes the uninterrupted files."""
    root, *_ = traced_and_constant
    run_dir = tmp_path / "run"
    shutil.copytree(root / "constant1", run_dir)
    summary = lossbench.run(compose_config([*BASE, *RUNS[1], "trainer.resume=true"]), run_dir)
    assert summary["resumed_from"] == 10 and summary["status"] == "completed"
    for name in ("metrics.parquet", "probes.parquet"):
        pd.testing.assert_frame_equal(  # a resumed run's diagnosis columns come in another order
            _frame(run_dir, name),
            _frame(root / "constant1", name),
            rtol=RTOL,
            atol=ATOL,
            check_like=True,
        )


@pytest.mark.parametrize(
    "overrides, constants",
    [
        # no momentum trace for 0 (optax): a traced 0 would add one to the state
        (["optimizer=sgd", "optimizer.momentum=0.0"], {"optimizer.momentum"}),
        # an l2 penalty of 0 is no penalty term; weight decay 0 no decay transform
        (["loss.l2=0.0", "optimizer.weight_decay=0.0"], {"loss.l2", "optimizer.weight_decay"}),
        # the point init checks `radius < 0` in Python: it cannot take a traced radius
        (["model=escape_saddle", "init.radius=0.1", "optimizer=gd"], {"init.radius"}),
    ],
)
def test_values_that_cannot_be_inputs_stay_constants(overrides, constants):
    job = runner.prepare(compose_config([*FAST, *overrides]))
    inputs = runner.program_inputs(job)
    assert "optimizer.lr" in inputs
    assert not constants & set(inputs), inputs
    values = {path: runner.config_value(job.cfg, path) for path in inputs}
    assert job.problem.state_layout(values) == job.problem.state_layout()
    assert runner.trace_failure([job], runner.group_trainer(job, 1), inputs, 1) is None


BRANCHY = """
import jax.numpy as jnp


def branchy(outputs, batch, cutoff=0.5):
    r = outputs - batch["y"]
    if cutoff > 0.4:  # Python branches on the value: it cannot be traced
        return jnp.sum(r**2, axis=-1)
    return jnp.sum(jnp.abs(r), axis=-1)
"""


def test_a_value_the_loss_branches_on_stays_a_constant(tmp_path, monkeypatch):
    """A user's loss whose Python code branches on its value: the trace fails before anything
    is written, and the run trains with its values as constants."""
    (tmp_path / "branchpkg").mkdir()
    (tmp_path / "branchpkg" / "__init__.py").write_text("")
    (tmp_path / "branchpkg" / "losses.py").write_text(BRANCHY)
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "branchy.yaml").write_text(
        "_target_: branchpkg.losses.branchy\ncutoff: 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = [*FAST, "data=linear_teacher", "loss=branchy", "trainer.steps=4", "probe=off"]
    cfg = lossbench.compose(*overrides, config_dir=tmp_path / "conf")
    job = runner.prepare(cfg)
    inputs = runner.program_inputs(job)
    assert "loss.cutoff" in inputs and "optimizer.lr" in inputs
    reason = runner.trace_failure([job], runner.group_trainer(job, 1), inputs, 1)
    assert reason is not None and "Tracer" in reason, reason
    summary = lossbench.run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and np.isfinite(summary["final_loss"])
