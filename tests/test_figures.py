"""Figures read right: for a completed, a diverged, a flat and a surface run, every figure kind
is drawn from the files' values (no shifts, no floors), with limits from the data, the
legend naming what is drawn and shaded, and the divergence marked where the run diverged."""

from __future__ import annotations

import json

import jax
import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import FAST, cli_in_process

import lossbench
from lossbench.plots import REGIME_COLORS, plot_density, plot_main, plot_run, plot_surface_path

matplotlib.use("Agg")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("figures")]  # one `runs` fixture

RUNS = {
    "completed": ["model=mlp", "model.widths=[8]", "trainer.steps=60", "trainer.log_every=5"],
    "diverged": [
        "model=quadratic",
        "init.value=[1.0,1.0]",
        "optimizer=gd",
        "optimizer.lr=3.0",  # 3 > 2/λ = 2: |x| doubles every step
        "trainer.steps=100",
        "trainer.log_every=1",
        "probe=surface",
    ],
    "flat": [  # far out on the plateau surface the loss is 1 to float precision
        "model=plateau",
        "init.value=[3.5,3.5]",
        "optimizer=gd",
        "optimizer.lr=0.1",
        "trainer.steps=50",
        "trainer.log_every=1",
        "probe=surface",
    ],
    "surface": [
        "experiment=saddle",
        "init.radius=1e-3",
        "trainer.steps=100",
        "probe.every=10",
        "probe.density_samples=2",
        "probe.density_steps=2",
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        for name, overrides in RUNS.items():
            lossbench.run(lossbench.compose(*FAST, "probe.every=10", *overrides), root / name)
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
    yield {name: root / name for name in RUNS}
    matplotlib.pyplot.close("all")


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _shaded_colors(ax) -> set:
    return {matplotlib.colors.to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches}


def _assert_limits_hold(ax, values):
    """The axis shows every finite value and is no more than ~1.3x (log: a few %) wider."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if ax.get_yscale() == "log":
        values = values[values > 0]
    lo, hi = ax.get_ylim()
    assert lo <= values.min() and values.max() <= hi
    if ax.get_yscale() == "log":
        ratio = np.log(hi / lo) / max(np.log(values.max() / values.min()), 1e-12)
        assert ratio < 1.3
    elif np.ptp(values) > 0:
        assert (hi - lo) < 1.3 * np.ptp(values)


def _tables(run_dir):
    return [pd.read_parquet(run_dir / f"{t}.parquet") for t in ("metrics", "probes", "events")]


def test_completed_run(runs):
    metrics, probes, events = _tables(runs["completed"])
    fig = plot_run(runs["completed"])
    ax_loss, ax_grad, ax_curv = fig.axes
    labels = _legend(ax_loss)
    assert {"train loss (batch of 128)", "test loss"} <= set(labels)
    for kind in set(events.kind):
        assert kind.replace("_", " ") in labels
        assert matplotlib.colors.to_hex(REGIME_COLORS[kind]) in _shaded_colors(ax_loss)
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), metrics.loss)  # not shifted
    _assert_limits_hold(ax_loss, np.r_[metrics.loss, metrics.test_loss])
    _assert_limits_hold(ax_grad, metrics.grad_norm)
    _assert_limits_hold(ax_curv, np.r_[probes.lambda_max, probes.lambda_min])
    assert ax_curv.get_xlim() == (0, 60)  # the final step is the axis end
    assert ax_loss.get_ylabel() == "loss" and ax_grad.get_ylabel() == "gradient norm ‖g‖"
    assert ax_curv.get_xlabel() == "step" and ax_curv.get_ylabel() == "Hessian eigenvalue"
    assert "mlp on digits, loss cross_entropy, adam lr=0.001" in fig._suptitle.get_text()


def test_diverged_run_marks_the_divergence_step(runs):
    run_dir = runs["diverged"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at"] == [10]
    metrics, probes, _ = _tables(run_dir)
    fig = plot_run(run_dir)
    for ax in fig.axes:  # the marker, on every panel, at step 10 (not at a probe boundary)
        marks = [line for line in ax.lines if list(line.get_xdata()) == [10, 10]]
        assert len(marks) == 1 and marks[0].get_linestyle() == "--"
    assert "diverged at step 10" in _legend(fig.axes[0])
    assert "divergence" not in _legend(fig.axes[0])  # named once, by the marker
    ax_loss, ax_grad, _ = fig.axes
    grad = ax_grad.lines[0].get_ydata()  # the gradient panel is drawn, inside its limits
    np.testing.assert_allclose(grad, metrics.grad_norm)
    assert ax_grad.get_yscale() == "log"
    _assert_limits_hold(ax_grad, grad)
    _assert_limits_hold(ax_loss, metrics.loss)
    assert ax_loss.get_xlim() == (0, max(metrics.step.max(), probes.step.max()))
    title = fig._suptitle.get_text()
    assert title.startswith("quadratic surface, gd lr=3.0") and "loss" not in title
    assert _legend(ax_loss)[0] == "loss"  # no data, no batch: not "train loss (batch)"


def test_flat_run_has_readable_ticks(runs):
    metrics, probes, _ = _tables(runs["flat"])
    assert metrics.loss.nunique() == 1  # the premise: the loss does not move
    fig = plot_run(runs["flat"])
    ax_loss, ax_grad, ax_curv = fig.axes
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
    assert ax_loss.get_yscale() == "linear"
    lo, hi = ax_loss.get_ylim()
    assert lo < 1.0 < hi and hi - lo < 0.01
    _assert_limits_hold(ax_grad, metrics.grad_norm)
    # 2/η = 20 is 1e5 times the spectrum: named in the legend, not squashing λ to a line
    assert any(t.startswith("2/η = 20 (off scale)") for t in _legend(ax_curv))
    _assert_limits_hold(ax_curv, np.r_[probes.lambda_max, probes.lambda_min])


def test_surface_run_figures(runs):
    run_dir = runs["surface"]
    metrics, probes, events = _tables(run_dir)
    assert metrics.loss.min() < 0  # the premise: a loss that goes negative
    fig = plot_run(run_dir)
    ax_loss, _, ax_curv = fig.axes
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), metrics.loss)  # no shift, no floor
    assert ax_loss.get_yscale() == "linear" and ax_loss.get_ylabel() == "loss"
    _assert_limits_hold(ax_loss, metrics.loss)
    labels = _legend(ax_loss)
    assert "descent" in set(events.kind) and "descent" in labels
    assert matplotlib.colors.to_hex(REGIME_COLORS["descent"]) in _shaded_colors(ax_loss)
    assert "2/η" in _legend(ax_curv)
    title = fig._suptitle.get_text()
    assert title.startswith("escape_saddle surface") and "cross_entropy" not in title

    path_ax = plot_surface_path(run_dir).axes[0]
    np.testing.assert_allclose(path_ax.lines[0].get_xdata(), metrics.x_0)
    (x_lo, x_hi), (y_lo, y_hi) = path_ax.get_xlim(), path_ax.get_ylim()
    assert x_lo < metrics.x_0.min() and metrics.x_0.max() < x_hi
    assert y_lo < metrics.x_1.min() and metrics.x_1.max() < y_hi
    assert {"path", "start", "end"} <= set(_legend(path_ax))
    assert (path_ax.get_xlabel(), path_ax.get_ylabel()) == ("x₀", "x₁")

    density_ax = plot_density(run_dir).axes[0]
    density = density_ax.lines[0].get_ydata()
    lo, hi = density_ax.get_ylim()
    assert np.nanmax(density) < hi < 3 * np.nanmax(density)
    assert lo >= np.nanmax(density) * 1e-6  # a few decades, not 13 over a floor
    assert np.nanmin(density) > 0  # zeros are left out, not floored
    grid = density_ax.lines[0].get_xdata()  # the density integrates to 1
    assert np.trapezoid(np.nan_to_num(density), grid) == pytest.approx(1.0, rel=0.02)
    # the surface's Hessian at its minimum (0, ±sqrt 2) is diag(2, 4): peaks at 2 and 4
    peaks = grid[
        np.r_[False, (density[1:-1] > density[:-2]) & (density[1:-1] > density[2:]), False]
    ]
    np.testing.assert_allclose(np.sort(peaks), [2.0, 4.0], atol=0.05)


def test_plot_command_rejects_what_is_not_a_run(tmp_path, capsys):
    result = cli_in_process("plot", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"lossbench plot: {tmp_path} is not a run directory"
    ]
    for argv in ([], ["a", "b"], ["--dpi=3"]):
        assert plot_main(argv) == 2
        assert capsys.readouterr().err.strip() == "usage: lossbench plot RUN_DIR"
    assert plot_main([str(tmp_path / "missing")]) == 2
    assert "missing is not a run directory" in capsys.readouterr().err


def test_plot_run_and_surface_path_from_files(runs):
    """The panels hold the files' columns, and `lossbench plot RUN_DIR` writes the run's
    figure, its density and its path (for a surface) into the run directory."""
    run_dir = runs["surface"]
    metrics, probes, _ = _tables(run_dir)
    loss_axis, grad_axis, curvature_axis = plot_run(run_dir).axes
    np.testing.assert_allclose(grad_axis.lines[0].get_ydata(), metrics.grad_norm)
    np.testing.assert_allclose(curvature_axis.lines[1].get_ydata(), probes.lambda_min)
    assert any("strict saddle" in t for t in _legend(loss_axis))
    path = plot_surface_path(run_dir).axes[0].lines[0]
    np.testing.assert_allclose(path.get_xdata(), metrics.x_0)
    result = cli_in_process("plot", str(run_dir))
    assert result.returncode == 0, result.stderr
    for name in ("run.png", "density.png", "path.png"):
        assert (run_dir / name).stat().st_size > 10_000
