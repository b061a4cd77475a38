"""The files a run leaves (DESIGN's contract), written as the run goes and readable at every moment.

    metrics.parquet  one row per logged step and seed
    probes.parquet   one row per probe and seed
    spectra.npz      SLQ nodes and weights per probe (plain arrays: loads without pickle)
    events.parquet   one row per episode of a regime (see `lossbench.pathology`)
    summary.json     status (running, then completed / diverged / failed / interrupted),
                     heartbeat, final figures, event counts, wall time, versions, the config
    checkpoint/      orbax checkpoints of the whole training state, one folder per step: the
                     latest ones to resume a run, the last one holds the final parameters

Every file is published by writing a temporary file in the same directory and renaming it
over the old one (`os.replace`, atomic on POSIX), so a reader, or a run killed with SIGKILL,
only ever sees a complete file holding every chunk that finished. Tables are small (a row per
logged step), so each chunk rewrites its tables whole: measured in benchmarks/loop_overhead.py.

Column names are public API: add, never rename.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import uuid
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


def publish(path: Path, write) -> None:
    """Write a file atomically: `write(tmp_path)` fills a temporary file beside `path`, which
    is then renamed over `path`. Readers, and a run killed at any moment, see the old file or
    the new one, never a part. (Survives the death of the process, not of the machine: no
    fsync.)"""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    publish(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(path: Path, value: dict) -> None:
    text = json.dumps(jsonable(value), indent=2, allow_nan=False) + "\n"
    publish(path, lambda tmp: tmp.write_text(text))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes (integers int64, figures float64) so chunks share a schema."""
    frame = frame.copy()
    for column in frame.columns:
        kind = frame[column].dtype.kind
        if column in ("step", "seed") or kind in "iu":
            frame[column] = frame[column].astype("int64")
        elif kind == "f":
            frame[column] = frame[column].astype("float64")
    return frame


class Table:
    """A parquet table grown one chunk at a time and republished whole after each chunk."""

    def __init__(self, path: Path):
        self.path, self.tables, self.schema = Path(path), [], None

    def append(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        frame = _normalise(frame)
        if self.schema is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.schema = table.schema
        else:
            frame = frame.reindex(columns=self.schema.names)
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self.tables.append(table)

    def restore(self, keep) -> None:
        """Start from the rows on disk whose `step` passes `keep(steps)` (a resumed run)."""
        if not self.path.exists():
            return
        table = pq.read_table(self.path)
        mask = keep(table.column("step").to_numpy())
        self.schema = table.schema
        self.tables = [table.filter(pa.array(mask))]

    def flush(self) -> None:
        if not self.tables:
            return
        table = pa.concat_tables(self.tables)
        self.tables = [table]
        publish(self.path, lambda tmp: pq.write_table(table, tmp))


class RunWriter:
    """Writes a run's files into `run_dir` as the run goes; each `flush()` publishes them."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Table(self.run_dir / METRICS_FILE)
        self.probes = Table(self.run_dir / PROBES_FILE)
        self._spectra: dict[str, list] = {"step": [], "seed": [], "nodes": [], "weights": []}

    def add_spectra(self, step: int, seed: int, nodes: np.ndarray, weights: np.ndarray) -> None:
        for name, value in (("step", step), ("seed", seed), ("nodes", nodes), ("weights", weights)):
            self._spectra[name].append(np.asarray(value))

    def restore(self, step: int) -> None:
        """Keep what the files hold up to a checkpoint at `step`: metrics of the steps before
        it, probes and spectra up to it (a resumed run then appends exactly what follows)."""
        self.metrics.restore(lambda steps: steps < step)
        self.probes.restore(lambda steps: steps <= step)
        path = self.run_dir / SPECTRA_FILE
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                keep = data["step"] <= step
                for name in self._spectra:
                    self._spectra[name] = list(data[name][keep])

    def flush(self) -> None:
        self.metrics.flush()
        self.probes.flush()
        if self._spectra["step"]:
            arrays = {name: np.stack(values) for name, values in self._spectra.items()}
            publish(self.run_dir / SPECTRA_FILE, lambda tmp: _savez(tmp, arrays))

    def write_events(self, events: pd.DataFrame) -> None:
        write_parquet(self.run_dir / EVENTS_FILE, _normalise(events))

    def write_summary(self, summary: dict) -> None:
        write_json(self.run_dir / SUMMARY_FILE, summary)


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
        np.savez(handle, **arrays)


def _quiet_orbax() -> None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file at INFO


class Checkpoints:
    """The run's orbax checkpoints in `checkpoint/<step>/`: the training state (a pytree of
    arrays) and a small JSON record of the host's state. Orbax writes each step into a
    temporary folder and renames it when complete, so a kill leaves the earlier ones intact."""

    def __init__(self, run_dir: str | Path, keep: int | None = None):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            (Path(run_dir) / CHECKPOINT_DIR).absolute(), options=options
        )

    def save(self, step: int, state, host: dict) -> None:
        ocp = self._ocp
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(jsonable(host))
        )
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, like=None) -> tuple:
        """(state, host) at `step`; `like` (a pytree of arrays or shapes) fixes the structure."""
        ocp = self._ocp
        target = None
        if like is not None:
            import jax

            target = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=args)
        return restored.state, restored.host

    def close(self) -> None:
        self.manager.close()


def load_params(run_dir: str | Path):
    """The parameters of a run's last checkpoint (the final ones for a finished run), with a
    leading seed axis, as arrays."""
    path = Path(run_dir) / CHECKPOINT_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: the run saved no parameters")
    checkpoints = Checkpoints(run_dir)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise FileNotFoundError(f"{path} holds no complete checkpoint")
        state, _ = checkpoints.restore(step)
    finally:
        checkpoints.close()
    return state["params"]


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic | np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / Inf are written as null (strict JSON)
    return value
