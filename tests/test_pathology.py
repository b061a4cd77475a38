"""Regime diagnosis: hand-made records, and records computed on analytic surfaces."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from functools import cache
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from rich.table import Table

from lossbench.errors import ConfigError
from lossbench.pathology import (
    EPISODE_COLUMNS,
    FLAG_COLUMNS,
    MEASURE_COLUMNS,
    REGIMES,
    DetectConfig,
    check_detect,
    classify,
    diagnose,
    episodes,
    flags,
    format_timeline,
    margins,
    measures,
    scales,
    summary_counts,
    timeline_table,
)

CFG = DetectConfig()

SURFACES = {
    "quadratic_saddle": lambda x: x[0] ** 2 - x[1] ** 2,
    "monkey_saddle": lambda x: x[0] ** 3 - 3 * x[0] * x[1] ** 2,
    "rosenbrock": lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
    "himmelblau": lambda x: (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2,
    "escape_saddle": lambda x: x[0] ** 2 - x[1] ** 2 + x[1] ** 4 / 4,
    "abs_valley": lambda x: jnp.abs(x[0]) + x[1] ** 2,
}


def quadratic(a, b):
    return lambda x: 0.5 * (a * x[0] ** 2 + b * x[1] ** 2)


# --------------------------------------------------------------------------------------------
# records from analytic surfaces


@cache
def _probe_fn(fn):
    @jax.jit
    def probe(x):
        eigs = jnp.linalg.eigvalsh(jax.hessian(fn)(x))
        return fn(x), jnp.linalg.norm(jax.grad(fn)(x)), eigs[-1], eigs[0]

    return probe


def probe_row(name, x, step=0, seed=0):
    """One probe record at point `x`: loss, gradient norm and dense Hessian extremes."""
    loss, g, top, bottom = _probe_fn(SURFACES[name])(jnp.asarray(x, jnp.float32))
    return {
        "step": step,
        "seed": seed,
        "loss": float(loss),
        "grad_norm": float(g),
        "lambda_max": float(top),
        "lambda_min": float(bottom),
    }


def gd_probes(fn, x0, lr, steps, every, decay=0.0):
    """Gradient descent in one jitted scan (float32); a probe record every `every` steps.

    The step size is lr * (1 - decay * t / steps) at step t. On `abs_valley` this is
    subgradient descent: jax differentiates |x| as sign(x).
    """
    grad = jax.grad(fn)
    rate = lambda t: lr * (1.0 - decay * t / steps)

    @jax.jit
    def run(x0):
        def chunk(x, k):
            step = lambda i, x: x - rate(k * every + i) * grad(x)
            return jax.lax.fori_loop(0, every, step, x), x

        _, xs = jax.lax.scan(chunk, x0, jnp.arange(steps // every + 1))
        return jax.vmap(_probe_fn(fn))(xs)

    loss, g, top, bottom = (np.asarray(v, float) for v in run(jnp.asarray(x0, jnp.float32)))
    step = np.arange(loss.size) * every
    return pd.DataFrame(
        {
            "step": step,
            "seed": 0,
            "loss": loss,
            "grad_norm": g,
            "lambda_max": top,
            "lambda_min": bottom,
            "two_over_lr": 2.0 / rate(step),
            "eos_threshold": 2.0 / rate(step),
        }
    )


def regime_of(row, cfg=CFG):
    return classify(pd.DataFrame([row]), None, cfg)["regime"].iloc[0]


def test_single_points_of_the_surfaces():
    assert regime_of(probe_row("quadratic_saddle", [0.0, 0.0])) == "strict_saddle"
    assert regime_of(probe_row("monkey_saddle", [0.0, 0.0])) == "flat"
    assert regime_of(probe_row("rosenbrock", [1.0, 1.0])) == "minimum"
    assert regime_of(probe_row("rosenbrock", [-1.0, 2.0])) == "descent"
    # Himmelblau's local maximum, to float32 precision: ||g|| ~ 1e-5 against |lambda| ~ 40
    # and a loss of 182 is a critical point with certain negative curvature.
    assert regime_of(probe_row("himmelblau", [-0.270845, -0.923039])) == "strict_saddle"


def test_sitting_on_a_critical_point_the_whole_run():
    rows = [probe_row("quadratic_saddle", [0.0, 0.0], step=10 * k) for k in range(6)]
    probes, events, counts = diagnose(pd.DataFrame(rows), None, CFG)
    assert (probes["regime"] == "strict_saddle").all()
    # g = 0: stationary without doubt; the nearest threshold is neg_tol (nu = 1)
    np.testing.assert_allclose(probes["regime_margin"], -np.log10(CFG.neg_tol))
    assert len(events) == 1 and not events["exited"].iloc[0]
    assert events["end_step"].iloc[0] == 50 and events["n_probes"].iloc[0] == 6
    assert counts["strict_saddle"] == 1 and sum(counts.values()) == 1


@pytest.fixture(scope="module")
def escape_run():
    # x^2 - y^2 + y^4/4 from just off the strict saddle at the origin
    return gd_probes(SURFACES["escape_saddle"], [1e-3, 1e-6], lr=0.1, steps=200, every=5)


def test_gd_leaves_the_strict_saddle_for_a_minimum(escape_run):
    probes, events, counts = diagnose(escape_run, None, CFG)
    kinds = list(events["kind"])
    assert kinds[0] == "strict_saddle" and kinds[-1] == "minimum"
    assert set(kinds) <= {"strict_saddle", "descent", "minimum"}
    saddle = events.iloc[0]
    assert saddle["exited"] and saddle["escape_curvature"] == pytest.approx(-2.0, abs=0.02)
    assert saddle["lambda_min_entry"] == pytest.approx(-2.0, abs=0.02)
    final = events.iloc[-1]
    assert final["loss_exit"] == pytest.approx(-1.0, abs=1e-4) and not final["exited"]
    assert np.isnan(final["loss_drop"]) and np.isnan(final["escape_curvature"])
    assert counts["strict_saddle"] == 1 and counts["minimum"] == 1
    # the episodes tile the timeline; each keeps its weakest probe's margin
    assert (events["start_step"].iloc[1:].to_numpy() == events["end_step"].iloc[:-1]).all()
    assert events["n_probes"].sum() == len(escape_run)
    for row in events.itertuples():
        inside = (probes["step"] >= row.start_step) & (probes["regime"] == row.kind)
        inside &= probes["step"] < (row.end_step if row.exited else np.inf)
        assert row.regime_margin == pytest.approx(probes.loc[inside, "regime_margin"].min())
    assert (probes["regime_margin"] >= 0).all()


def test_thresholds_change_the_regimes(escape_run):
    base = classify(escape_run, None, CFG)["regime"]
    no_small = classify(escape_run, None, replace(CFG, grad_tol=1e-12))["regime"]
    assert "strict_saddle" in set(base) and "strict_saddle" not in set(no_small)
    dominant = classify(escape_run, None, replace(CFG, escape_ratio=1e30))["regime"]
    assert "strict_saddle" not in set(dominant)
    assert (dominant[base == "strict_saddle"] == "minimum").all()  # stationary, no saddle
    # any object with the attributes works; missing ones take the defaults
    for cfg in (OmegaConf.structured(CFG), SimpleNamespace(grad_tol=1e-3), None, {"name": "x"}):
        assert (classify(escape_run, None, cfg)["regime"] == base).all()


def test_margins_are_signed_distances_to_the_thresholds(escape_run):
    m = margins(escape_run, None, CFG)
    f = flags(escape_run, None, CFG)
    assert list(m.columns) == list(FLAG_COLUMNS) and ((m >= 0) == f).all().all()
    s = measures(escape_run, None, CFG)
    assert list(s.columns) == list(MEASURE_COLUMNS)
    expected = np.log10(CFG.grad_tol / s["stationarity"])
    finite = np.isfinite(expected)
    np.testing.assert_allclose(m["stationary"][finite], expected[finite], rtol=1e-12)
    # a threshold moved by the margin flips the test
    i = int(np.flatnonzero(f["stationary"] & finite)[-1])
    moved = replace(CFG, grad_tol=CFG.grad_tol / 10 ** (m["stationary"].iloc[i] + 1e-9))
    assert not flags(escape_run, None, moved)["stationary"].iloc[i]


def test_subgradient_descent_on_abs_valley_ends_in_oscillation():
    for every in (4, 5):  # even and odd: the period-2 bounce aliased away, or seen
        probes = gd_probes(SURFACES["abs_valley"], [1.03, 0.5], lr=0.1, steps=200, every=every)
        regimes = classify(probes, None, CFG)["regime"]
        assert regimes.iloc[0] in ("descent", "minimum")
        assert set(regimes.iloc[len(regimes) // 2 :]) == {"oscillation"}


@pytest.mark.parametrize(
    "factor,expected",
    [(0.95, "edge_of_stability"), (0.5, None), (1.1, "divergence")],
)
def test_edge_of_stability_on_a_quadratic(factor, expected):
    lam = 4.0  # curvature of x1; the other coordinate has curvature 1
    fn = quadratic(lam, 1.0)
    probes = gd_probes(fn, [1.0, 1.0], lr=factor * 2 / lam, steps=100, every=5)
    probes, events, counts = diagnose(probes, None, CFG)
    regimes = set(probes["regime"])
    if expected is None:
        assert regimes == {"minimum"}  # a convex quadratic: the basin of its minimum
    elif expected == "edge_of_stability":
        assert regimes == {"edge_of_stability"}
        assert probes["loss"].iloc[-1] < 1e-6 * probes["loss"].iloc[0]
    else:
        assert events["kind"].iloc[-1] == "divergence" and counts["divergence"] == 1
        assert np.isfinite(probes["loss"]).all()  # blow-up, not overflow
        assert probes["loss"].iloc[-1] > 1e6 * probes["loss"].iloc[0]
        assert "edge_of_stability" in regimes  # sharpness above 2/eta before the blow-up
        risen = probes["loss"] > 2 * probes["loss"].iloc[0]
        assert (probes["regime"][risen] == "divergence").all()
        assert (probes["regime"][~risen] == "edge_of_stability").all()


# --------------------------------------------------------------------------------------------
# hand-made records


def _row(step, loss=1.0, g=1.0, lmax=1.0, lmin=0.5, seed=0, **extra):
    return {
        "step": step,
        "seed": seed,
        "loss": loss,
        "grad_norm": g,
        "lambda_max": lmax,
        "lambda_min": lmin,
        **extra,
    }


def test_precedence():
    rows = [
        _row(0, loss=10.0, g=10.0, lmax=10.0, lmin=-5.0),  # steep and indefinite: descent
        _row(1, loss=9.0, g=1e-5, lmax=10.0, lmin=-5.0, two_over_lr=10.5),  # eos over saddle
        _row(2, loss=8.0, g=1e-5, lmax=5.0, lmin=-5.0, two_over_lr=100.0),  # strict saddle
        _row(3, loss=7.0, g=1e-9, lmax=1e-5, lmin=0.0, two_over_lr=100.0),  # flat
        _row(4, loss=6.0, g=1e-5, lmax=5.0, lmin=-1e-9),  # minimum (no certain neg. curv.)
        _row(5, loss=float("nan"), g=1e-5, lmax=10.0, two_over_lr=10.5),  # divergence
    ]
    regimes = list(classify(pd.DataFrame(rows), None, replace(CFG, window=1))["regime"])
    assert regimes == [
        "descent",
        "edge_of_stability",
        "strict_saddle",
        "flat",
        "minimum",
        "divergence",
    ]
    f = flags(pd.DataFrame(rows), None, CFG)
    assert list(f.columns) == list(FLAG_COLUMNS) and not f["eos"].iloc[2]
    assert f["neg_curv"].iloc[1] and f["stationary"].iloc[1] and f["escape"].iloc[1]


def test_eos_threshold_prefers_momentum_threshold():
    row = _row(0, lmax=3.0, two_over_lr=3.0, eos_threshold=6.0)  # (2 + 2 beta)/eta, beta=1
    assert regime_of(row) != "edge_of_stability"
    assert regime_of({**row, "eos_threshold": float("nan")}) == "edge_of_stability"


def test_divergence_from_metrics_is_absorbing():
    probes = pd.DataFrame([_row(s, loss=1.0 - s / 1000, g=1.0) for s in range(0, 500, 100)])
    metrics = pd.DataFrame(
        {
            "step": np.arange(0, 500, 10),
            "seed": 0,
            "loss": 1.0,
            "grad_norm": 1.0,
        }
    )
    metrics.loc[metrics["step"] == 250, "loss"] = np.inf
    regimes = classify(probes, metrics, CFG)["regime"]
    assert list(regimes[3:]) == ["divergence"] * 2 and "divergence" not in set(regimes[:3])
    s = scales(probes, metrics, CFG)
    assert s["divergence_step"].iloc[0] == 250 and s["initial_loss"].iloc[0] == 1.0
    # a later probe that looks fine is still diverged once a probe was non-finite
    probes.loc[2, "grad_norm"] = np.nan
    assert list(classify(probes, None, CFG)["regime"])[2:] == ["divergence"] * 3


def test_divergence_is_the_loss_above_twice_its_start():
    losses = [2.0, 30.0, 9.0, 3.0, 1.0, 0.5]  # a catapult: up, then back below the start
    probes = pd.DataFrame([_row(10 * i, loss=v, g=1.0, lmin=-0.1) for i, v in enumerate(losses)])
    regimes = list(classify(probes, None, CFG)["regime"])
    assert regimes[1:3] == ["divergence", "divergence"]
    assert "divergence" not in regimes[3:] and regimes[0] != "divergence"
    # scale-free: the same run with the loss in other units
    for c in (1e-3, 1e3):
        scaled = probes.assign(loss=c * probes["loss"], grad_norm=c * probes["grad_norm"])
        scaled = scaled.assign(lambda_max=c * probes["lambda_max"], lambda_min=-0.1 * c)
        assert list(classify(scaled, None, CFG)["regime"]) == regimes


def test_seeds_are_separate_and_order_is_kept(escape_run):
    a = escape_run.assign(seed=0)
    b = escape_run.assign(seed=1, loss=1.0, grad_norm=0.0)  # sits at a point: g = 0
    both = pd.concat([a, b]).sample(frac=1.0, random_state=0)
    out = classify(both, None, CFG)
    assert out.index.equals(both.index)
    assert list(out.columns) == [*both.columns, "regime", "regime_margin"]
    alone = classify(a, None, CFG)["regime"]
    assert (out[out["seed"] == 0].sort_values("step")["regime"].to_numpy() == alone).all()
    sits = out[out["seed"] == 1]  # g = 0: a saddle where lambda_min < 0, else a minimum
    expected = np.where(sits["lambda_min"] < -1e-3, "strict_saddle", "minimum")
    assert (sits["regime"].to_numpy() == expected).all() and len(set(expected)) == 2
    events = episodes(out)
    assert list(events.columns) == list(EPISODE_COLUMNS)
    assert set(events["seed"]) == {0, 1} and events["seed"].is_monotonic_increasing
    assert len(scales(both, None, CFG)) == 2


def test_episode_columns():
    rows = [
        _row(0, loss=5.0, g=1.0, lmin=0.5),
        _row(10, loss=5.0, g=1e-6, lmin=-0.3),
        _row(20, loss=4.9, g=1e-6, lmin=-0.2),
        _row(30, loss=2.0, g=0.5, lmin=0.5),
    ]
    probes = pd.DataFrame(rows)
    probes["regime"] = ["descent", "strict_saddle", "strict_saddle", "descent"]
    events = episodes(probes)
    saddle = events.iloc[1]
    assert saddle["kind"] == "strict_saddle" and saddle["start_step"] == 10
    assert saddle["end_step"] == 30 and saddle["n_probes"] == 2 and saddle["exited"]
    assert saddle["loss_entry"] == 5.0 and saddle["loss_exit"] == 2.0
    assert saddle["loss_drop"] == pytest.approx(3.0)
    assert saddle["escape_curvature"] == pytest.approx(-0.2)
    assert saddle["lambda_min_entry"] == pytest.approx(-0.3) and saddle["next_kind"] == "descent"
    assert np.isnan(saddle["regime_margin"])  # no margin column: unknown
    assert np.isnan(events.iloc[0]["escape_curvature"])  # descent is not a stuck regime
    last = events.iloc[-1]
    assert last["end_step"] == 30 and not last["exited"] and last["next_kind"] == ""
    counts = summary_counts(events)
    assert set(counts) == set(REGIMES) and counts["descent"] == 2


def test_a_stuck_run_that_drops_to_a_lower_level_starts_a_new_episode():
    losses = [14.25, 14.24, 5.25, 5.2, 1.25, 1.25, 1.0]  # deep linear stages, no probe between
    probes = pd.DataFrame([_row(50 * i, loss=v, g=1e-4, lmin=-0.1) for i, v in enumerate(losses)])
    probes["regime"] = ["strict_saddle"] * 6 + ["descent"]
    events = episodes(probes)
    assert list(events["kind"]) == ["strict_saddle"] * 3 + ["descent"]
    assert list(events["loss_entry"]) == [14.25, 5.25, 1.25, 1.0]
    assert list(events["next_kind"]) == ["strict_saddle", "strict_saddle", "descent", ""]
    assert events["escape_curvature"].iloc[0] == pytest.approx(-0.1)
    probes["regime"] = ["minimum"] * 7  # converging: one episode however far the loss falls
    assert len(episodes(probes)) == 1


def test_timeline_text_and_table(escape_run):
    rows = [
        _row(0, loss=7.47, g=1e-7, lmax=1e-7, lmin=-1e-7),
        _row(740, loss=7.40, g=1.0, lmax=2.0, lmin=-0.18),
    ]
    probes = pd.DataFrame(rows)
    probes["regime"] = ["flat", "descent"]
    probes.loc[0, "lambda_min"] = -0.18  # the escape direction at the episode's last probe
    text = format_timeline(episodes(probes))
    first = text.splitlines()[0]
    assert first.startswith("steps 0–740: flat")
    assert "loss 7.47 → 7.40" in first and "left along curvature λ = −0.18" in first
    assert text.splitlines()[1].startswith("step 740: descent")
    _, events, _ = diagnose(escape_run, None, CFG)
    table = timeline_table(events)
    assert isinstance(table, Table) and table.row_count == len(events)
    both = pd.concat([escape_run.assign(seed=0), escape_run.assign(seed=1)])
    assert format_timeline(diagnose(both)[1]).startswith("seed 0: steps 0–")


def test_empty_frames():
    empty = pd.DataFrame(columns=["step", "seed", "loss", "grad_norm", "lambda_max", "lambda_min"])
    probes, events, counts = diagnose(empty, None, CFG)
    assert {"regime", "regime_margin"} <= set(probes.columns) and len(events) == 0
    assert list(events.columns) == list(EPISODE_COLUMNS) and sum(counts.values()) == 0
    assert format_timeline(events) == ""


def test_a_decaying_learning_rate_is_not_oscillation():
    fn = quadratic(1.0, 0.02)
    probes = gd_probes(fn, [1.0, 1.0], lr=0.5, steps=400, every=10, decay=0.99)
    assert "oscillation" not in set(classify(probes, None, CFG)["regime"])


def test_without_curvature_columns_stationary_probes_are_minima():
    probes = pd.DataFrame(
        {"step": [0, 10, 20, 30], "loss": [1.0, 0.5, 0.5, 0.5], "grad_norm": [1.0, 0.1, 0, 0]}
    )
    assert list(classify(probes)["regime"])[2:] == ["minimum", "minimum"]
    # with a step size, 2/eta stands in for the curvature: g^2 eta / (4 gap) <= grad_tol
    with_lr = probes.assign(two_over_lr=20.0, grad_norm=[1.0, 0.1, 1e-3, 0.0])
    assert list(classify(with_lr)["regime"])[2:] == ["minimum", "minimum"]


# --------------------------------------------------------------------------------------------
# config


def test_check_detect_accepts_the_defaults_and_partial_configs():
    check_detect(None)
    check_detect(CFG)
    check_detect({"grad_tol": 1e-2})
    check_detect(OmegaConf.structured(CFG))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grad_tol", -1e-3),
        ("grad_tol", 0.0),
        ("neg_tol", -1.0),
        ("escape_ratio", -1.0),
        ("flat_tol", -0.1),
        ("basin_tol", float("nan")),
        ("window", 0),
        ("window", 2.5),
        ("oscillation_rise", 0.0),
        ("oscillation_efficiency", 1.0),
        ("plateau_rate", -1e-4),
        ("eos_margin", 1.0),
        ("rise", 0.0),
        ("blowup", -1.0),
        ("resolution", "tiny"),
    ],
)
def test_check_detect_rejects_bad_thresholds(key, value):
    with pytest.raises(ConfigError) as info:
        check_detect({key: value})
    assert info.value.key == f"detect.{key}" and str(info.value.value) == str(value)
    assert str(info.value).startswith(f"detect.{key}=") and "is not allowed: " in str(info.value)
    with pytest.raises(ConfigError):
        diagnose(pd.DataFrame([_row(0)]), None, {key: value})


def test_pathology_imports_no_hydra():
    code = (
        "import sys, lossbench.pathology; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
