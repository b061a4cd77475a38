"""Diagnose a run from its files: regimes per probe, episodes, counts; also after the fact.

    lossbench diagnose RUN_DIR [detect.grad_tol=1e-2 ...]

reads the run's `probes.parquet` and `metrics.parquet` (never the model), classifies every
probe with `lossbench.pathology`, and writes the probes with their `regime`, `events.parquet`
and the summary with the counts and thresholds used into a new `diagnosis-<time>/` folder
beside the run's own files, which it never touches (`--in-place` replaces them instead). A run
without probes is diagnosed from its metrics rows alone (first-order regimes only). The
thresholds are checked as a run checks them: a bad one is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from lossbench import pathology
from lossbench.errors import ConfigError
from lossbench.results import (
    EVENTS_FILE,
    METRICS_FILE,
    PROBES_FILE,
    SUMMARY_FILE,
    RunWriter,
    write_parquet,
)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def diagnose_run(
    run_dir, detect, summary: dict | None = None, *, print_table=False, out_dir=None
) -> dict:
    """Classify a finished run's probes; write events and regimes (into `out_dir`, the run
    directory unless given); return the updated summary."""
    run_dir = Path(run_dir)
    out_dir = run_dir if out_dir is None else Path(out_dir)
    metrics = _read(run_dir / METRICS_FILE)
    probes = _read(run_dir / PROBES_FILE)
    source = "probes" if not probes.empty else "metrics"
    records = probes if not probes.empty else metrics
    if summary is None:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    if records.empty:
        return summary
    classified, events, counts = pathology.diagnose(
        records.drop(columns=["regime"], errors="ignore"), metrics, detect
    )
    if source == "probes":
        write_parquet(out_dir / PROBES_FILE, classified)
    RunWriter(out_dir).write_events(events)
    summary["events"] = counts
    summary["diagnosed_from"] = source
    summary["detect"] = _as_dict(detect)
    summary["final_regime"] = {
        str(seed): str(group.sort_values("step").regime.iloc[-1])
        for seed, group in classified.groupby("seed")
    }
    if print_table and not events.empty:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # logs and pipes: do not wrap the table at 80 columns
            console = Console(width=120)
        console.print(pathology.timeline_table(events))
    return summary


def _as_dict(detect) -> dict:
    if dataclasses.is_dataclass(detect):
        return {f.name: getattr(detect, f.name) for f in dataclasses.fields(detect)}
    return dict(detect)


def load_detect(run_dir: Path, overrides: list[str]):
    """The run's `detect` config with `detect.key=value` overrides, type-checked by the schema."""
    from omegaconf import OmegaConf

    from lossbench.pathology import DetectConfig

    detect = OmegaConf.structured(DetectConfig)
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.exists():
        detect = OmegaConf.merge(detect, OmegaConf.load(saved).get("detect", {}))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("detect."):
            raise ValueError(f"override {item!r} is not allowed: detect.KEY=VALUE")
        detect = OmegaConf.merge(detect, OmegaConf.from_dotlist([f"{key[7:]}={value}"]))
    return OmegaConf.to_object(detect)


def diagnose_main(argv: list[str]) -> int:
    """`lossbench diagnose RUN_DIR [detect.k=v ...] [--in-place]`: re-diagnose saved results."""
    from omegaconf.errors import OmegaConfBaseException

    usage = "usage: lossbench diagnose RUN_DIR [detect.KEY=VALUE ...] [--in-place]"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        return 0 if argv else 2
    in_place = "--in-place" in argv
    argv = [a for a in argv if a != "--in-place"]
    run_dir = Path(argv[0])
    if not (run_dir / SUMMARY_FILE).exists():
        print(
            f"error: RUN_DIR={str(run_dir)!r} is not allowed: a run directory "
            f"(with {SUMMARY_FILE})",
            file=sys.stderr,
        )
        return 2
    try:
        detect = load_detect(run_dir, argv[1:])
        pathology.check_detect(detect)
    except (ValueError, OmegaConfBaseException) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    out_dir = run_dir
    if not in_place:
        out_dir = run_dir / time.strftime("diagnosis-%Y%m%d-%H%M%S")
        n = 1
        while out_dir.exists():
            n += 1
            out_dir = run_dir / time.strftime(f"diagnosis-%Y%m%d-%H%M%S-{n}")
        out_dir.mkdir()
    try:
        summary = diagnose_run(run_dir, detect, print_table=True, out_dir=out_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    RunWriter(out_dir).write_summary(summary)
    print(pathology.format_timeline(_read(out_dir / EVENTS_FILE)))
    print(f"written to: {out_dir}")
    return 0
