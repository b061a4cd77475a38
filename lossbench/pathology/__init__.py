"""Diagnosis of optimization pathologies from probe records: a regime per probe, episodes.

Reads pandas frames only (no models, no Hydra). `probes`: one row per probe and seed with
`step`, `seed`, `loss`, `grad_norm`, `lambda_max`, `lambda_min`, optionally `eig_top_i`,
`eig_bottom_i`, `eos_threshold`, `two_over_lr`. `metrics` (optional): one row per logged step
and seed with `step`, `seed`, `loss`, `grad_norm`.

    probes, events, counts = diagnose(probes, metrics, cfg.detect)
    print(format_timeline(events))

Scales (per seed, from the probes before any divergence; `scales()` returns them):
  g*  = max ||g||,  c* = max |lambda| over all curvature columns,  R = max - min of the loss,
  r*  = fastest net loss drop per step over any window of `plateau_window` probes,
  e*  = best "efficiency" over windows of `oscillation_window` probes (see oscillation).

Tests (`flags()` returns them per probe; defaults of `DetectConfig` in brackets):
  diverged     loss or grad_norm non-finite, or an infinite lambda, or
               loss > blowup [1e6] * max(1, |initial loss|), in a probe or in a metrics row;
               absorbing: every probe at or after the first such step.
  eos          lambda_max >= (1 - eos_margin [0.1]) * T, T = `eos_threshold` ((2 + 2 beta)/eta
               for heavy-ball momentum beta), else `two_over_lr` (2/eta); never when T is NaN
               (adaptive optimizers). Cohen et al. (2021).
  small_grad   ||g|| <= max(grad_tol [1e-3] * g*, grad_abs [1e-6]). The absolute floor makes a
               run that sits on a critical point (||g|| = 0 throughout, g* = 0) count as small.
  neg_curv     lambda_min < -max(neg_tol [1e-3] * c*, curv_abs [1e-6]): certain negative
               curvature (Lanczos Ritz values never lie below the true lambda_min).
  flat_curv    every probed |lambda| <= max(flat_tol [1e-3] * c*, curv_abs [1e-6]).
  stall        the probe lies in a window of `plateau_window` [3] probes over which
               (max - min loss) / steps <= plateau_drop [0.01] * r*.
  far_above    loss - (lowest loss from this probe on) > plateau_gap [0.1] * R.
  inefficient  the probe lies in a window of `oscillation_window` [3] probes, none with a small
               gradient, whose efficiency (loss_first - loss_last) / (steps * G^2), G the largest
               gradient norm in the window (probes and metrics rows), is
               <= oscillation_efficiency [0.05] * e*. When every probe has a finite
               `two_over_lr`, the efficiency is divided by the window's mean learning rate
               (2 / two_over_lr), so that a decaying schedule is not read as oscillation. For
               gradient descent it is then the ratio of the actual to the first-order decrease,
               about 1 - eta lambda / 2; a window that fails it fails an Armijo (1966)
               sufficient-decrease test with the run's own constant: the loss stops falling
               (or rises) while the gradient does not vanish.

Regimes, in precedence order (the first that holds wins; `REGIMES`):
  divergence         diverged
  edge_of_stability  eos: the step size, not the landscape, sets the dynamics; GD cannot settle
                     at a point sharper than 2/eta, so a saddle/minimum label there misleads.
  strict_saddle      small_grad and neg_curv (Dauphin et al., 2014; Jin et al., 2017)
  flat               small_grad and flat_curv: degenerate critical points (monkey saddle),
                     flat regions; second order is inconclusive there.
  minimum            small_grad otherwise: lambda_min >= -tol and some curvature is not near 0.
                     Without curvature columns every small-gradient probe is a `minimum`
                     (first-order stationary); degenerate saddles with lambda_min = 0 < lambda_max
                     are indistinguishable from minima at second order (Anandkumar & Ge, 2016).
  plateau            stall and far_above, gradient not small: the loss stalls far above what the
                     run later reaches (deep linear networks: Saxe et al., 2014).
  oscillation        inefficient: non-differentiable minima, steps too large for the valley,
                     SGD at its noise floor.
  descent            none of the above.
The three small-gradient regimes partition the small-gradient probes (strict_saddle first if
flat_tol > neg_tol lets a lambda be both); so precedence matters only between divergence,
edge_of_stability, the small-gradient group, plateau, oscillation and descent. A stall with a
small gradient is explained by the critical point it sits at, hence saddle/flat before plateau.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lossbench.pathology.episodes import EPISODE_COLUMNS, episodes, summary_counts
from lossbench.pathology.regimes import (
    FLAG_COLUMNS,
    REGIMES,
    SCALE_COLUMNS,
    STUCK,
    classify,
    flags,
    lambda_columns,
    scales,
)
from lossbench.pathology.timeline import format_timeline, timeline_table


def diagnose(
    probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Classify every probe, cut the timeline into episodes and count them per regime.

    Returns:
      (probes with a `regime` column, episodes (`EPISODE_COLUMNS`), {regime: n episodes}).
    """
    classified = classify(probes, metrics, cfg)
    events = episodes(classified, cfg)
    return classified, events, summary_counts(events)


__all__ = [
    "EPISODE_COLUMNS",
    "FLAG_COLUMNS",
    "REGIMES",
    "SCALE_COLUMNS",
    "STUCK",
    "classify",
    "diagnose",
    "episodes",
    "flags",
    "format_timeline",
    "lambda_columns",
    "scales",
    "summary_counts",
    "timeline_table",
]
