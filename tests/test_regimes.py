"""Issue 4 end to end: real runs (Hydra config -> jitted loop -> probes -> diagnosis -> files)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import cli, run_overrides

from lossbench.analysis import load_run
from lossbench.diagnosis import diagnose_run, load_detect

SURFACE = [
    "data=none",
    "init=point",
    "optimizer=gd",
    "trainer.batch_size=null",
    "probe=spectrum",
    "probe.lanczos_steps=2",
    "probe.top_k=1",
    "probe.bottom_k=1",
    "probe.trace_samples=0",
]


def surface_run(tmp_path, model, point, *extra, name="run"):
    value = "[" + ",".join(str(v) for v in point) + "]"
    summary, run_dir = run_overrides(
        tmp_path, [*SURFACE, f"model={model}", f"init.value={value}", *extra], name
    )
    return summary, load_run(run_dir, "probes", config=False), run_dir


@pytest.mark.parametrize(
    ("model", "point", "regime"),
    [
        ("quadratic_saddle", (0.0, 0.0), "strict_saddle"),
        ("monkey_saddle", (0.0, 0.0), "flat"),
        ("rosenbrock", (1.0, 1.0), "minimum"),
        ("rosenbrock", (-1.0, 2.0), "descent"),
    ],
)
def test_regime_at_a_point(tmp_path, model, point, regime):
    _, probes, _ = surface_run(
        tmp_path,
        model,
        point,
        "optimizer.lr=1e-4",
        "trainer.steps=2",
        "trainer.log_every=1",
        "probe.every=1",
    )
    assert probes.regime.iloc[0] == regime
    if model == "quadratic_saddle":
        np.testing.assert_allclose([probes.lambda_max[0], probes.lambda_min[0]], [2, -2], 1e-6)


def test_gd_stays_at_the_saddle_and_pgd_escapes_to_the_minimum(tmp_path):
    run = ["trainer.steps=400", "trainer.log_every=10", "probe.every=20", "optimizer.lr=0.1"]
    summary, probes, _ = surface_run(tmp_path, "escape_saddle", (0.0, 0.0), *run, name="gd")
    assert summary["final_point"] == [[0.0, 0.0]]
    assert (probes.regime == "strict_saddle").all()

    summary, probes, run_dir = surface_run(
        tmp_path,
        "escape_saddle",
        (0.0, 0.0),
        *run,
        "optimizer=pgd",
        "optimizer.radius=0.01",
        "optimizer.g_thres=1e-3",
        name="pgd",
    )
    assert summary["final_loss"] == pytest.approx(-1.0, abs=1e-3)
    assert probes.lambda_min.iloc[-1] > 0
    # PGD keeps perturbing wherever the gradient is small (no termination rule here), so the
    # end of the run reads as small kicks around the minimum rather than a resting point.
    assert probes.regime.iloc[-1] in ("minimum", "oscillation", "descent")
    events = load_run(run_dir, "events", config=False)
    saddles = events[events.kind == "strict_saddle"]
    assert len(saddles) == 1 and saddles.start_step.iloc[0] == 0
    assert bool(saddles.exited.iloc[0]) and saddles.loss_drop.iloc[0] > 0
    assert saddles.escape_curvature.iloc[0] == pytest.approx(-2.0, rel=1e-3)


def test_gd_on_the_abs_valley_ends_in_oscillation(tmp_path):
    summary, probes, _ = surface_run(
        tmp_path,
        "abs_valley",
        (1.05, 1.0),
        "optimizer.lr=0.1",
        "trainer.steps=200",
        "trainer.log_every=1",
        "probe.every=5",
    )
    assert probes.regime.iloc[-1] == "oscillation"
    assert abs(summary["final_point"][0][0]) <= 0.1


@pytest.mark.parametrize(("factor", "flagged"), [(0.95, True), (0.5, False)])
def test_edge_of_stability_on_a_quadratic(tmp_path, factor, flagged):
    curvature = 4.0
    lr = factor * 2 / curvature
    summary, probes, _ = surface_run(
        tmp_path,
        "quadratic",
        (1.0, 1.0),
        f"model.a={curvature}",
        f"optimizer.lr={lr}",
        "trainer.steps=100",
        "trainer.log_every=1",
        "probe.every=5",
    )
    assert summary["status"] == "completed"
    assert summary["final_loss"] < 1e-3
    np.testing.assert_allclose(probes.two_over_lr, 2 / lr, rtol=1e-6)
    np.testing.assert_allclose(probes.lambda_max, curvature, rtol=1e-5)
    assert ((probes.regime == "edge_of_stability").any()) == flagged
    assert (summary["events"]["edge_of_stability"] > 0) == flagged


def test_divergence_is_a_result_with_files_complete_up_to_it(tmp_path):
    lr = 1.1 * 2 / 4.0
    summary, probes, run_dir = surface_run(
        tmp_path,
        "quadratic",
        (1.0, 1.0),
        "model.a=4.0",
        f"optimizer.lr={lr}",
        "trainer.steps=1000",
        "trainer.log_every=1",
        "probe.every=10",
    )
    assert summary["status"] == "diverged"
    step = summary["diverged_at"][0]
    assert 0 < step < 1000 and summary["steps_completed"] < 1000
    metrics = load_run(run_dir)
    assert metrics.step.max() == step
    assert abs(metrics.loss.iloc[-1]) > 1e6 * metrics.loss.iloc[0]
    assert probes.regime.iloc[-1] == "divergence"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_deep_linear_saddles_and_stages(tmp_path):
    summary, run_dir = run_overrides(
        tmp_path,
        ["experiment=deep_linear", "model.depth=2", "init.scale=1e-3", "trainer.steps=100"],
        "depth2",
    )
    first = load_run(run_dir, "probes", config=False).iloc[0]
    assert first.regime == "strict_saddle"
    assert first.lambda_min == pytest.approx(-first.lambda_max, rel=0.05)

    summary, run_dir = run_overrides(tmp_path, ["experiment=deep_linear"], "depth3")
    events = load_run(run_dir, "events", config=False)
    stuck = events[events.kind.isin(["strict_saddle", "plateau", "flat"])]
    floor = summary["final_loss"]
    before_floor = stuck[stuck.loss_entry > floor + 1e-3]
    assert len(before_floor) >= 2
    levels = before_floor.loss_entry.values
    assert np.all(np.diff(levels) < 0), levels


def test_diagnose_reproduces_and_thresholds_change_events(tmp_path):
    _, run_dir = run_overrides(
        tmp_path,
        [
            "experiment=deep_linear",
            "model.depth=2",
            "init.scale=1e-3",
            "trainer.steps=100",
            "probe.every=10",
        ],
    )
    summary = diagnose_run(run_dir, load_detect(run_dir, []))
    first = pd.read_parquet(run_dir / "events.parquet")
    result = cli("diagnose", str(run_dir))
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(first, pd.read_parquet(run_dir / "events.parquet"))
    result = cli("diagnose", str(run_dir), "detect.grad_tol=1e-9", "detect.grad_abs=0")
    assert result.returncode == 0, result.stderr
    changed = pd.read_parquet(run_dir / "events.parquet")
    assert "strict_saddle" in set(first.kind) and "strict_saddle" not in set(changed.kind)
    assert json.loads((run_dir / "summary.json").read_text())["detect"]["grad_tol"] == 1e-9
    assert summary["events"]["strict_saddle"] >= 1
    bad = cli("diagnose", str(run_dir), "detect.grad_toll=1")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
