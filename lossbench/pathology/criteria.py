"""The dimensionless measures of every probe and the tests built on them (one seed at a time).

Each test returns a signed margin in decades, log10(threshold / value) or its reverse, so
that the test holds exactly when the margin is >= 0; `lossbench.pathology.regimes` combines
them by precedence. The rules and their reasons are in `lossbench.pathology`'s docstring.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from lossbench.pathology.config import param

# The per-probe measures (`measures()` columns), all unchanged by loss -> c * loss, eta -> eta/c.
MEASURE_COLUMNS = (
    "loss_gap",  # L - floor, at least resolution * max(|L|, |floor|, |L0|)
    "stationarity",  # s = g^2 / (2 |lambda| gap)
    "neg_ratio",  # nu = -lambda_min / |lambda|
    "escape_ratio",  # mu = -lambda_min gap / g^2
    "step_curvature",  # eta |lambda| (or |lambda| / the run's largest |lambda|)
    "eos_ratio",  # lambda_max / ((1 - eos_margin) eos_threshold)
    "rise_ratio",  # (L - L0) / (rise |L0|)
    "updown",  # sum of loss rises / sum of loss falls over the window
    "efficiency",  # (L_first - L_last) / sum(eta g^2) over the window
    "rate",  # (L_first - L_last) / (steps * gap_first) over the window
)
# The tests (`flags()` columns): each holds when its margin is >= 0.
FLAG_COLUMNS = (
    "diverged",
    "eos",
    "stationary",
    "neg_curv",
    "escape",
    "flat_curv",
    "basin",
    "oscillating",
    "stall",
)
CAP = 3.0  # decades: the margin of a test whose value is past any scale (a loss that rose)
_EIG = re.compile(r"^eig_(top|bottom)_\d+$")


def lambda_columns(frame: pd.DataFrame) -> list[str]:
    """The curvature columns of a probes frame: `lambda_max`, `lambda_min`, `eig_top/bottom_i`."""
    named = [c for c in ("lambda_max", "lambda_min") if c in frame.columns]
    return named + sorted(c for c in frame.columns if isinstance(c, str) and _EIG.match(c))


def column(frame: pd.DataFrame | None, name: str) -> np.ndarray:
    """A numeric column as floats; NaN where missing (or an empty array without a frame)."""
    if frame is None:
        return np.zeros(0)
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _row_reduce(values: np.ndarray, reduce, fill: float) -> np.ndarray:
    """Row-wise nan-reduction that gives NaN (without a warning) for rows with no value."""
    if values.shape[1] == 0:
        return np.full(len(values), np.nan)
    missing = np.isnan(values)
    out = reduce(np.where(missing, fill, values), axis=1)
    return np.where(missing.all(axis=1), np.nan, out)


def _ratio(num: np.ndarray, den: np.ndarray, zero_over_zero: float = 0.0) -> np.ndarray:
    """num / den with x/0 = inf (x > 0), 0/0 = `zero_over_zero`, NaN kept."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = num / den
    out = np.where((den == 0) & (num > 0), np.inf, out)
    return np.where((den == 0) & (num == 0), zero_over_zero, out)


def decades_below(value: np.ndarray, threshold: float, at_or_below_zero: float = np.inf):
    """Margin of `value <= threshold` in decades, log10(threshold / value): >= 0 exactly when
    it holds. A value <= 0 gives `at_or_below_zero` (when the test holds there), NaN -inf."""
    value = np.asarray(value, float)
    positive = value > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(threshold) - np.log10(np.where(positive, value, 1.0))
    out = np.where(positive, out, at_or_below_zero if threshold >= 0 else -np.inf)
    return np.where(np.isnan(value), -np.inf, out)


def decades_above(value: np.ndarray, threshold: float) -> np.ndarray:
    """Margin of `value >= threshold` in decades, log10(value / threshold); -inf for a value
    <= 0 (unless the threshold is 0) or NaN."""
    value = np.asarray(value, float)
    positive = value > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.where(positive, value, 1.0)) - np.log10(threshold)
    out = np.where(positive, out, np.inf if threshold == 0 else -np.inf)
    out = np.where((value == 0) & (threshold == 0), 0.0, out)
    return np.where(np.isnan(value), -np.inf, out)


