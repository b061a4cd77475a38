"""The regime of every probe: the tests of `criteria`, then the precedence order, with margins.

The rules, thresholds and precedence are stated in `lossbench.pathology`'s docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lossbench.pathology.criteria import FLAG_COLUMNS, MEASURE_COLUMNS, column, seed_tests

# In precedence order: the first regime whose test holds is the probe's regime.
REGIMES = (
    "divergence",
    "edge_of_stability",
    "strict_saddle",
    "flat",
    "minimum",
    "oscillation",
    "plateau",
    "descent",
)
# Regimes the run is held in; their episodes record how they were left (`escape_curvature`).
STUCK = ("strict_saddle", "flat", "minimum", "plateau")
# The per-seed scales (`scales`): the first loss, the step of an absorbing divergence, and the
# largest |lambda| (used only by the flat test of optimizers without a step size).
SCALE_COLUMNS = ("seed", "initial_loss", "divergence_step", "curvature_scale")
MARGIN_COLUMN = "regime_margin"


def _conditions(t: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The signed margin (decades) of each regime's own condition, in `REGIMES` order (but the
    last): AND is a minimum, OR a maximum; a condition holds when its margin is >= 0."""
    stationary = t["stationary"]
    return [
        t["diverged"],
        t["eos"],
        np.minimum(stationary, np.minimum(t["neg_curv"], t["escape"])),
        np.minimum(stationary, t["flat_curv"]),
        np.maximum(stationary, np.minimum(t["basin"], -t["oscillating"])),
        t["oscillating"],
        t["stall"],
    ]


def regimes_and_margins(margins: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first regime whose condition holds, and its margin: the distance in decades to the
    nearest threshold that would change the label (its own condition, and every earlier one
    that must fail)."""
    conditions = _conditions(margins)
    n = len(conditions[0])
    regime = np.full(n, REGIMES[-1], dtype=object)
    margin = np.full(n, np.inf)
    decided = np.zeros(n, dtype=bool)
    against = np.full(n, np.inf)  # min over earlier conditions of -margin
    for name, cond in zip(REGIMES[:-1], conditions, strict=True):
        now = ~decided & (cond >= 0)
        regime[now] = name
        margin[now] = np.minimum(cond[now], against[now])
        decided |= now
        against = np.minimum(against, -cond)
    margin[~decided] = against[~decided]
    return regime, margin


def _analyse(probes: pd.DataFrame, metrics: pd.DataFrame | None, cfg: Any) -> dict:
    for name in ("step", "loss", "grad_norm"):
        if name not in probes.columns:
            raise KeyError(f"probes frame has no column {name!r} (columns: {list(probes.columns)})")
    n = len(probes)
    seeds = probes["seed"].to_numpy() if "seed" in probes.columns else np.zeros(n)
    steps = column(probes, "step")
    measures = {name: np.full(n, np.nan) for name in MEASURE_COLUMNS}
    margins = {name: np.full(n, -np.inf) for name in FLAG_COLUMNS}
    rows = []
    for seed in np.unique(seeds):
        where = np.flatnonzero(seeds == seed)
        where = where[np.argsort(steps[where], kind="stable")]
        m = None
        if metrics is not None and len(metrics):
            m = metrics[metrics["seed"] == seed] if "seed" in metrics.columns else metrics
        seed_measures, seed_margins, seed_scales = seed_tests(probes.iloc[where], m, cfg)
        for name, values in seed_measures.items():
            measures[name][where] = values
        for name, values in seed_margins.items():
            margins[name][where] = values
        rows.append({"seed": seed, **seed_scales})
    scales_frame = pd.DataFrame(rows, columns=list(SCALE_COLUMNS))
    return {"measures": measures, "margins": margins, "scales": scales_frame}


def measures(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per probe, the dimensionless numbers the tests compare with thresholds
    (`MEASURE_COLUMNS`); same index as `probes`."""
    return pd.DataFrame(_analyse(probes, metrics, cfg)["measures"], index=probes.index)


def margins(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per probe, the signed margin in decades of every test (`FLAG_COLUMNS`; >= 0: holds)."""
    return pd.DataFrame(_analyse(probes, metrics, cfg)["margins"], index=probes.index)


def flags(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per probe, the boolean test of every rule before precedence (`FLAG_COLUMNS`).

    Same index as `probes`. Useful to see why a probe got its regime.
    """
    return margins(probes, metrics, cfg) >= 0


def scales(probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None):
    """Per seed, the few run-level references (`SCALE_COLUMNS`)."""
    return _analyse(probes, metrics, cfg)["scales"]


def classify(
    probes: pd.DataFrame, metrics: pd.DataFrame | None = None, cfg: Any = None
) -> pd.DataFrame:
    """A copy of `probes` with `regime` (one of `REGIMES`) and `regime_margin` columns.

    `regime_margin` is the distance, in decades, from the nearest threshold that would change
    the label (inf: decided by exact zeros, or no competing test applies). Index and order kept.

    Args:
      probes: one row per probe and seed: `step`, `seed` (optional: one run), `loss`,
        `grad_norm`, `lambda_max`, `lambda_min`, optionally `eig_top_i`, `eig_bottom_i`,
        `eos_threshold`, `two_over_lr`.
      metrics: optional, one row per logged step and seed (`step`, `seed`, `loss`,
        `grad_norm`): finds a divergence between probes and the lowest loss reached.
      cfg: thresholds, any object with `DetectConfig`'s attributes (missing ones: defaults).
    """
    out = probes.copy()
    if not len(probes):
        out["regime"] = pd.Series([], dtype=object)
        out[MARGIN_COLUMN] = pd.Series([], dtype=float)
        return out
    regime, margin = regimes_and_margins(_analyse(probes, metrics, cfg)["margins"])
    out["regime"] = regime
    out[MARGIN_COLUMN] = margin
    return out
