"""Figures are drawn from the files, with the data the files hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import cli_in_process, run_overrides

from lossbench.plots import plot_run, plot_surface_path


def test_plot_run_and_surface_path_from_files(tmp_path):
    _, run_dir = run_overrides(
        tmp_path,
        [
            "experiment=saddle",
            "init.radius=1e-3",
            "trainer.steps=100",
            "probe.every=10",
            "probe.density_samples=2",
            "probe.density_steps=2",
        ],
    )
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    fig = plot_run(run_dir)
    loss_axis, grad_axis, curvature_axis = fig.axes
    np.testing.assert_allclose(grad_axis.lines[0].get_ydata(), metrics.grad_norm)
    probes = pd.read_parquet(run_dir / "probes.parquet")
    np.testing.assert_allclose(curvature_axis.lines[1].get_ydata(), probes.lambda_min)
    assert any("strict saddle" in t.get_text() for t in loss_axis.get_legend().get_texts())
    path = plot_surface_path(run_dir).axes[0].lines[0]
    np.testing.assert_allclose(path.get_xdata(), metrics.x_0)
    result = cli_in_process("plot", str(run_dir))
    assert result.returncode == 0, result.stderr
    for name in ("run.png", "density.png", "path.png"):
        assert (run_dir / name).stat().st_size > 10_000
