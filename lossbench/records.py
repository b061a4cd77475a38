"""Host-side bookkeeping of a run: divergence per seed, and the rows each chunk adds to the files.

Pure numpy / pandas over what a compiled chunk returned; no JAX, no files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class Divergence:
    """Tracks, per seed, the first step whose loss is non-finite or blew up (`blowup` times
    the initial loss, at least 1), and the last step whose loss was at most `ratio` times the
    initial loss (a run whose loss ends above that line diverged too, e.g. cross-entropy whose
    logits grew: it never overflows, but it ends far worse than it started)."""

    def __init__(self, seeds: int, blowup: float, ratio: float):
        self.blowup, self.ratio = blowup, ratio
        self.initial = np.full(seeds, np.nan)
        self.step = np.full(seeds, -1, dtype=np.int64)
        self.last_below = np.full(seeds, -1, dtype=np.int64)

    def update(self, losses: np.ndarray, start: int) -> None:
        """`losses` is (seeds, steps) for steps start, start + 1, ..."""
        for s, row in enumerate(losses):
            if np.isnan(self.initial[s]) and np.isfinite(row[0]):
                self.initial[s] = row[0]
            if self.step[s] >= 0:
                continue
            scale = max(1.0, abs(self.initial[s]))
            bad = ~np.isfinite(row) | (np.abs(row) > self.blowup * scale)
            if bad.any():
                self.step[s] = start + int(np.argmax(bad))
            below = np.flatnonzero(row <= self.ratio * abs(self.initial[s]))
            if below.size:
                self.last_below[s] = start + int(below[-1])

    def settle(self, steps_done: int) -> None:
        """At the end: a seed whose loss stayed above `ratio` times a positive initial loss
        over the last 5% of the run (one step at least) diverged where it crossed for good."""
        tail = max(1, steps_done // 20)
        for s in range(len(self.step)):
            crossed = self.last_below[s] + 1
            if self.step[s] < 0 and self.initial[s] > 0 and steps_done - crossed >= tail:
                self.step[s] = crossed

    @property
    def all(self) -> bool:
        return bool(np.all(self.step >= 0))

    def alive(self, seed_index: int, step: int) -> bool:
        return self.step[seed_index] < 0 or step <= self.step[seed_index]

    def state(self) -> dict:
        """What a checkpoint keeps of it (JSON)."""
        return {
            "initial": [None if np.isnan(v) else float(v) for v in self.initial],
            "step": self.step.tolist(),
            "last_below": self.last_below.tolist(),
        }

    def restore(self, state: dict) -> None:
        self.initial = np.array([np.nan if v is None else v for v in state["initial"]], float)
        self.step = np.array(state["step"], dtype=np.int64)
        self.last_below = np.array(state["last_below"], dtype=np.int64)


def metric_rows(out, logged, start, seed_ids, divergence) -> pd.DataFrame:
    """Rows of one chunk: every logged step (`logged`, the absolute steps of the chunk's log
    records), plus the step a seed diverged at (its loss only) when that was not logged."""
    logs = {k: np.asarray(v) for k, v in out["log"].items()}
    evals = {k: np.asarray(v) for k, v in out["eval"].items()}
    losses = np.asarray(out["loss"])
    rows = []
    for s, seed in enumerate(seed_ids):
        for i, step in enumerate(logged):
            if divergence.alive(s, step):
                row = {"step": step, "seed": seed, **{k: v[s, i] for k, v in logs.items()}}
                rows.append({**row, **{k: v[s, i] for k, v in evals.items()}})
        at = divergence.step[s] - start
        if 0 <= at < losses.shape[1] and start + at not in logged:
            rows.append({"step": start + at, "seed": seed, "loss": losses[s, at]})
    return pd.DataFrame(rows)


def probe_rows(record, step, seed_ids, divergence, writer, recorded_after) -> pd.DataFrame:
    """Rows of one probe; a diverged seed keeps the first probe that saw its divergence."""
    record = {k: np.asarray(v) for k, v in record.items()}
    rows = []
    for s, seed in enumerate(seed_ids):
        if divergence.step[s] >= 0 and recorded_after[s]:
            continue
        if divergence.step[s] >= 0:
            recorded_after[s] = True
        row = {"step": step, "seed": seed}
        for k, v in record.items():
            if k in ("density_nodes", "density_weights"):
                continue
            row[k] = v[s]
        if "density_nodes" in record:
            writer.add_spectra(step, seed, record["density_nodes"][s], record["density_weights"][s])
        rows.append(row)
    return pd.DataFrame(rows)
