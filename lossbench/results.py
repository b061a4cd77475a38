"""The files a run leaves (DESIGN's contract), written as the run goes.

    metrics.parquet  one row per logged step and seed
    probes.parquet   one row per probe and seed
    spectra.npz      SLQ nodes and weights per probe (plain arrays: loads without pickle)
    events.parquet   one row per episode of a regime (see `lossbench.pathology`)
    summary.json     status, final figures, event counts, wall time, versions
    checkpoint/      final parameters (orbax), to re-probe or continue a run

Column names are public API: add, never rename.
"""

from __future__ import annotations

import json
import logging
import math
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METRICS_FILE = "metrics.parquet"
PROBES_FILE = "probes.parquet"
SPECTRA_FILE = "spectra.npz"
EVENTS_FILE = "events.parquet"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoint"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("lossbench", "jax", "jaxlib", "flax", "optax", "matfree", "hydra-core"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes (integers int64, figures float64) so streamed row groups share a schema."""
    frame = frame.copy()
    for column in frame.columns:
        kind = frame[column].dtype.kind
        if column in ("step", "seed") or kind in "iu":
            frame[column] = frame[column].astype("int64")
        elif kind == "f":
            frame[column] = frame[column].astype("float64")
    return frame


class _StreamingTable:
    """A parquet file appended one row group at a time; readable once closed."""

    def __init__(self, path: Path):
        self.path, self.writer, self.schema = path, None, None

    def append(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        frame = _normalise(frame)
        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        else:
            frame = frame.reindex(columns=self.schema.names)
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RunWriter:
    """Writes a run's files into `run_dir` as the run goes; `close()` finishes them."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = _StreamingTable(self.run_dir / METRICS_FILE)
        self.probes = _StreamingTable(self.run_dir / PROBES_FILE)
        self._spectra: dict[str, list] = {"step": [], "seed": [], "nodes": [], "weights": []}

    def add_spectra(self, step: int, seed: int, nodes: np.ndarray, weights: np.ndarray) -> None:
        for name, value in (("step", step), ("seed", seed), ("nodes", nodes), ("weights", weights)):
            self._spectra[name].append(np.asarray(value))

    def write_events(self, events: pd.DataFrame) -> None:
        _normalise(events).to_parquet(self.run_dir / EVENTS_FILE, index=False)

    def write_summary(self, summary: dict) -> None:
        path = self.run_dir / SUMMARY_FILE
        path.write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")

    def save_params(self, params) -> None:
        import orbax.checkpoint as ocp

        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file at INFO
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save((self.run_dir / CHECKPOINT_DIR).absolute(), params, force=True)

    def close(self) -> None:
        self.metrics.close()
        self.probes.close()
        if self._spectra["step"]:
            np.savez(
                self.run_dir / SPECTRA_FILE,
                **{name: np.stack(values) for name, values in self._spectra.items()},
            )


def load_params(run_dir: str | Path):
    """The final parameters a run saved (one leading seed axis), as numpy arrays."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore((Path(run_dir) / CHECKPOINT_DIR).absolute())


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / Inf are written as null (strict JSON)
    return value
