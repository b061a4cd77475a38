"""What every gallery script shares: its command line and the files it writes.

Each script in `experiments/` writes its table (`NAME.md`) and figure (`NAME.png`) into
`--out` (default `outputs/experiments/NAME/`), and the figure also to `--figure` when asked
(`make experiments` points it at the tracked copy `experiments/NAME.png`). Importing this
module selects matplotlib's file-only backend, so import it before `matplotlib.pyplot`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUTPUTS = Path("outputs/experiments")
STARTED = time.perf_counter()  # when the script imported this module (before JAX started)


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """`--out DIR` and `--figure PATH`; the script adds its own options (steps, seeds...)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUTPUTS / name, help=f"default: {OUTPUTS / name}"
    )
    parser.add_argument("--figure", type=Path, help="also write the figure here")
    return parser


def publish(
    args: argparse.Namespace,
    name: str,
    table: str,
    figure,
    *,
    shown: str | None = None,
    dpi: int = 110,
) -> int:
    """Write `table` to `out/NAME.md`, `figure` to `out/NAME.png` (and `--figure`), print
    `shown` (default: the table), the paths written and the wall time since the script
    started, beside the load average (the machine is shared); the script's exit status (0)."""
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / f"{name}.md", args.out / f"{name}.png"]
    written[0].write_text(table + "\n")
    if args.figure:
        written.append(args.figure)
    for path in written[1:]:
        figure.savefig(path, dpi=dpi)
    plt.close(figure)
    print(table if shown is None else shown)
    print("wrote " + ", ".join(str(path) for path in written))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{name}: {time.perf_counter() - STARTED:.0f} s wall, load average {load} (1/5/15 min)")
    return 0
