"""Edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021), reproduced with lossbench.

Full-batch gradient descent at three learning rates on the same MSE regression: the sharpness
λmax rises until it reaches 2/η, then hovers there while the loss keeps falling. Writes
`experiments/edge_of_stability.png` and prints, per learning rate, the median of λmax·η/2 over
the second half of training (≈ 1 at the edge of stability).

    python experiments/edge_of_stability.py [--steps 3000] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossbench import compose, load_sweep, run  # noqa: E402

LEARNING_RATES = (0.05, 0.1, 0.2)


def main(steps: int, out: Path) -> dict:
    for lr in LEARNING_RATES:
        cfg = compose(
            "experiment=edge_of_stability",
            f"optimizer.lr={lr}",
            f"trainer.steps={steps}",
            "trainer.progress=false",
            "trainer.save_params=false",
        )
        run(cfg, out / f"lr={lr}")
    probes = load_sweep(out, "probes")
    metrics = load_sweep(out)
    fig, (ax_loss, ax_sharp) = plt.subplots(1, 2, figsize=(10, 3.6))
    ratios = {}
    for lr, group in probes.groupby("optimizer.lr"):
        line = ax_sharp.plot(group.step, group.lambda_max, label=f"η = {lr}")[0]
        ax_sharp.axhline(2 / lr, color=line.get_color(), ls="--", lw=0.8)
        m = metrics[metrics["optimizer.lr"] == lr]
        ax_loss.semilogy(m.step, m.loss, color=line.get_color(), label=f"η = {lr}")
        late = group[group.step >= steps / 2]
        ratios[lr] = float((late.lambda_max * lr / 2).median())
    ax_sharp.set(xlabel="step", ylabel="sharpness λmax (dashed: 2/η)")
    ax_loss.set(xlabel="step", ylabel="train loss")
    ax_sharp.legend(fontsize=8)
    fig.suptitle(
        "Full-batch GD on an MSE regression: λmax rises toward 2/η (progressive "
        "sharpening) and hovers there once reached (edge of stability)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(Path(__file__).with_suffix(".png"), dpi=110)
    for lr, ratio in ratios.items():
        print(f"eta={lr}: median late lambda_max * eta / 2 = {ratio:.3f}")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    main(args.steps, args.out or Path(tempfile.mkdtemp()))
