"""Load what runs left on disk into pandas frames: one call per run, one call per sweep.

    from lossbench.analysis import load_run, load_sweep
    metrics = load_run("outputs/2026-11-25/12-00-00")           # metrics + config columns
    probes = load_run(run_dir, "probes")                          # one row per probe
    sweep = load_sweep("multirun/2026-11-25/12-00-00")            # every run, one frame

Each frame carries the run's resolved config flattened into dotted columns (`optimizer.lr`,
`model.widths`, ...; lists become tuples so they group), the run's `status`, and `run` (the
run directory relative to the sweep). Reads files only, never live objects.
"""

from __future__ import annotations

import json
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
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_spectra(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """SLQ nodes and weights per probe: arrays `step`, `seed`, `nodes`, `weights`."""
    path = Path(run_dir) / SPECTRA_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_run(run_dir: str | Path, table: str = "metrics", *, config: bool = True) -> pd.DataFrame:
    """One run's `table` ("metrics", "probes" or "events") with its config as dotted columns."""
    if table not in TABLES:
        raise ValueError(f"table={table!r} is not allowed: one of {sorted(TABLES)}")
    run_dir = Path(run_dir)
    path = run_dir / TABLES[table]
    frame = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if not config:
        return frame
    extra = {"status": load_summary(run_dir).get("status")}
    extra.update(flatten_config(load_config(run_dir)))
    if frame.empty:
        return pd.DataFrame(columns=[*frame.columns, *extra])
    columns = pd.DataFrame({k: [v] * len(frame) for k, v in extra.items()}, index=frame.index)
    return pd.concat([frame, columns], axis=1)


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every run directory under `sweep_dir` (those holding a summary.json), in order."""
    sweep_dir = Path(sweep_dir)
    found = sorted(p.parent for p in sweep_dir.rglob(SUMMARY_FILE))
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])


def load_sweep(sweep_dir: str | Path, table: str = "metrics") -> pd.DataFrame:
    """Every run under `sweep_dir` as one frame, with a `run` column naming each run's dir."""
    frames = []
    for run_dir in run_dirs(sweep_dir):
        frame = load_run(run_dir, table)
        frame.insert(0, "run", str(run_dir.relative_to(sweep_dir)))
        frames.append(frame)
    if not frames:
        raise FileNotFoundError(f"no runs (summary.json files) under {sweep_dir}")
    return pd.concat(frames, ignore_index=True)
