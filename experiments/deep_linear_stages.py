"""Stage-like learning in deep linear networks (Saxe, McClelland & Ganguli 2014).

A depth-3 linear network started near zero on a linear teacher with singular values
(3, 2, 1, 0.5) learns the teacher's modes one at a time: the loss falls in steps, and between
steps the run sits near a saddle (λmin < 0, small gradient). Writes
`experiments/deep_linear_stages.png` (loss, gradient norm and λmin/λmax with the diagnosed
regimes shaded) and prints the episode timeline.

    python experiments/deep_linear_stages.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lossbench import compose, load_run, run
from lossbench.pathology import format_timeline
from lossbench.plots import plot_run


def main(out: Path) -> str:
    cfg = compose("experiment=deep_linear", "trainer.progress=false", "trainer.save_params=false")
    run(cfg, out)
    timeline = format_timeline(load_run(out, "events", config=False))
    plot_run(out).savefig(Path(__file__).with_suffix(".png"), dpi=110)
    print(timeline)
    return timeline


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    main(parser.parse_args().out or Path(tempfile.mkdtemp()))
