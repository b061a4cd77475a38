"""Diagnosis of optimization pathologies from probe records: a regime per probe, episodes.

Reads pandas frames only (no models, no Hydra). `probes`: one row per probe and seed with
`step`, `seed`, `loss`, `grad_norm`, `lambda_max`, `lambda_min`, optionally `eig_top_i`,
`eig_bottom_i`, `eos_threshold`, `two_over_lr`. `metrics` (optional): one row per logged step
and seed with `step`, `seed`, `loss`, `grad_norm`.

    probes, events, counts = diagnose(probes, metrics, cfg.detect)
    print(format_timeline(events))

Every test compares a dimensionless number measured at the probe, or over the `window` [5]
probes centred on it, with a threshold (`DetectConfig`, defaults in brackets). Multiplying
the loss by c (and dividing a gradient-descent step size by c, which leaves the iterates
unchanged) leaves every number, hence every label, unchanged; apart from the first loss L0
(divergence, float resolution) nothing refers to the run's other scales. Per probe, with L
the loss, g = ||g||, lambda_max and lambda_min the extreme probed eigenvalues, |lambda| =
max |lambda_i|, eta = 2 / `two_over_lr` (gradient descent family), and the loss gap

  gap = L - floor,  floor = min(0, lowest loss from this probe on)

(at least resolution [1e-6] * max(|L|, |floor|, |L0|), the float32 resolution of the loss;
the usual losses are >= 0, so the floor is 0 unless the run goes below it):

  s   = g^2 / (2 |lambda| gap)    stationarity. g^2 / (2 lambda) is what one exact line search
        along -g removes when the curvature along g is lambda <= |lambda|: s is the share of
        the remaining loss the gradient can still buy. A convex quadratic bowl has s <= 1
        (g^2 <= 2 lambda_max (L - L*)); at a saddle far above the floor s is tiny (Dauphin et
        al., 2014: critical points of high loss are saddles, not minima).
  nu  = -lambda_min / |lambda|    the share of negative curvature. A Ritz value never lies
        below the true lambda_min, so nu > neg_tol [1e-4] (float32 rounding) is certain.
  mu  = -lambda_min gap / g^2     negative curvature against the gradient: under gradient
        descent, eta |lambda_min| is the rate at which the iterate leaves along the negative
        direction and eta g^2 / gap the rate at which the gradient removes the gap. The
        scale-free reading of Jin et al.'s (2017) eps-second-order stationarity
        (||g|| <= eps, lambda_min >= -sqrt(rho eps)): a stationary point is a strict saddle
        when mu >= escape_ratio [10], the negative curvature dominating by a decade.
  eta |lambda|                    curvature per step; flat below flat_tol [1e-3] (the
        curvature changes the gradient by < 0.1% per step). Optimizers without a single step
        size (Adam, ...) use |lambda| / the run's largest |lambda| instead.
  lambda_max / ((1 - eos_margin [0.1]) T), T = `eos_threshold` ((2 + 2 beta)/eta for heavy
        ball) or `two_over_lr`; NaN for adaptive optimizers (Cohen et al., 2021).
  over the window:
  updown = (sum of loss rises) / (sum of loss falls)      (rises below float32 rounding,
        resolution * |L|, ignored): sign changes of the loss differences
  efficiency = (L_first - L_last) / sum(eta g_j g_j+1 dt) observed / first-order decrease
  rate = (L_first - L_last) / (steps * gap_first)         relative decrease per step

Tests (`flags()`; `margins()` gives each as a signed distance in decades, >= 0 when it holds):
  diverged     a non-finite loss, gradient or lambda, or L - L0 > blowup [1e6] |L0| (both
               absorbing: every probe from its step on, logged steps included), or the loss
               above where the run started, L > L0 + rise [1] |L0| (L0 the first loss).
  eos          lambda_max >= (1 - eos_margin) T.
  stationary   s <= grad_tol [1e-3]. Without curvature columns 2/eta stands in for |lambda|;
               without those either, g <= grad_tol * the run's largest g (first order only).
  neg_curv     nu > neg_tol.             escape: mu >= escape_ratio.
  flat_curv    eta |lambda| <= flat_tol.
  basin        s <= basin_tol [2] and mu <= basin_escape [0.01]: the gradient is what a
               convex bowl reaching the floor gives, and negative curvature, if any, acts at
               most 1% as fast as the gradient. Gradient descent on a quadratic is
               self-similar, so a scale-free rule gives its every probe one label: `minimum`.
  oscillating  updown >= oscillation_rise [0.1] (the loss gives back a tenth of what it
               gains), or, gradient descent family, efficiency <= oscillation_efficiency
               [0.05]: a failed Armijo (1966) sufficient-decrease test, the loss does not fall
               though the gradient says it should (kinks, non-smooth minima, steps too large).
  stall        rate <= plateau_rate [1e-4]: at this pace the gap takes > 10^4 steps.

Regimes, in precedence order (the first that holds wins; `REGIMES`):
  divergence         diverged
  edge_of_stability  eos: the step size, not the landscape, sets the dynamics.
  strict_saddle      stationary and neg_curv and escape (Dauphin et al., 2014; Jin et al., 2017)
  flat               stationary and flat_curv: degenerate critical points, flat regions.
  minimum            stationary (otherwise), or basin and not oscillating. Without curvature
                     columns every stationary probe is a `minimum` (first order only).
  oscillation        oscillating
  plateau            stall: slow, efficient progress with no critical point in reach
                     (Saxe et al., 2014; Dauphin et al., 2014).
  descent            none of the above.

Each probe's `regime_margin` is the distance in decades from the nearest threshold whose
crossing would change its label (its own condition, and every earlier regime's, which must
fail); `events.parquet` keeps the smallest margin of each episode.

Known limit: a concave slope within grad_tol of its asymptote (the far tail of a Gaussian well,
loss 1.498 under a supremum of 1.5) reads `strict_saddle`: it is a critical value at infinity,
and no local number tells it from a degenerate saddle. Jin et al.'s (2017) rho g / lambda_min^2,
with the Hessian-Lipschitz rho estimated over the window, is ~0.9 there and 0.45 (up to 1.1)
at the stages of a depth-3 linear network, which are saddles (`benchmarks/regimes.md`, fresh).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lossbench.pathology.config import DetectConfig, check_detect
from lossbench.pathology.criteria import FLAG_COLUMNS, MEASURE_COLUMNS, lambda_columns
from lossbench.pathology.episodes import EPISODE_COLUMNS, episodes, summary_counts
from lossbench.pathology.regimes import (
    MARGIN_COLUMN,
    REGIMES,
    SCALE_COLUMNS,
    STUCK,
    classify,
    flags,
    margins,
    measures,
    scales,
)
from lossbench.pathology.timeline import format_timeline, timeline_table


def diagnose(
    probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Classify every probe, cut the timeline into episodes and count them per regime.

    Returns:
      (probes with `regime` and `regime_margin` columns, episodes (`EPISODE_COLUMNS`),
      {regime: n episodes}).
    """
    check_detect(cfg)
    classified = classify(probes, metrics, cfg)
    events = episodes(classified, cfg)
    return classified, events, summary_counts(events)


__all__ = [
    "EPISODE_COLUMNS",
    "FLAG_COLUMNS",
    "MARGIN_COLUMN",
    "MEASURE_COLUMNS",
    "REGIMES",
    "SCALE_COLUMNS",
    "STUCK",
    "DetectConfig",
    "check_detect",
    "classify",
    "diagnose",
    "episodes",
    "flags",
    "format_timeline",
    "lambda_columns",
    "margins",
    "measures",
    "scales",
    "summary_counts",
    "timeline_table",
]
