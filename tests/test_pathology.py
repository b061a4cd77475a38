"""Regime diagnosis: hand-made records, and records computed on the analytic surfaces."""

from __future__ import annotations

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

from lossbench.pathology import (
    EPISODE_COLUMNS,
    FLAG_COLUMNS,
    REGIMES,
    classify,
    diagnose,
    episodes,
    flags,
    format_timeline,
    scales,
    summary_counts,
    timeline_table,
)
from lossbench.schema import DetectConfig
from lossbench.surfaces import SURFACES

CFG = DetectConfig()


# --------------------------------------------------------------------------------------------
# records from the analytic surfaces


@cache
def _probe_fn(name):
    fn = SURFACES[name].fn

    @jax.jit
    def probe(x, a, b):
        eigs = jnp.linalg.eigvalsh(jax.hessian(fn)(x, a, b))
        return fn(x, a, b), jnp.linalg.norm(jax.grad(fn)(x, a, b)), eigs[-1], eigs[0]

    return probe


def probe_row(name, x, a=1.0, b=1.0, step=0, seed=0, lr=None):
    """One probe record at point `x`: loss, gradient norm and dense Hessian extremes."""
    loss, g, top, bottom = _probe_fn(name)(jnp.asarray(x, jnp.float32), a, b)
    row = {
        "step": step,
        "seed": seed,
        "loss": float(loss),
        "grad_norm": float(g),
        "lambda_max": float(top),
        "lambda_min": float(bottom),
    }
    if lr is not None:
        row["two_over_lr"] = row["eos_threshold"] = 2.0 / lr
    return row


