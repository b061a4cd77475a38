"""Edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021), reproduced with lossbench.

Full-batch gradient descent at three learning rates on the same MSE regression (the preset
`experiment=edge_of_stability`): the sharpness λmax rises until it reaches 2/η (progressive
sharpening), then hovers there while the loss keeps falling, non-monotonically. The runs go
into `--out/runs`; so do the figure and a table of, per learning rate, the first probe at
which λmax reaches 2/η (within 5%) and the median of λmax·η/2 over the second half of
training (≈ 1 at the edge of stability).

    .venv/bin/python experiments/edge_of_stability.py  # → outputs/experiments/edge_of_stability/
    .venv/bin/python experiments/edge_of_stability.py --figure experiments/edge_of_stability.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lossbench import compose, load_run, run  # noqa: E402

NAME = "edge_of_stability"
LEARNING_RATES = (0.05, 0.1, 0.2)
REACHED = 0.95  # λmax·η/2 at or above this: the run has reached 2/η (probes are every 100 steps)


def experiment(out: Path, steps: int = 3000, rates=LEARNING_RATES) -> list[dict]:
    """One run per learning rate into `out/runs/lr=<η>`; a row of numbers per run."""
    rows = []
    for lr in rates:
        cfg = compose(
            "experiment=edge_of_stability",
            f"optimizer.lr={lr}",
            f"trainer.steps={steps}",
            "trainer.progress=false",
            "trainer.save_params=false",
            "trainer.overwrite=true",  # a rerun moves the last one to previous-<time>/
        )
        run_dir = out / "runs" / f"lr={lr}"
        run(cfg, run_dir)
        probes = load_run(run_dir, "probes", config=False)
        metrics = load_run(run_dir, config=False)
        ratio = probes.lambda_max.to_numpy() * lr / 2
        reached = np.flatnonzero(ratio >= REACHED)
        late = probes.step >= steps / 2
        rows.append(
            {
                "lr": lr,
                "probe_steps": probes.step.to_numpy(),
                "lambda_max": probes.lambda_max.to_numpy(),
                "steps": metrics.step.to_numpy(),
                "loss": metrics.loss.to_numpy(),
                "reached_at": int(probes.step.iloc[reached[0]]) if reached.size else None,
                "late_ratio": float(np.median(ratio[late])),
                "final_loss": float(metrics.loss.iloc[-1]),
            }
        )
    return rows


def table(rows) -> str:
    lines = [
        "| η | 2/η | first probe with λmax ≥ 0.95·2/η | median λmax·η/2, second half "
        "| final loss |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        reached = "never" if r["reached_at"] is None else str(r["reached_at"])
        lines.append(
            f"| {r['lr']} | {2 / r['lr']:.0f} | {reached} | {r['late_ratio']:.3f} | "
            f"{r['final_loss']:.3e} |"
        )
    return "\n".join(lines)


def figure(rows):
    fig, (ax_loss, ax_sharp) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in rows:
        line = ax_sharp.plot(r["probe_steps"], r["lambda_max"], label=f"η = {r['lr']}")[0]
        ax_sharp.axhline(2 / r["lr"], color=line.get_color(), ls="--", lw=0.8)
        ax_loss.semilogy(r["steps"], r["loss"], color=line.get_color(), label=f"η = {r['lr']}")
    ax_sharp.set(xlabel="step", ylabel="sharpness λmax (dashed: 2/η)")
    ax_loss.set(xlabel="step", ylabel="train loss (full batch)")
    ax_sharp.legend(fontsize=8)
    fig.suptitle(
        "Full-batch GD on an MSE regression: λmax rises toward 2/η (progressive "
        "sharpening) and hovers there once reached (edge of stability)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/experiments") / NAME)
    parser.add_argument("--figure", type=Path, help="also write the figure here")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    rows = experiment(args.out, steps=args.steps)
    text = table(rows)
    (args.out / f"{NAME}.md").write_text(text + "\n")
    fig = figure(rows)
    for path in [args.out / f"{NAME}.png", *([args.figure] if args.figure else [])]:
        fig.savefig(path, dpi=110)
    print(text)
    print(f"wrote {args.out}" + (f" and {args.figure}" if args.figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
