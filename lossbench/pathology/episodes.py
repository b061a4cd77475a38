"""Episodes: runs of consecutive probes of one regime, per seed (the `events.parquet` rows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lossbench.pathology.regimes import REGIMES, STUCK

EPISODE_COLUMNS = (
    "seed",
    "kind",  # the regime
    "start_step",  # step of the episode's first probe
    "end_step",  # step of the first probe after it; the last probe's step if it never ends
    "n_probes",
    "loss_entry",  # at the first probe
    "loss_exit",  # at `end_step`
    "lambda_min_entry",
    "lambda_max_entry",
    "grad_norm_entry",
    "exited",  # a probe of another regime follows
    "loss_drop",  # loss_entry - loss at the first probe after (NaN if not exited)
    "escape_curvature",  # STUCK kinds that were left: lambda_min at the episode's last probe
    "next_kind",  # regime of the first probe after ("" if not exited)
    "regime_margin",  # the smallest `regime_margin` of its probes (decades; NaN if unknown)
)


# Consecutive probes of these regimes whose loss fell by more than LEVEL_DROP of its gap
# (L - min(0, lowest loss from there on)) start a new episode: the run left one saddle (or
# plateau) for the next, lower one (the stages of deep linear networks, Saxe et al. 2014,
# when no probe falls in a drop).
SEPARATE_LEVELS = ("strict_saddle", "flat", "plateau")
LEVEL_DROP = 0.1


def _value(frame: pd.DataFrame, name: str, i: int) -> float:
    return float(frame[name].iloc[i]) if name in frame.columns else float("nan")


def episodes(probes_with_regime: pd.DataFrame, cfg: Any = None) -> pd.DataFrame:
    """Consecutive probes of one regime (per seed) as one row each, every regime included.

    All regimes become episodes, `descent` too, so that the rows of a seed tile its whole
    probed timeline. A saddle, flat or plateau probe whose loss fell by more than 10% of the
    previous probe's loss gap starts a new episode: the run reached another level.
    Sorted by seed and start step. `cfg` is accepted for symmetry with `classify` and not
    used: the episodes follow from the regimes (and losses) alone.
    """
    del cfg
    frame = probes_with_regime
    if "regime" not in frame.columns:
        raise KeyError("episodes() needs a `regime` column: call classify() first")
    seeds = frame["seed"].to_numpy() if "seed" in frame.columns else np.zeros(len(frame), int)
    rows = []
    for seed in np.unique(seeds):
        p = frame.iloc[np.flatnonzero(seeds == seed)].sort_values("step", kind="stable")
        kinds = p["regime"].astype(str).to_numpy()
        steps = p["step"].to_numpy()
        margin = p["regime_margin"].to_numpy(float) if "regime_margin" in p.columns else None
        loss = (
            pd.to_numeric(p["loss"], errors="coerce").to_numpy(float)
            if "loss" in p.columns
            else np.full(len(p), np.nan)
        )
        with np.errstate(invalid="ignore"):  # a stuck run that fell to another level
            finite = np.where(np.isfinite(loss), loss, np.inf)
            gap = loss - np.minimum(0.0, np.minimum.accumulate(finite[::-1])[::-1])
            moved = (loss[1:] < loss[:-1] - LEVEL_DROP * gap[:-1]) & np.isin(
                kinds[1:], SEPARATE_LEVELS
            )
        starts = np.flatnonzero(np.r_[True, (kinds[1:] != kinds[:-1]) | moved])
        ends = np.r_[starts[1:], len(p)]  # one past the last probe of each episode
        for first, after in zip(starts, ends, strict=True):
            last = after - 1
            exited = after < len(p)
            kind = kinds[first]
            loss_entry = _value(p, "loss", first)
            loss_after = _value(p, "loss", after) if exited else float("nan")
            rows.append(
                {
                    "seed": seed.item() if hasattr(seed, "item") else seed,
                    "kind": kind,
                    "start_step": steps[first].item(),
                    "end_step": steps[after if exited else last].item(),
                    "n_probes": int(after - first),
                    "loss_entry": loss_entry,
                    "loss_exit": loss_after if exited else _value(p, "loss", last),
                    "lambda_min_entry": _value(p, "lambda_min", first),
                    "lambda_max_entry": _value(p, "lambda_max", first),
                    "grad_norm_entry": _value(p, "grad_norm", first),
                    "exited": bool(exited),
                    "loss_drop": loss_entry - loss_after,
                    "escape_curvature": (
                        _value(p, "lambda_min", last) if exited and kind in STUCK else np.nan
                    ),
                    "next_kind": kinds[after] if exited else "",
                    "regime_margin": (
                        float(np.min(margin[first:after])) if margin is not None else np.nan
                    ),
                }
            )
    return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS))


def summary_counts(episodes_frame: pd.DataFrame) -> dict[str, int]:
    """Number of episodes of each regime (all seeds together); every regime is a key."""
    counts = {kind: 0 for kind in REGIMES}
    for kind, n in episodes_frame["kind"].value_counts().items():
        counts[str(kind)] = int(n)
    return counts
