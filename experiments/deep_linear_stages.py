"""Stage-like learning in deep linear networks (Saxe, McClelland & Ganguli 2014).

A depth-3 linear network started near zero on a linear teacher with singular values
(3, 2, 1, 0.5) (the preset `experiment=deep_linear`) learns the teacher's modes one at a time:
the loss falls in steps, and between steps the run sits near a saddle (λmin < 0, small
gradient). The run goes into `--out/run`; so do the figure (loss, gradient norm and λmin/λmax
with the diagnosed regimes shaded) and the episode timeline as a table.

    .venv/bin/python experiments/deep_linear_stages.py  # → outputs/experiments/deep_linear_stages/
    .venv/bin/python experiments/deep_linear_stages.py --figure experiments/deep_linear_stages.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import _gallery

from lossbench import compose, load_run, run
from lossbench.pathology import format_timeline
from lossbench.pathology.timeline import LABELS, fmt
from lossbench.plots import plot_run

NAME = "deep_linear_stages"


def experiment(out: Path, steps: int = 3000) -> dict:
    """The preset's run into `out/run`; its episodes."""
    cfg = compose(
        "experiment=deep_linear",
        f"trainer.steps={steps}",
        "trainer.progress=false",
        "trainer.save_params=false",
        "trainer.overwrite=true",  # a rerun moves the last one to previous-<time>/
    )
    run_dir = out / "run"
    run(cfg, run_dir)
    return {"run_dir": run_dir, "episodes": load_run(run_dir, "events", config=False)}


def table(results: dict) -> str:
    lines = ["| steps | regime | loss at entry | loss at exit |", "|---|---|---|---|"]
    for row in results["episodes"].itertuples(index=False):
        lines.append(
            f"| {row.start_step}–{row.end_step} | {LABELS.get(row.kind, row.kind)} | "
            f"{fmt(row.loss_entry)} | {fmt(row.loss_exit)} |"
        )
    return "\n".join(lines)


def figure(results: dict):
    return plot_run(results["run_dir"])


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    results = experiment(args.out, steps=args.steps)
    timeline = format_timeline(results["episodes"])
    return _gallery.publish(args, NAME, table(results), figure(results), shown=timeline)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
