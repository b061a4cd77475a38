"""The regime of every probe: one boolean test per rule, then the precedence order.

The rules, thresholds and precedence are stated in `lossbench.pathology`'s docstring.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lossbench.schema import DetectConfig

# In precedence order: the first regime whose test holds is the probe's regime.
REGIMES = (
    "divergence",
    "edge_of_stability",
    "strict_saddle",
    "flat",
    "minimum",
    "plateau",
    "oscillation",
    "descent",
)
# Regimes the run is held in; their episodes record how they were left (`escape_curvature`).
STUCK = ("strict_saddle", "flat", "minimum", "plateau")
# The per-probe tests behind the rules (`flags`), before precedence.
FLAG_COLUMNS = (
    "diverged",
    "eos",
    "small_grad",
    "neg_curv",
    "flat_curv",
    "stall",
    "far_above",
    "inefficient",
)
# The per-seed scales the relative thresholds refer to (`scales`).
SCALE_COLUMNS = (
    "seed",
    "grad_scale",
    "curvature_scale",
    "loss_range",
    "fastest_drop",
    "best_efficiency",
    "initial_loss",
    "divergence_step",
)

_DEFAULTS = DetectConfig()
_EIG = re.compile(r"^eig_(top|bottom)_\d+$")


def param(cfg: Any, name: str) -> Any:
    """`cfg.name` (attribute or key), or the `DetectConfig` default when `cfg` lacks it."""
    default = getattr(_DEFAULTS, name)
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def lambda_columns(frame: pd.DataFrame) -> list[str]:
    """The curvature columns of a probes frame: `lambda_max`, `lambda_min`, `eig_top/bottom_i`."""
    named = [c for c in ("lambda_max", "lambda_min") if c in frame.columns]
    return named + sorted(c for c in frame.columns if isinstance(c, str) and _EIG.match(c))


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
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


def _nanmax(values: np.ndarray, empty: float = 0.0) -> float:
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else empty


def _members(window_mask: np.ndarray, n: int, width: int) -> np.ndarray:
    """Per probe: does it belong to at least one window (of `width` probes) that is marked."""
    out = np.zeros(n, dtype=bool)
    if window_mask.size:
        out[: window_mask.size + width - 1] = (
            np.convolve(window_mask.astype(int), np.ones(width, dtype=int)) > 0
        )
    return out


def _first_finite(step: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    good = np.isfinite(loss)
    if not good.any():
        return np.inf, np.nan
    i = int(np.argmin(np.where(good, step, np.inf)))
    return float(step[i]), float(loss[i])


def _seed_flags(p: pd.DataFrame, m: pd.DataFrame | None, cfg: Any) -> tuple[dict, dict]:
    """The tests of every rule for one seed's probes `p` (sorted by step) and metrics `m`."""
    n = len(p)
    step, loss, g = _column(p, "step"), _column(p, "loss"), _column(p, "grad_norm")
    lam = np.column_stack([_column(p, c) for c in lambda_columns(p)] or [np.zeros((n, 0))])
    lam_hi = _row_reduce(lam, np.max, -np.inf)
    lam_lo = _row_reduce(lam, np.min, np.inf)
    lam_abs = _row_reduce(np.abs(lam), np.max, -np.inf)

    m_step = _column(m, "step") if m is not None else np.zeros(0)
    m_loss = _column(m, "loss") if m is not None else np.zeros(0)
    m_g = _column(m, "grad_norm") if m is not None else np.zeros(0)
    order = np.argsort(m_step, kind="stable")
    m_step, m_loss, m_g = m_step[order], m_loss[order], m_g[order]

    # divergence: non-finite values or a loss blow-up relative to the initial loss; absorbing
    s_p, l_p = _first_finite(step, loss)
    s_m, l_m = _first_finite(m_step, m_loss)
    initial = l_p if s_p <= s_m else l_m
    limit = param(cfg, "blowup") * max(1.0, abs(initial)) if np.isfinite(initial) else np.inf
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(loss) | ~np.isfinite(g) | np.isinf(lam).any(axis=1) | (loss > limit)
        bad_m = ~np.isfinite(m_loss) | (m_loss > limit)
        if m is not None and "grad_norm" in m.columns:
            bad_m |= ~np.isfinite(m_g)
    first_bad = min(np.min(step[bad], initial=np.inf), np.min(m_step[bad_m], initial=np.inf))
    diverged = step >= first_bad
    k = int(np.sum(~diverged))  # probes before divergence: a prefix (sorted by step)

    # scales of the run, before divergence
    g_scale = _nanmax(g[:k])
    c_scale = _nanmax(lam_abs[:k])
    with np.errstate(invalid="ignore"):
        small = g <= max(param(cfg, "grad_tol") * g_scale, param(cfg, "grad_abs"))
        neg = lam_lo < -max(param(cfg, "neg_tol") * c_scale, param(cfg, "curv_abs"))
        flat = lam_abs <= max(param(cfg, "flat_tol") * c_scale, param(cfg, "curv_abs"))
        threshold = _column(p, "eos_threshold")
        threshold = np.where(np.isfinite(threshold), threshold, _column(p, "two_over_lr"))
        eos = lam_hi >= (1.0 - param(cfg, "eos_margin")) * threshold

    # stall (plateau): windows of the loss whose spread per step is tiny against the run's
    # fastest drop per step; far above: well above the lowest loss the run reaches later
    loss_k, step_k = loss[:k], step[:k]
    stall = np.zeros(n, dtype=bool)
    far = np.zeros(n, dtype=bool)
    fastest = 0.0
    width = min(max(2, int(param(cfg, "plateau_window"))), k)
    if k >= 2:
        windows = sliding_window_view(loss_k, width)
        dt = step_k[width - 1 :] - step_k[: k - width + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(dt > 0, (windows[:, 0] - windows[:, -1]) / dt, np.nan)
            spread = np.where(dt > 0, (windows.max(1) - windows.min(1)) / dt, np.nan)
        fastest = max(0.0, _nanmax(rate))
        stall[:k] = _members(spread <= param(cfg, "plateau_drop") * fastest, k, width)
    loss_range = float(loss_k.max() - loss_k.min()) if k else 0.0
    if k:
        later_min = np.minimum.accumulate(loss_k[::-1])[::-1]
        far[:k] = loss_k - later_min > param(cfg, "plateau_gap") * loss_range

    # oscillation: the loss falls far less per step, per unit of squared gradient, than at the
    # run's best (an Armijo sufficient-decrease test with the run's own constant)
    inefficient = np.zeros(n, dtype=bool)
    best = 0.0
    width_o = min(max(2, int(param(cfg, "oscillation_window"))), k)
    if k >= 2:
        starts = np.arange(k - width_o + 1)
        ends = starts + width_o - 1
        ok_m = np.isfinite(m_g) & (m_step < first_bad)
        with np.errstate(divide="ignore"):
            lr = 2.0 / _column(p, "two_over_lr")[:k]  # the learning rate, under its schedule
        per_lr = bool(np.all(np.isfinite(lr) & (lr > 0)))
        eff = np.full(starts.size, np.nan)
        for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
            dt = step_k[e] - step_k[s]
            lo = np.searchsorted(m_step, step_k[s], side="left")
            hi = np.searchsorted(m_step, step_k[e], side="right")
            g2 = max(_nanmax(g[s : e + 1]), _nanmax(m_g[lo:hi][ok_m[lo:hi]])) ** 2
            if dt > 0 and g2 > 0 and not small[s : e + 1].any():
                eff[w] = (loss_k[s] - loss_k[e]) / (dt * g2)
                if per_lr:  # a decaying schedule is not a loss of efficiency
                    eff[w] /= lr[s : e + 1].mean()
        best = max(0.0, _nanmax(eff))
        with np.errstate(invalid="ignore"):
            marked = eff <= param(cfg, "oscillation_efficiency") * best
        inefficient[:k] = _members(marked, k, width_o)

    flags = {
        "diverged": diverged,
        "eos": eos,
        "small_grad": small,
        "neg_curv": neg,
        "flat_curv": flat,
        "stall": stall,
        "far_above": far,
        "inefficient": inefficient,
    }
    scales = {
        "grad_scale": g_scale,
        "curvature_scale": c_scale,
        "loss_range": loss_range,
        "fastest_drop": fastest,
        "best_efficiency": best,
        "initial_loss": initial,
        "divergence_step": first_bad if np.isfinite(first_bad) else np.nan,
    }
    return flags, scales


def _analyse(
    probes: pd.DataFrame, metrics: pd.DataFrame | None, cfg: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name in ("step", "loss", "grad_norm"):
        if name not in probes.columns:
            raise KeyError(f"probes frame has no column {name!r} (columns: {list(probes.columns)})")
    seeds = probes["seed"].to_numpy() if "seed" in probes.columns else np.zeros(len(probes))
    steps = pd.to_numeric(probes["step"], errors="coerce").to_numpy(dtype=float)
    values = {name: np.zeros(len(probes), dtype=bool) for name in FLAG_COLUMNS}
    rows = []
    for seed in np.unique(seeds):
        where = np.flatnonzero(seeds == seed)
        where = where[np.argsort(steps[where], kind="stable")]
        m = None
        if metrics is not None and len(metrics):
            m = metrics[metrics["seed"] == seed] if "seed" in metrics.columns else metrics
        seed_flags, seed_scales = _seed_flags(probes.iloc[where], m, cfg)
        for name, flag in seed_flags.items():
            values[name][where] = flag
        rows.append({"seed": seed, **seed_scales})
    flags = pd.DataFrame(values, index=probes.index)
    return flags, pd.DataFrame(rows, columns=list(SCALE_COLUMNS))


def flags(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per probe, the boolean test of every rule before precedence (`FLAG_COLUMNS`).

    Same index as `probes`. Useful to see why a probe got its regime.
    """
    return _analyse(probes, metrics, cfg)[0]


def scales(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per seed, the run's own scales that the relative thresholds use (`SCALE_COLUMNS`)."""
    return _analyse(probes, metrics, cfg)[1]


def regimes_from_flags(f: pd.DataFrame) -> np.ndarray:
    """The first regime, in `REGIMES` order, whose test holds for each probe."""
    small = f["small_grad"].to_numpy(bool)
    tests = [
        f["diverged"],
        f["eos"],
        small & f["neg_curv"],
        small & f["flat_curv"],
        small,
        f["stall"] & f["far_above"],
        f["inefficient"],
    ]
    tests = [np.asarray(t, dtype=bool) for t in tests]
    return np.select(tests, list(REGIMES[:-1]), default=REGIMES[-1]).astype(object)


def classify(
    probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None
) -> pd.DataFrame:
    """A copy of `probes` with a `regime` column (one of `REGIMES`), index and order kept.

    Args:
      probes: one row per probe and seed: `step`, `seed` (optional: one run), `loss`,
        `grad_norm`, `lambda_max`, `lambda_min`, optionally `eig_top_i`, `eig_bottom_i`,
        `eos_threshold`, `two_over_lr`.
      metrics: optional, one row per logged step and seed (`step`, `seed`, `loss`,
        `grad_norm`): finds a divergence between probes and refines the oscillation test.
      cfg: thresholds, any object with `DetectConfig`'s attributes (missing ones: defaults).
    """
    out = probes.copy()
    out["regime"] = regimes_from_flags(flags(probes, metrics, cfg)) if len(probes) else []
    return out
