"""Hyperparameter search with `hydra/sweeper=optuna`: every job returns its `objective`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import cli_in_process

from lossbench.cli import objective_value

SEARCH = [
    "hydra/sweeper=optuna",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=tag(log, interval(0.001, 0.1))",
    "model.widths=[8]",
    "trainer.steps=20",
    "probe=off",
    "trainer.progress=false",
    "trainer.save_params=false",
]


def summaries(sweep):
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


@pytest.mark.slow
def test_optuna_trials_fused_two_at_a_time_minimise_the_objective(tmp_path):
    """4 trials, 2 per batch through the fused launcher (one program a batch): the study's
    best value is the smallest `final_test_loss` of the jobs, and its parameters are that
    job's learning rate."""
    sweep = tmp_path / "sweep"
    done = cli_in_process(
        "-m",
        *SEARCH,
        "hydra/launcher=fused",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "objective=final_test_loss",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("fused: 2 job(s), 2 rows, traced optimizer.lr") == 2
    runs = summaries(sweep)
    assert len(runs) == 4 and all(r["status"] == "completed" for r in runs)
    losses = np.array([r["final_test_loss"] for r in runs])
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = runs[int(np.argmin(losses))]
    np.testing.assert_allclose(result["best_value"], losses.min(), rtol=1e-6)
    np.testing.assert_allclose(
        result["best_params"]["optimizer.lr"], best["config"]["optimizer"]["lr"], rtol=1e-6
    )


def test_the_objective_is_a_summary_figure_and_nan_without_one():
    summary = {"final_loss": 0.5, "final_test_accuracy": 0.9, "status": "diverged"}
    assert objective_value(summary, "final_test_accuracy") == 0.9
    assert np.isnan(objective_value({"final_loss": float("nan")}, "final_loss"))
    assert np.isnan(objective_value(summary, "final_test_loss"))  # every seed diverged


def test_an_objective_the_summary_will_not_have_is_refused_before_training():
    import lossbench
    from lossbench.errors import ConfigError
    from lossbench.runner import prepare

    with pytest.raises(ConfigError, match="objective='final_test_los'.*final_test_accuracy"):
        prepare(lossbench.compose("objective=final_test_los"))
    surface = prepare(lossbench.compose("model=rosenbrock", "objective=final_loss"))
    assert surface.cfg.objective == "final_loss"
