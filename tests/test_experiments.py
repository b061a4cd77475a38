"""Shortened versions of the gallery in experiments/: each asserts its paper's qualitative
claim, and the scripts write only where they are told to."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import REPO


def _experiment(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_catapult_phases():
    """Lewkowycz et al. (2020): lazy below ηλ0 = 2, catapult between 2 and 4, divergence above."""
    catapult = _experiment("catapult")
    lazy, catapulted, divergent = catapult.experiment(rates=(1.5, 3.0, 5.0), steps=60, width=256)
    assert not lazy["diverged"] and lazy["monotone"]
    assert lazy["final_eta_lambda"] == pytest.approx(1.5, rel=0.05)  # λ stays at λ0
    assert not catapulted["diverged"] and catapulted["peak_ratio"] > 2  # the loss spikes ...
    assert catapulted["final_eta_lambda"] < 2 < catapulted["c"]  # ... and λ falls below 2/η
    assert catapulted["final_loss"] == pytest.approx(lazy["final_loss"], rel=0.05)
    assert divergent["diverged"]


def test_saddle_free_newton_escapes_where_newton_is_trapped():
    """Dauphin et al. (2014), Fig. 2: on 5x² − y² Newton converges to the saddle, gradient
    descent escapes slowly, saddle-free Newton fast."""
    sfn = _experiment("saddle_free_newton")
    results = sfn.experiment(steps=80)
    gd, newton, free = (results[m] for m in sfn.METHODS)
    assert newton["escape_step"] is None and newton["closest_to_saddle"] < 1e-6
    np.testing.assert_allclose(newton["points"][1:], 0.0, atol=1e-6)  # one step onto it
    # y grows by 1 + 2η = 1.1 per step under GD, doubles under SFN: ln(1000)/ln(1.1) ≈ 72.5
    # steps against ln(1000)/ln 2 ≈ 10 to reach |y| = 1 from 10⁻³
    assert gd["escape_step"] == pytest.approx(np.log(1e3) / np.log(1.1), abs=2)
    assert free["escape_step"] == pytest.approx(np.log(1e3) / np.log(2.0), abs=1)


@pytest.mark.slow
def test_pgd_escape_time_grows_like_log_dimension():
    """Jin et al. (2017): from a strict saddle, perturbed GD escapes in O(log d) steps; here
    the mean escape time is linear in ln d with slope ½/ln(1 + ηγ)."""
    pgd = _experiment("pgd_escape_dimension")
    result = pgd.experiment(dimensions=(4, 64, 1024), seeds=16, steps=250)
    assert result["never"] == 0
    assert np.all(np.diff(result["means"]) > 0)
    assert result["slope"] == pytest.approx(result["predicted_slope"], rel=0.25)
    # 256x more dimensions cost well under 2x the steps: nothing like a power of d
    assert result["means"][-1] < 1.5 * result["means"][0]


@pytest.mark.slow
def test_init_scale_plateau_follows_saxe_eq_11(tmp_path):
    """Saxe et al. (2014), eq. 11: from strength u0 a mode of strength s is half learned after
    τ/(2s) ln((s − u0)/u0), so the plateau grows like ln(1/σ)/s as the init scale σ shrinks."""
    isp = _experiment("init_scale_plateau")
    result = isp.experiment(tmp_path, scales=(1e-2, 1e-4), steps=900, seeds=2)
    s = result["s"]
    np.testing.assert_allclose(s, [3.0, 2.0, 1.0, 0.5], rtol=1e-5)
    learned = s >= 1.0  # s = 0.5 needs 1600 steps at σ = 1e-4
    for row in result["rows"]:
        ratio = row["measured"][learned] / row["predicted"][learned]
        np.testing.assert_allclose(ratio, 1.0, atol=0.06)
        assert np.all(np.diff(row["measured"][learned]) > 0)  # weaker modes later
    # 100x smaller weights: u0 10^4 smaller, 2η·s·Δsteps = ln(10^4)/2 = 4.6 e-folds later
    small, large = result["rows"]
    shift = (large["measured"] - small["measured"])[learned] * 2 * isp.LR * s[learned]
    np.testing.assert_allclose(shift, np.log(1e4) / 2, rtol=0.06)


@pytest.mark.parametrize(
    "name",
    [
        "catapult",
        "saddle_free_newton",
        "pgd_escape_dimension",
        # these three train lossbench runs (compilation included: ~20 s each when loaded)
        pytest.param("init_scale_plateau", marks=pytest.mark.slow),
        pytest.param("edge_of_stability", marks=pytest.mark.slow),
        pytest.param("deep_linear_stages", marks=pytest.mark.slow),
    ],
)
def test_scripts_write_only_where_told(name, tmp_path, monkeypatch):
    """Run as scripts they write into --out (default: outputs/experiments/NAME), and the
    figure to --figure only when asked: never over the tracked copy by accident."""
    module = _experiment(name)
    monkeypatch.setattr(module, "experiment", _tiny(module))
    tracked = REPO / "experiments" / f"{name}.png"
    before = tracked.stat().st_mtime_ns if tracked.exists() else None
    assert module.main(["--out", str(tmp_path / "out"), "--figure", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "out" / f"{name}.md").read_text().startswith("|")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert (tracked.stat().st_mtime_ns if tracked.exists() else None) == before


def _tiny(module):
    original = module.experiment
    if module.__name__ == "catapult":
        return lambda **kw: original(rates=(1.5, 5.0), steps=20, width=64)
    if module.__name__ == "pgd_escape_dimension":
        return lambda **kw: original(dimensions=(2, 4), seeds=2, steps=150)
    if module.__name__ == "init_scale_plateau":
        return lambda out, **kw: original(out, scales=(1e-1, 1e-2), steps=200, seeds=2)
    if module.__name__ == "edge_of_stability":
        return lambda out, **kw: original(out, steps=200, rates=(0.2,))
    if module.__name__ == "deep_linear_stages":
        return lambda out, **kw: original(out, steps=200)
    return lambda steps: original(steps=20)
