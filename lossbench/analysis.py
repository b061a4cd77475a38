"""Load what runs left on disk into pandas frames: one call per run, one call per sweep.

    from lossbench.analysis import load_run, load_sweep
    metrics = load_run("outputs/2026-11-25/12-00-00")           # metrics + config columns
    probes = load_run(run_dir, "probes")                          # one row per probe
    sweep = load_sweep("multirun/2026-11-25/12-00-00")            # every run, one frame

Each frame carries the run's resolved config flattened into dotted columns (`optimizer.lr`,
`model.widths`, ...; lists become tuples so they group), the run's `status`, and `run` (the
run directory relative to the sweep). Reads files only, never live objects.

A run that died without a word (kill -9, a lost node) still says `running` in its summary;
its status reads `crashed` here once its process is gone (same host) or its heartbeat is
older than `STALE_AFTER_S`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench.results import (
    EVENTS_FILE,
    METRICS_FILE,
    PROBES_FILE,
    SPECTRA_FILE,
    SUMMARY_FILE,
)

TABLES = {"metrics": METRICS_FILE, "probes": PROBES_FILE, "events": EVENTS_FILE}
STALE_AFTER_S = 600.0  # a running run on another host whose heartbeat is older is crashed


def is_run_dir(path: str | Path) -> bool:
    """A directory a lossbench run wrote (its summary, or Hydra's record of its config)."""
    path = Path(path)
    return (path / SUMMARY_FILE).is_file() or (path / ".hydra" / "config.yaml").is_file()


def _require_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {SUMMARY_FILE})")


def load_config(run_dir: str | Path) -> dict:
    """The run's resolved config as a nested dict (read through OmegaConf, as Hydra wrote it)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def flatten_config(config: dict, prefix: str = "") -> dict:
    """Nested dict -> {"optimizer.lr": 0.1, "model.widths": (128, 128), ...}."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = tuple(value)
        else:
            flat[name] = value
    return flat


def load_summary(run_dir: str | Path) -> dict:
    """The run's summary.json, with `status` read as `crashed` for a run that died running."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    if summary.get("status") == "running" and _is_dead(summary):
        summary["status"] = "crashed"
    return summary


def _is_dead(summary: dict) -> bool:
    pid, host = summary.get("pid"), summary.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - float(summary.get("heartbeat") or 0) > STALE_AFTER_S


def load_spectra(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """SLQ nodes and weights per probe: arrays `step`, `seed`, `nodes`, `weights`."""
    path = Path(run_dir) / SPECTRA_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_run(run_dir: str | Path, table: str = "metrics", *, config: bool = True) -> pd.DataFrame:
    """One run's `table` ("metrics", "probes" or "events") with its config as dotted columns.

    Raises FileNotFoundError when `run_dir` is not a run directory; a run without that table
    (no probes, a failed run) gives an empty frame."""
    if table not in TABLES:
        raise ValueError(f"table={table!r} is not allowed: one of {sorted(TABLES)}")
    run_dir = Path(run_dir)
    _require_run_dir(run_dir)
    path = run_dir / TABLES[table]
    frame = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if not config:
        return frame
    return _with_run_columns(frame, run_dir)


def _with_run_columns(frame: pd.DataFrame, run_dir: Path, **more) -> pd.DataFrame:
    summary = load_summary(run_dir)
    extra = {"status": summary.get("status"), **more}
    extra.update(flatten_config(load_config(run_dir)))
    if frame.empty:
        return pd.DataFrame(columns=[*frame.columns, *extra])
    columns = pd.DataFrame({k: [v] * len(frame) for k, v in extra.items()}, index=frame.index)
    return pd.concat([frame, columns], axis=1)


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every run directory under `sweep_dir`, in job order (failed and crashed ones too)."""
    sweep_dir = Path(sweep_dir)
    found = {p.parent for p in sweep_dir.rglob(SUMMARY_FILE)}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    found = {p for p in found if "previous-" not in str(p.relative_to(sweep_dir))}
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])


def load_sweep(sweep_dir: str | Path, table: str = "metrics") -> pd.DataFrame:
    """Every run under `sweep_dir` as one frame, with a `run` column naming each run's dir.

    A job that left no rows (failed, crashed before its first chunk) is one row holding its
    `status`, `error` and config; a file that cannot be read is named in `warning` (and in a
    Python warning), never a reason to stop."""
    sweep_dir = Path(sweep_dir)
    frames = []
    for run_dir in run_dirs(sweep_dir):
        name = str(run_dir.relative_to(sweep_dir))
        try:
            frame = load_run(run_dir, table, config=False)
            problem = None
        except Exception as exc:  # a damaged file: name it, keep going
            frame, problem = pd.DataFrame(), f"{run_dir / TABLES[table]}: {exc}"
            warnings.warn(f"load_sweep: {problem}", stacklevel=2)
        more = {"warning": problem} if problem else {}
        if frame.empty:
            frame = pd.DataFrame({"step": pd.array([pd.NA], dtype="Int64")})
            more["error"] = load_summary(run_dir).get("error")
        frame = _with_run_columns(frame, run_dir, **more)
        frame.insert(0, "run", name)
        frames.append(frame)
    if not frames:
        raise FileNotFoundError(f"no runs (summary.json files) under {sweep_dir}")
    return pd.concat(frames, ignore_index=True)


SWEEP_COLUMNS = (
    "run",
    "status",
    "steps_completed",
    "final_loss",
    "final_test_accuracy",
    "lambda_max",
    "final_regime",
    "error",
)


def sweep_table(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job of a sweep: status, steps, final loss and test accuracy, the last
    probed lambda_max (mean over the run's seeds), the final regime (seed 0's), the error of
    a failed job."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for run_dir in run_dirs(sweep_dir):
        summary = load_summary(run_dir)
        row = {k: summary.get(k) for k in SWEEP_COLUMNS}
        row["run"] = str(run_dir.relative_to(sweep_dir))
        row["status"] = summary.get("status", "crashed")
        regimes = summary.get("final_regime") or {}
        row["final_regime"] = next(iter(regimes.values()), None)
        try:  # the last probe's, averaged over the run's seeds
            probes = pd.read_parquet(run_dir / PROBES_FILE, columns=["step", "lambda_max"])
            last = probes.loc[probes["step"] == probes["step"].max(), "lambda_max"]
            row["lambda_max"] = float(np.nanmean(last)) if last.notna().any() else None
        except Exception:
            row["lambda_max"] = None
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def format_sweep_table(table: pd.DataFrame) -> str:
    """The sweep table as aligned text (what a sweep prints when it ends)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    columns = [c for c in table.columns if c != "error" or table[c].notna().any()]
    cells = [[cell(v) for v in row] for row in table[columns].itertuples(index=False)]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The last logged step's row of each run and seed (of `load_sweep` or `load_run`).

    `frame.groupby(keys).last()` would give the last *row* of each group, which in a run of
    several seeds is the last seed's, and takes each column's last non-missing value on its
    own; this keeps whole rows, one per seed:

        final_rows(load_sweep(sweep_dir)).groupby("optimizer.lr").test_accuracy.mean()
    """
    keys = [k for k in ("run", "seed") if k in frame.columns]
    ordered = frame.sort_values("step", kind="stable", na_position="first")
    last = ordered.groupby(keys, sort=False, dropna=False).tail(1) if keys else ordered.tail(1)
    return last.sort_index().reset_index(drop=True)