def _first_loss(step, loss, m_step, m_loss) -> float:
    steps = np.r_[step[np.isfinite(loss)], m_step[np.isfinite(m_loss)]]
    losses = np.r_[loss[np.isfinite(loss)], m_loss[np.isfinite(m_loss)]]
    return float(losses[np.argmin(steps)]) if steps.size else np.nan


def _divergence(p, m, cfg, lam) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per probe: diverged (bool), margin; and the first loss L0 and absorbing step."""
    step, loss, g = column(p, "step"), column(p, "loss"), column(p, "grad_norm")
    m_step, m_loss, m_g = column(m, "step"), column(m, "loss"), column(m, "grad_norm")
    initial = _first_loss(step, loss, m_step, m_loss)
    scale = abs(initial) if np.isfinite(initial) else 0.0
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(loss) | ~np.isfinite(g) | np.isinf(lam).any(axis=1)
        bad_m = ~np.isfinite(m_loss)
        if m is not None and "grad_norm" in m.columns:
            bad_m |= ~np.isfinite(m_g)
        if scale > 0:
            bad |= loss - initial > param(cfg, "blowup") * scale
            bad_m |= m_loss - initial > param(cfg, "blowup") * scale
    absorbing = min(np.min(step[bad], initial=np.inf), np.min(m_step[bad_m], initial=np.inf))
    rise = _ratio(loss - initial, np.full(loss.shape, param(cfg, "rise") * scale))
    if scale == 0:
        rise = np.full(loss.shape, -np.inf)
    diverged = (step >= absorbing) | (rise > 1)
    margin = np.where(step >= absorbing, np.inf, decades_above(rise, 1.0))
    return diverged, margin, initial, absorbing


def _windows(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per probe i < n, the first and last index of the `width` probes centred on it."""
    width = max(1, min(int(width), n))
    lo = np.clip(np.arange(n) - (width - 1) // 2, 0, max(n - width, 0))
    return lo, lo + width - 1


def seed_tests(p: pd.DataFrame, m: pd.DataFrame | None, cfg: Any) -> tuple[dict, dict, dict]:
    """For one seed's probes `p` (sorted by step) and metrics `m`: measures, margins, scales."""
    n = len(p)
    step, loss, g = column(p, "step"), column(p, "loss"), column(p, "grad_norm")
    lam = np.column_stack([column(p, c) for c in lambda_columns(p)] or [np.zeros((n, 0))])
    lam_hi = _row_reduce(lam, np.max, -np.inf)
    lam_lo = _row_reduce(lam, np.min, np.inf)
    lam_abs = _row_reduce(np.abs(lam), np.max, -np.inf)
    two_over_lr = column(p, "two_over_lr")
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(two_over_lr > 0, 2.0 / two_over_lr, np.nan)
    m_step, m_loss = column(m, "step"), column(m, "loss")
    order = np.argsort(m_step, kind="stable")
    m_step, m_loss = m_step[order], m_loss[order]

    diverged, div_margin, initial, absorbing = _divergence(p, m, cfg, lam)
    alive = step < absorbing
    k = int(alive.sum())  # probes before an absorbing divergence: a prefix (sorted by step)

    # floor: min(0, the lowest loss from this probe on, probes and logged steps alike)
    later = np.full(n, np.inf)
    if k:
        later[:k] = np.minimum.accumulate(loss[:k][::-1])[::-1]
        if m_step.size:
            m_alive = (m_step < absorbing) & np.isfinite(m_loss)
            m_later = np.minimum.accumulate(np.where(m_alive, m_loss, np.inf)[::-1])[::-1]
            at = np.searchsorted(m_step, step[:k], side="left")
            m_min = np.where(at < m_step.size, m_later[np.minimum(at, m_step.size - 1)], np.inf)
            later[:k] = np.minimum(later[:k], m_min)
    floor = np.minimum(0.0, later)
    with np.errstate(invalid="ignore"):
        size = np.maximum(np.abs(loss), np.abs(floor))
        rounding = param(cfg, "resolution") * np.where(np.isfinite(size), size, 0.0)
        size = np.maximum(size, abs(initial) if np.isfinite(initial) else 0.0)
        # below resolution * |L0| a float32 run cannot tell the loss from its floor
        gap = np.maximum(loss - floor, param(cfg, "resolution") * size)

    # stationarity, curvature shape and dominance (fallbacks without curvature columns)
    has_curv = np.isfinite(lam_abs)
    ref = np.where(has_curv, lam_abs, 2.0 / eta)  # without curvature: 2/eta, the stable bound
    s = _ratio(g**2, 2 * ref * gap)
    nu = np.where(has_curv, _ratio(-lam_lo, lam_abs), np.nan)
    mu = np.where(has_curv & (lam_lo < 0), _ratio(-lam_lo * gap, g**2, np.inf), 0.0)
    c_star = np.nanmax(np.where(alive & has_curv, lam_abs, np.nan), initial=0.0) if n else 0.0
    phi = np.where(np.isfinite(eta), eta * lam_abs, _ratio(lam_abs, np.full(n, c_star)))
    threshold = column(p, "eos_threshold")
    threshold = np.where(np.isfinite(threshold), threshold, two_over_lr)
    eos_ratio = _ratio(lam_hi, (1.0 - param(cfg, "eos_margin")) * threshold)

    stationary = decades_below(s, param(cfg, "grad_tol"))
    no_ref = ~np.isfinite(ref)
    if no_ref.any():  # neither curvature nor step size: the run's own largest gradient
        g_star = np.nanmax(np.where(alive, g, np.nan), initial=0.0) if n else 0.0
        stationary = np.where(
            no_ref, decades_below(_ratio(g, np.full(n, g_star)), param(cfg, "grad_tol")), stationary
        )
    neg = decades_above(nu, param(cfg, "neg_tol"))
    neg = np.where(has_curv & (lam_lo < 0), neg, -np.inf)
    escape = np.where(has_curv, decades_above(mu, param(cfg, "escape_ratio")), -np.inf)
    flat = np.where(has_curv, decades_below(phi, param(cfg, "flat_tol")), -np.inf)
    weak = decades_below(mu, param(cfg, "basin_escape"))
    basin = np.where(has_curv, np.minimum(decades_below(s, param(cfg, "basin_tol")), weak), -np.inf)
    eos = np.where(np.isfinite(eos_ratio), decades_above(eos_ratio, 1.0), -np.inf)

    # time-local window tests: sign changes, first-order efficiency, relative rate
    updown = np.full(n, np.nan)
    efficiency = np.full(n, np.nan)
    rate = np.full(n, np.nan)
    lo, hi = _windows(k, param(cfg, "window")) if k else (np.zeros(0, int), np.zeros(0, int))
    for i in range(k):
        a, b = lo[i], hi[i]
        if b <= a:
            continue
        d = np.diff(loss[a : b + 1])
        d = np.where(np.abs(d) > rounding[a : b + 1].max(), d, 0.0)  # float32 rounding
        up, down = d[d > 0].sum(), -d[d < 0].sum()
        updown[i] = _ratio(np.array(up), np.array(down))
        dt = np.diff(step[a : b + 1])
        drop = loss[a] - loss[b]
        rate[i] = _ratio(np.array(drop), np.array((step[b] - step[a]) * gap[a]))
        predicted = np.sum(dt * eta[a:b] * g[a:b] * g[a + 1 : b + 1])
        if np.isfinite(predicted) and predicted > 0:
            efficiency[i] = drop / predicted
    rise = param(cfg, "oscillation_rise")
    signs = decades_above(updown, rise)  # rises only (a fall of 0) count as well
    eff = param(cfg, "oscillation_efficiency")
    inefficient = decades_below(efficiency, eff, CAP)
    oscillating = np.maximum(signs, inefficient)
    stall = decades_below(rate, param(cfg, "plateau_rate"), CAP)

    measures = {
        "loss_gap": gap,
        "stationarity": s,
        "neg_ratio": nu,
        "escape_ratio": mu,
        "step_curvature": phi,
        "eos_ratio": eos_ratio,
        "rise_ratio": _ratio(loss - initial, np.full(n, param(cfg, "rise") * abs(initial))),
        "updown": updown,
        "efficiency": efficiency,
        "rate": rate,
    }
    margins = {
        "diverged": div_margin,
        "eos": eos,
        "stationary": stationary,
        "neg_curv": neg,
        "escape": escape,
        "flat_curv": flat,
        "basin": basin,
        "oscillating": oscillating,
        "stall": stall,
    }
    # a probe after an absorbing divergence takes no other test
    for name in FLAG_COLUMNS[1:]:
        margins[name] = np.where(alive, margins[name], -np.inf)
    scales = {
        "initial_loss": initial,
        "divergence_step": absorbing if np.isfinite(absorbing) else np.nan,
        "curvature_scale": c_star,
    }
    return measures, margins, scales
