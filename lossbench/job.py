"""One job of the run loop: a run directory, its files and the host's bookkeeping for it.

The compiled program trains rows (`lossbench.train`): the seeds of one run, or the jobs x
seeds of a fused sweep (`lossbench.fused`). A `Job` owns the rows `rows` of that axis and
writes exactly the files a run of its own config would: it reads its slice of every chunk's
records, tracks its seeds' divergence, checkpoints its slice of the state, and stops (its
files final) when all its seeds diverged, while the other rows train on.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from lossbench.records import Divergence, metric_rows, probe_rows
from lossbench.results import Checkpoints, RunWriter, versions
from lossbench.snapshots import save_snapshot
from lossbench.train import TrainState


def rows_of(tree: Any, rows: slice) -> Any:
    """The rows `rows` of every leaf (the leading axis) of `tree`."""
    return jax.tree_util.tree_map(lambda a: a[rows], tree)


def state_tree(state: TrainState) -> dict:
    """The training state as a checkpointable tree (PRNG keys as their raw data)."""
    tree = state._asdict()
    tree["key"] = jax.random.key_data(state.key)
    return tree


def from_tree(tree: dict) -> TrainState:
    return TrainState(**{**tree, "key": jax.random.wrap_key_data(tree["key"])})


@dataclass
class Job:
    """A run directory and the rows `rows` of the program that train its seeds."""

    cfg: Any  # the frozen config
    record: dict  # the config as written (config_record)
    run_dir: Path
    rows: slice
    n_params: int
    writer: RunWriter = field(init=False)
    checkpoints: Checkpoints = field(init=False)
    divergence: Divergence = field(init=False)
    recorded_after: list[bool] = field(init=False)
    summary: dict = field(init=False)
    done: int = 0
    final_state: TrainState | None = None  # its rows of the state, once it stopped

    def __post_init__(self) -> None:
        t = self.cfg.trainer
        self.seed_ids = list(range(t.seed, t.seed + t.seeds))
        self.writer = RunWriter(self.run_dir)
        self.checkpoints = Checkpoints(self.run_dir, keep=t.keep_checkpoints)
        self.divergence = Divergence(t.seeds, t.blowup, t.diverged_ratio)
        self.recorded_after = [False] * t.seeds
        self.summary = {
            "status": "running",
            "steps_completed": 0,
            "steps": t.steps,
            "seeds": self.seed_ids,
            "n_params": self.n_params,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "versions": versions(),
            "config": self.record,
        }

    @property
    def active(self) -> bool:
        return self.final_state is None

    def heartbeat(self, **changes) -> None:
        self.summary.update(changes, heartbeat=time.time())
        self.writer.write_summary(self.summary)

    def restore(self, like: TrainState) -> tuple[TrainState, int]:
        """Its rows of the state and the host's bookkeeping from its last checkpoint."""
        step = self.checkpoints.latest_step()
        tree, host = self.checkpoints.restore(step, like=state_tree(like))
        self.done = int(host["steps_completed"])
        self.divergence.restore(host["divergence"])
        self.recorded_after = list(host["recorded_after"])
        self.writer.restore(self.done)
        self.summary["resumed_from"] = self.done
        return from_tree(tree), self.done

    def checkpoint(self, state: TrainState, step: int) -> None:
        """Its rows of the group's `state` (the state of a run of its own) at `step`."""
        self._save(rows_of(state, self.rows), step)

    def save_final(self) -> None:
        """A checkpoint of the state it stopped at (trainer.save_params)."""
        self._save(self.final_state, self.done)

    def _save(self, mine: TrainState, step: int) -> None:
        host = {
            "steps_completed": step,
            "divergence": self.divergence.state(),
            "recorded_after": self.recorded_after,
        }
        self.checkpoints.save(step, state_tree(mine), host)

    def snapshot(self, state: TrainState, step: int) -> None:
        """The parameters at `step` into snapshots/ (trainer.snapshot_every; the final step too)."""
        t = self.cfg.trainer
        if t.snapshot_every and (step % t.snapshot_every == 0 or step == t.steps):
            save_snapshot(self.run_dir, step, jax.device_get(rows_of(state.params, self.rows)))

    def record_probe(self, probe: dict, step: int) -> None:
        """Its rows of a probe's records (numpy, host side) into probes.parquet."""
        self.writer.probes.append(
            probe_rows(
                rows_of(probe, self.rows),
                step,
                self.seed_ids,
                self.divergence,
                self.writer,
                self.recorded_after,
            )
        )

    def record_chunk(self, out: dict, start: int, logged: list[int]) -> None:
        """Its rows of a chunk's records (numpy, host side): divergence, metrics, probes."""
        mine = rows_of(out, self.rows)
        self.divergence.update(mine["loss"], start)
        self.writer.metrics.append(metric_rows(mine, logged, start, self.seed_ids, self.divergence))
        self.done = start + mine["loss"].shape[1]
        if "probe" in out:
            self.record_probe(out["probe"], self.done)
        self.writer.flush()

    def stop(self, state: TrainState) -> None:
        """Its files are final: keep its rows of the state for the end-of-run figures."""
        self.final_state = rows_of(state, self.rows)

    def fail(self, exc: BaseException) -> None:
        self.summary.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        self.writer.flush()

    def final_figures(self, values: dict, surface: tuple | None) -> dict:
        """The final evaluation (`values`: prefix -> metric -> its rows' values): the mean over
        live seeds and per seed; for a model that is its own loss (a surface), `surface` =
        (final points, final losses) of its rows."""
        figures = {}
        alive = [s for s in range(len(self.seed_ids)) if self.divergence.step[s] < 0]
        for prefix, metrics in values.items():
            for k, v in metrics.items():
                figures[f"{prefix}{k}"] = float(np.mean(v[alive])) if alive else float("nan")
                figures[f"{prefix}{k}_per_seed"] = v.tolist()
        if surface is not None:
            point, loss = surface
            figures["final_point"] = point.tolist()
            figures["final_loss"] = float(np.mean(loss))
            figures["final_loss_per_seed"] = loss.tolist()
        return figures

    def probe_warnings(self) -> list[str]:
        """Probes whose top Ritz pair has not converged (residual > 1% of |lambda_max|)."""
        path = self.writer.probes.path
        if not path.exists():
            return []
        probes = pd.read_parquet(path, columns=None)
        if "res_top_1" not in probes or "lambda_max" not in probes:
            return []
        ratio = probes["res_top_1"].abs() / probes["lambda_max"].abs().clip(lower=1e-30)
        worst = ratio.idxmax() if ratio.notna().any() else None
        if worst is None or ratio[worst] <= 1e-2:
            return []
        return [
            f"probe: the top Ritz pair has residual {probes['res_top_1'][worst]:.3g} "
            f"({ratio[worst]:.0%} of |lambda_max|) at step {int(probes['step'][worst])}: "
            "raise probe.lanczos_steps"
        ]


__all__ = ["Job", "from_tree", "rows_of", "state_tree"]
