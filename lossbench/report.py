"""`lossbench report SWEEP_DIR`: a sweep's report.md and figure grid, written next to the sweep.

report.md holds the sweep table (`lossbench.analysis.sweep_table`: status, final loss, test
accuracy, last lambda_max, final regime, run dir, one row per job) and, per swept key (a
config key whose value differs between jobs), the final figures against the key's values.
report.png holds the final figures against each swept value (one column per key), and
lambda_max with the stability threshold 2/eta over steps, overlaid per group of jobs (one
panel per value of the first swept key). Reads files only (`lossbench.analysis`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench.analysis import (
    flatten_config,
    format_sweep_table,
    load_config,
    run_dirs,
    sweep_table,
)
from lossbench.results import METRICS_FILE, PROBES_FILE
from lossbench.rundir import RESUME_FREE_KEYS

REPORT_FILE = "report.md"
FIGURE_FILE = "report.png"
FIGURES = ("final_loss", "final_test_accuracy", "lambda_max")  # columns of sweep_table


def sweep_configs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job (index: its `run` dir relative to the sweep): the flattened config."""
    sweep_dir = Path(sweep_dir)
    rows = {
        str(d.relative_to(sweep_dir)): flatten_config(load_config(d)) for d in run_dirs(sweep_dir)
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def swept_keys(configs: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between jobs (keys that change no number excepted)."""
    free = set(RESUME_FREE_KEYS)
    return [
        key
        for key in configs.columns
        if key not in free and configs[key].astype(str).nunique(dropna=False) > 1
    ]


def report_table(sweep_dir: str | Path) -> pd.DataFrame:
    """The sweep table with the swept keys' values as columns after `run`."""
    table = sweep_table(sweep_dir)
    configs = sweep_configs(sweep_dir)
    keys = swept_keys(configs)
    swept = configs.loc[table["run"], keys].reset_index(drop=True)
    return pd.concat([table[["run"]], swept, table.drop(columns="run")], axis=1)


def by_value(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """Final figures against the values of `key`: jobs, completed jobs, and the mean and
    standard deviation over jobs of each figure (runs that left no figure skipped)."""
    groups = table.groupby(table[key].astype(str), sort=False)
    out = pd.DataFrame({"jobs": groups.size(), "completed": groups["status"].agg(_completed)})
    for figure in FIGURES:
        values = pd.to_numeric(table[figure], errors="coerce").groupby(table[key].astype(str))
        out[f"{figure} mean"] = values.mean()
        out[f"{figure} std"] = values.std()
    out.index.name = key
    return out.loc[_ordered(table[key])]


def _completed(statuses: pd.Series) -> int:
    return int((statuses == "completed").sum())


def _ordered(values: pd.Series) -> list[str]:
    """Distinct values as strings, numbers in numeric order, others in order of appearance."""
    distinct = list(dict.fromkeys(values.tolist()))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
        distinct = sorted(distinct)
    return [str(v) for v in distinct]


def _markdown(frame: pd.DataFrame, index: bool = False) -> str:
    """A frame as a markdown table (no tabulate dependency)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, float | np.floating):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    frame = frame.reset_index() if index else frame
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path) -> Path:
    """Write report.md and report.png into `sweep_dir`; returns report.md's path."""
    sweep_dir = Path(sweep_dir)
    table = report_table(sweep_dir)
    keys = swept_keys(sweep_configs(sweep_dir))
    statuses = table["status"].value_counts().to_dict()
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"Sweep directory: `{sweep_dir.absolute()}`",
        "",
        f"{len(table)} jobs: " + ", ".join(f"{n} {s}" for s, n in statuses.items()) + ".",
        "Swept keys: " + (", ".join(f"`{k}`" for k in keys) if keys else "none") + ".",
        "",
        "## Jobs",
        "",
        _markdown(table.drop(columns=[c for c in ("error",) if table[c].isna().all()])),
        "",
    ]
    for key in keys:
        lines += [f"## Final figures against `{key}`", "", _markdown(by_value(table, key), True)]
        lines.append("")
    lines += [f"![figures]({FIGURE_FILE})", ""]
    _figure(sweep_dir, table, keys)
    path = sweep_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _curves(run_dir: Path) -> tuple[pd.Series | None, pd.Series | None]:
    """lambda_max over steps (mean over seeds) and the learning rate over steps, if logged."""
    lam = lr = None
    if (run_dir / PROBES_FILE).exists():
        probes = pd.read_parquet(run_dir / PROBES_FILE)
        if "lambda_max" in probes:
            lam = probes.groupby("step")["lambda_max"].mean()
    if (run_dir / METRICS_FILE).exists():
        metrics = pd.read_parquet(run_dir / METRICS_FILE)
        if "lr" in metrics:
            lr = metrics.groupby("step")["lr"].mean()
    return lam, lr


def _figure(sweep_dir: Path, table: pd.DataFrame, keys: list[str]) -> Path:
    """report.png: a row per final figure against each swept key, then lambda_max and 2/eta
    over steps, one panel per value of the first swept key."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, len(keys))
    groups = _ordered(table[keys[0]]) if keys else ["all jobs"]
    width = max(columns, len(groups))
    fig, axes = plt.subplots(
        len(FIGURES) + 1, width, figsize=(3.6 * width, 2.8 * (len(FIGURES) + 1)), squeeze=False
    )
    for col in range(width):
        for row, figure in enumerate(FIGURES):
            ax = axes[row, col]
            if col >= len(keys):
                ax.set_visible(False)
                continue
            _against(ax, table, keys[col], figure)
    for col in range(width):
        ax = axes[len(FIGURES), col]
        if col >= len(groups):
            ax.set_visible(False)
            continue
        chosen = table if not keys else table[table[keys[0]].astype(str) == groups[col]]
        _stability(ax, sweep_dir, chosen, keys)
        ax.set_title(f"{keys[0]}={groups[col]}" if keys else groups[col], fontsize=9)
    fig.tight_layout()
    path = sweep_dir / FIGURE_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _against(ax, table: pd.DataFrame, key: str, figure: str) -> None:
    """One figure of every job against the key's value; the mean over jobs as a line."""
    order = _ordered(table[key])
    y = pd.to_numeric(table[figure], errors="coerce")
    numeric = all(_is_number(v) for v in table[key])
    x = table[key].astype(float) if numeric else table[key].astype(str).map(order.index)
    ax.scatter(x, y, s=14, alpha=0.6)
    means = y.groupby(x).mean()
    ax.plot(means.index, means.values, "-", lw=1.2)
    if numeric and (x > 0).all() and x.max() / x.min() >= 10:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if not numeric:
        ax.set_xticks(range(len(order)), order, rotation=30, fontsize=7)
    ax.set_xlabel(key, fontsize=8)
    ax.set_ylabel(figure, fontsize=8)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _stability(ax, sweep_dir: Path, table: pd.DataFrame, keys: list[str]) -> None:
    """lambda_max over steps of each job in the group (solid) and its 2/eta (dashed)."""
    others = keys[1:]
    drawn = False
    for i, (_, job) in enumerate(table.iterrows()):
        lam, lr = _curves(sweep_dir / job["run"])
        color = f"C{i % 10}"
        label = ", ".join(f"{k}={job[k]}" for k in others) or job["run"]
        if lam is not None and len(lam):
            ax.plot(lam.index, lam.values, color=color, lw=1.2, label=label)
            drawn = True
        if lr is not None and len(lr) and (lr > 0).all():
            ax.plot(lr.index, 2.0 / lr.values, color=color, lw=0.9, ls="--")
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=6, loc="best")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("lambda_max (solid), 2/eta (dashed)", fontsize=7)


def report_main(argv: list[str]) -> int:
    """`lossbench report SWEEP_DIR`: write the report, print the table and where it went."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: lossbench report SWEEP_DIR", file=sys.stderr)
        return 2
    sweep_dir = Path(argv[0])
    if not sweep_dir.is_dir():
        print(f"error: SWEEP_DIR={str(sweep_dir)!r}: no such directory", file=sys.stderr)
        return 2
    try:
        path = write_report(sweep_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_sweep_table(sweep_table(sweep_dir)))
    print(f"report: {path}\nfigures: {sweep_dir / FIGURE_FILE}")
    return 0
