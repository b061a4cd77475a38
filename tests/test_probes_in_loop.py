"""Probes inside the compiled loop agree with the same probe run afterwards on saved params."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, run_overrides

from lossbench.curvature import hessian_eigenvalues, hessian_trace
from lossbench.probing import probe_batch
from lossbench.problem import build_problem
from lossbench.results import load_params
from lossbench.schema import freeze

RUN = [
    "data=blobs",
    "model.widths=[16]",
    "probe=spectrum",
    "probe.every=50",
    "probe.lanczos_steps=60",
    "probe.top_k=3",
    "probe.bottom_k=2",
    "probe.trace_samples=50",
    "trainer.steps=150",
    "trainer.batch_size=64",
    "trainer.save_params=true",
]


@pytest.mark.slow
def test_final_probe_matches_a_fresh_probe_on_the_saved_parameters(tmp_path):
    summary, run_dir = run_overrides(tmp_path, RUN)
    probes = pd.read_parquet(run_dir / "probes.parquet")
    assert list(probes.step) == [0, 50, 100, 150]
    last = probes.iloc[-1]

    cfg = freeze(compose_config(RUN))
    problem = build_problem(cfg)
    params = jax.tree_util.tree_map(lambda a: a[0], load_params(run_dir))  # seed axis
    batch = probe_batch(cfg, problem)
    # the data goes in as an argument (traced), the loss is the problem's own function
    fresh = hessian_eigenvalues(
        problem.loss, params, batch, key=jax.random.key(7), lanczos_steps=60, top_k=3, bottom_k=2
    )
    np.testing.assert_allclose(
        [last.eig_top_1, last.eig_top_2, last.eig_top_3], np.asarray(fresh.top), rtol=1e-3
    )
    assert last.lambda_min == pytest.approx(float(fresh.bottom[0]), rel=1e-2, abs=1e-3)
    trace = hessian_trace(problem.loss, params, batch, key=jax.random.key(3), samples=200)
    sem = float(np.hypot(last.trace_sem, trace.sem))
    assert abs(last.trace - float(trace.estimate)) < 4 * sem
    assert last.loss == pytest.approx(summary["final_loss"], rel=1e-5)


@pytest.mark.slow
def test_probe_columns_and_edge_of_stability_reference(tmp_path):
    _, run_dir = run_overrides(
        tmp_path, [*RUN[:-1], "optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"]
    )
    probes = pd.read_parquet(run_dir / "probes.parquet")
    for column in (
        "step",
        "seed",
        "lambda_max",
        "lambda_min",
        "eig_top_1",
        "eig_top_3",
        "eig_bottom_1",
        "eig_bottom_2",
        "res_top_1",
        "res_bottom_1",
        "trace",
        "trace_sem",
        "grad_norm",
        "grad_curvature",
        "grad_overlap_1",
        "two_over_lr",
        "eos_threshold",
        "regime",
    ):
        assert column in probes.columns, column
    np.testing.assert_allclose(probes.two_over_lr, 2 / 0.05, rtol=1e-6)
    np.testing.assert_allclose(probes.eos_threshold, (2 + 2 * 0.9) / 0.05, rtol=1e-6)
    assert (probes.lambda_max >= probes.lambda_min).all()
    assert (probes.trace_sem > 0).all()