def gd_probes(name, x0, lr, steps, every, a=1.0, b=1.0, decay=0.0):
    """Gradient descent in one jitted scan; a probe record every `every` steps (and at 0).

    The step size is lr * (1 - decay * t / steps) at step t. On `abs_valley` this is
    subgradient descent: jax differentiates |x| as sign(x).
    """
    fn = lambda x: SURFACES[name].fn(x, a, b)
    grad = jax.grad(fn)
    rate = lambda t: lr * (1.0 - decay * t / steps)

    @jax.jit
    def run(x0):
        def chunk(x, k):
            step = lambda i, x: x - rate(k * every + i) * grad(x)
            return jax.lax.fori_loop(0, every, step, x), x

        _, xs = jax.lax.scan(chunk, x0, jnp.arange(steps // every + 1))

        def probe(x):
            eigs = jnp.linalg.eigvalsh(jax.hessian(fn)(x))
            return fn(x), jnp.linalg.norm(grad(x)), eigs[-1], eigs[0]

        return jax.vmap(probe)(xs)

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
    assert regime_of(probe_row("himmelblau", [-0.270845, -0.923039])) == "descent"  # float32


def test_sitting_on_a_critical_point_the_whole_run_counts_as_small_gradient():
    rows = [probe_row("quadratic_saddle", [0.0, 0.0], step=10 * k) for k in range(6)]
    probes, events, counts = diagnose(pd.DataFrame(rows), None, CFG)
    assert (probes["regime"] == "strict_saddle").all()
    assert len(events) == 1 and not events["exited"].iloc[0]
    assert events["end_step"].iloc[0] == 50 and events["n_probes"].iloc[0] == 6
    assert counts["strict_saddle"] == 1 and sum(counts.values()) == 1


@pytest.fixture(scope="module")
def escape_run():
    # x^2 - y^2 + y^4/4 from just off the strict saddle at the origin
    return gd_probes("escape_saddle", [1e-3, 1e-6], lr=0.1, steps=200, every=5)


def test_gd_leaves_the_strict_saddle_for_a_minimum(escape_run):
    probes, events, counts = diagnose(escape_run, None, CFG)
    kinds = list(events["kind"])
    assert "strict_saddle" in kinds and kinds[-1] == "minimum"
    saddle = events[events["kind"] == "strict_saddle"].iloc[0]
    assert saddle["exited"] and saddle["escape_curvature"] == pytest.approx(-2.0, abs=0.02)
    assert saddle["lambda_min_entry"] == pytest.approx(-2.0, abs=0.02)
    assert kinds.index("strict_saddle") < len(kinds) - 1
    final = events.iloc[-1]
    assert final["loss_exit"] == pytest.approx(-1.0, abs=1e-4) and not final["exited"]
    assert np.isnan(final["loss_drop"]) and np.isnan(final["escape_curvature"])
    assert counts["strict_saddle"] == 1 and counts["minimum"] == 1
    # the episodes tile the timeline
    assert (events["start_step"].iloc[1:].to_numpy() == events["end_step"].iloc[:-1]).all()
    assert events["n_probes"].sum() == len(escape_run)


def test_thresholds_change_the_regimes(escape_run):
    base = classify(escape_run, None, CFG)["regime"]
    no_small = classify(escape_run, None, replace(CFG, grad_tol=1e-9, grad_abs=0.0))["regime"]
    assert "strict_saddle" in set(base) and "strict_saddle" not in set(no_small)
    assert "minimum" not in set(no_small)
    lenient = classify(escape_run, None, replace(CFG, neg_tol=10.0))["regime"]
    assert "strict_saddle" not in set(lenient)
    assert (lenient[base == "strict_saddle"] == "minimum").all()
    # any object with the attributes works; missing ones take the defaults
    for cfg in (OmegaConf.structured(CFG), SimpleNamespace(grad_tol=1e-3), None, {"name": "x"}):
        assert (classify(escape_run, None, cfg)["regime"] == base).all()


def test_subgradient_descent_on_abs_valley_ends_in_oscillation():
    for every in (4, 5):  # even and odd: the period-2 bounce aliased away, or seen
        probes = gd_probes("abs_valley", [1.03, 0.5], lr=0.1, steps=200, every=every)
        regimes = classify(probes, None, CFG)["regime"]
        assert regimes.iloc[-1] == "oscillation"
        assert regimes.iloc[0] == "descent"
        assert set(regimes.iloc[len(regimes) // 2 :]) == {"oscillation"}


@pytest.mark.parametrize(
    "factor,expected",
    [(0.95, "edge_of_stability"), (0.5, None), (1.1, "divergence")],
)
def test_edge_of_stability_on_a_quadratic(factor, expected):
    lam = 4.0  # curvature of x1; the other coordinate has curvature 1
    probes = gd_probes("quadratic", [1.0, 1.0], lr=factor * 2 / lam, steps=100, every=5, a=lam)
    probes, events, counts = diagnose(probes, None, CFG)
    regimes = set(probes["regime"])
    if expected is None:
        assert "edge_of_stability" not in regimes and "divergence" not in regimes
        assert events["kind"].iloc[-1] == "minimum"
    elif expected == "edge_of_stability":
        assert regimes == {"edge_of_stability"}
        assert probes["loss"].iloc[-1] < 1e-6 * probes["loss"].iloc[0]
    else:
        assert events["kind"].iloc[-1] == "divergence" and counts["divergence"] == 1
        assert np.isfinite(probes["loss"]).all()  # blow-up, not overflow
        assert probes["loss"].iloc[-1] > 1e6 * probes["loss"].iloc[0]
        assert "edge_of_stability" in regimes  # sharpness above 2/eta before the blow-up
        stricter = classify(probes, None, replace(CFG, blowup=1e20))["regime"]
        assert "divergence" not in set(stricter)


# --------------------------------------------------------------------------------------------
# hand-made records


def staged_run(seed=0):
    """A deep-linear-like loss curve: stalls at 1.0 and 0.6, then 0.25, then convergence."""
    t = np.arange(0, 4001, 50, dtype=float)
    sig = lambda z: 1 / (1 + np.exp(-z))
    loss = 1.0 - 0.4 * sig((t - 1050) / 20) - 0.35 * sig((t - 2050) / 20)
    loss -= 0.25 * sig((t - 3050) / 20)
    rate = (
        0.4 * sig((t - 1050) / 20) * (1 - sig((t - 1050) / 20))
        + 0.35 * sig((t - 2050) / 20) * (1 - sig((t - 2050) / 20))
        + 0.25 * sig((t - 3050) / 20) * (1 - sig((t - 3050) / 20))
    ) / 20
    grad = np.sqrt(rate / 0.1) + 0.02 * loss
    grad[t > 3500] = 1e-9
    return pd.DataFrame(
        {
            "step": t.astype(int),
            "seed": seed,
            "loss": loss,
            "grad_norm": grad,
            "lambda_max": 1.0,
            "lambda_min": 0.0,
        }
    )


def test_staged_loss_curve_has_two_plateaus():
    probes, events, counts = diagnose(staged_run(), None, CFG)
    stuck = events[events["kind"].isin(["plateau", "strict_saddle", "flat"])]
    assert len(stuck) >= 2
    assert (stuck["loss_entry"] > 0.5).sum() >= 2
    plateaus = events[events["kind"] == "plateau"]
    assert plateaus["start_step"].iloc[0] == 0 and plateaus["exited"].all()
    assert (plateaus["next_kind"] == "descent").all() and (plateaus["loss_drop"] > 0).all()
    assert events["kind"].iloc[-1] == "minimum"
    # the third stall, at 0.25, is a plateau only while the gap asked for is below 0.25
    assert counts["plateau"] == 3
    higher = summary_counts(episodes(classify(staged_run(), None, replace(CFG, plateau_gap=0.3))))
    assert higher["plateau"] == 2
    nothing_far = classify(staged_run(), None, replace(CFG, plateau_gap=1.0))
    assert "plateau" not in set(nothing_far["regime"])


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
        _row(0, loss=10.0, g=10.0, lmax=10.0),  # sets the scales
        _row(1, loss=9.0, g=1e-5, lmax=10.0, lmin=-5.0, two_over_lr=10.5),  # eos over saddle
        _row(2, loss=8.0, g=1e-5, lmax=5.0, lmin=-5.0, two_over_lr=10.5),  # strict saddle
        _row(3, loss=7.0, g=1e-5, lmax=1e-5, lmin=-1e-5),  # flat
        _row(4, loss=6.0, g=1e-5, lmax=5.0, lmin=-1e-5),  # minimum (lambda_min within tol)
        _row(5, loss=float("nan"), g=1e-5, lmax=10.0, two_over_lr=10.5),  # divergence
    ]
    regimes = list(classify(pd.DataFrame(rows), None, CFG)["regime"])
    assert regimes == [
        "descent",
        "edge_of_stability",
        "strict_saddle",
        "flat",
        "minimum",
        "divergence",
    ]
    f = flags(pd.DataFrame(rows), None, CFG)
    assert list(f.columns) == list(FLAG_COLUMNS) and f["eos"].iloc[2] == np.False_
    assert f["neg_curv"].iloc[1] and f["small_grad"].iloc[1]


def test_eos_threshold_prefers_momentum_threshold():
    rows = [_row(0, lmax=3.0, two_over_lr=3.0, eos_threshold=6.0)]  # (2 + 2 beta)/eta, beta=1
    assert regime_of(rows[0]) == "descent"
    assert regime_of({**rows[0], "eos_threshold": float("nan")}) == "edge_of_stability"


def test_divergence_from_metrics_is_absorbing():
    probes = pd.DataFrame([_row(s, loss=1.0 - s / 1000, g=1.0) for s in range(0, 500, 100)])
    metrics = pd.DataFrame(
        {
            "step": np.arange(0, 500, 10),
            "seed": 0,
            "loss": 1.0,
            "grad_norm": 1.0,
            "param_norm": 1.0,
            "update_norm": 0.1,
        }
    )
    metrics.loc[metrics["step"] == 250, "loss"] = np.inf
    regimes = classify(probes, metrics, CFG)["regime"]
    assert list(regimes) == ["descent"] * 3 + ["divergence"] * 2
    s = scales(probes, metrics, CFG)
    assert s["divergence_step"].iloc[0] == 250 and s["initial_loss"].iloc[0] == 1.0
    # a later probe that looks fine is still diverged once a probe was non-finite
    probes.loc[2, "grad_norm"] = np.nan
    assert list(classify(probes, None, CFG)["regime"])[2:] == ["divergence"] * 3


def test_seeds_are_separate_and_order_is_kept():
    a = staged_run(seed=0)
    b = staged_run(seed=1)
    b["loss"] = 1.0 + 0.0 * b["loss"]
    b["grad_norm"] = 0.0
    both = pd.concat([a, b]).sample(frac=1.0, random_state=0)
    out = classify(both, None, CFG)
    assert out.index.equals(both.index) and list(out.columns) == [*both.columns, "regime"]
    alone = classify(a, None, CFG)["regime"]
    assert (out[out["seed"] == 0].sort_values("step")["regime"].to_numpy() == alone).all()
    assert set(out[out["seed"] == 1]["regime"]) == {"minimum"}  # g = 0 throughout
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
    assert np.isnan(events.iloc[0]["escape_curvature"])  # descent is not a stuck regime
    last = events.iloc[-1]
    assert last["end_step"] == 30 and not last["exited"] and last["next_kind"] == ""
    counts = summary_counts(events)
    assert set(counts) == set(REGIMES) and counts["descent"] == 2


def test_timeline_text_and_table():
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
    _, events, _ = diagnose(staged_run(), None, CFG)
    table = timeline_table(events)
    assert isinstance(table, Table) and table.row_count == len(events)
    both = pd.concat([staged_run(0), staged_run(1)])
    assert format_timeline(diagnose(both)[1]).startswith("seed 0: steps 0–")


def test_empty_frames():
    empty = pd.DataFrame(columns=["step", "seed", "loss", "grad_norm", "lambda_max", "lambda_min"])
    probes, events, counts = diagnose(empty, None, CFG)
    assert "regime" in probes.columns and len(events) == 0
    assert list(events.columns) == list(EPISODE_COLUMNS) and sum(counts.values()) == 0
    assert format_timeline(events) == ""


def test_a_decaying_learning_rate_is_not_oscillation():
    probes = gd_probes("quadratic", [1.0, 1.0], lr=0.5, steps=400, every=10, b=0.02, decay=0.99)
    assert "oscillation" not in set(classify(probes, None, CFG)["regime"])
    unknown_lr = probes.assign(two_over_lr=np.nan, eos_threshold=np.nan)
    assert "oscillation" in set(classify(unknown_lr, None, CFG)["regime"])


def test_without_curvature_columns_small_gradients_are_minima():
    probes = pd.DataFrame(
        {"step": [0, 10, 20, 30], "loss": [1.0, 0.5, 0.5, 0.5], "grad_norm": [1.0, 0.1, 0, 0]}
    )
    assert list(classify(probes)["regime"]) == ["descent", "descent", "minimum", "minimum"]
