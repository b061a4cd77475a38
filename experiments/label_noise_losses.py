"""Loss design under label noise (Masnadi-Shirazi & Vasconcelos 2008): cross-entropy, Savage,
MAE and focal losses trained on digits with 0, 20 and 40% of the training labels flipped.

The claim: a loss whose penalty and derivative stay bounded as the margin goes to −∞ (Savage)
gives up on the points it cannot fit, so a flipped label pulls the classifier far less than
under a convex loss whose derivative stays at its maximum there (logistic / cross-entropy);
the classifier learned from noisy labels stays closer to the clean one.

Savage's loss is binary, (1 − σ(2v))² on the margin v (`loss=savage`, a score); it is the
squared error of the logistic link's probability. Its multiclass form with the softmax link,
½‖e_y − softmax(z)‖² (the Brier score, halved), is declared here as a user loss,
`savage_multiclass` (`lossbench.losses.declare`); with two classes and v = (z₁ − z₀)/2 it
equals the Savage loss exactly (tested). MAE is the label-noise literature's, on the softmax
probabilities: ‖e_y − softmax(z)‖₁ = 2(1 − p_y) (Ghosh, Kumar & Sastry 2017), also declared
here (`mae_softmax`; lossbench's `mae` is least absolute deviations on one-hot targets, a
regression loss). `focal` is lossbench's softmax focal loss, γ = 2 (Lin et al. 2017). Digits
(`data=digits`, 1438 training and 359 clean test images, 10 classes), `data.label_noise` flips
that fraction of the training labels to another class. Two models: a linear one (softmax
regression, `model.widths=[]`: it cannot memorise the flipped labels, as the paper's boosted
classifiers, linear in their weak learners) and the default tanh MLP 128-128 (which can).
Every run: plain SGD at η = 0.1, batch 128, 1500 steps, 4 seeds vmapped
(`trainer.seeds=4`); the table is the final test accuracy, mean ± std over seeds.

    .venv/bin/python experiments/label_noise_losses.py  # → outputs/experiments/label_noise_losses/
    .venv/bin/python experiments/label_noise_losses.py --figure experiments/label_noise_losses.png
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lossbench import compose, load_run, run  # noqa: E402
from lossbench.losses import LOSSES, declare  # noqa: E402

NAME = "label_noise_losses"
LOSS_NAMES = ("cross_entropy", "savage_multiclass", "mae_softmax", "focal")
NOISE = (0.0, 0.2, 0.4)
MODELS = {"linear": "[]", "mlp": "[128,128]"}


def savage_multiclass(logits, labels):
    """½‖e_y − softmax(z)‖²: the Savage loss of Masnadi-Shirazi & Vasconcelos (2008) with the
    softmax link (at C = 2 it is (1 − σ(2v))², v = (z_y − z_other)/2)."""
    p = jax.nn.softmax(logits, axis=-1)
    return 0.5 * jnp.sum((p - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, axis=-1)


def mae_softmax(logits, labels):
    """‖e_y − softmax(z)‖₁ = 2(1 − p_y), the MAE of Ghosh, Kumar & Sastry (2017)."""
    p_y = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), labels[:, None], axis=-1)
    return 2.0 * (1.0 - p_y[:, 0])


USER_LOSSES = {
    "savage_multiclass": (savage_multiclass, "Masnadi-Shirazi & Vasconcelos (2008), softmax link"),
    "mae_softmax": (mae_softmax, "Ghosh, Kumar & Sastry (2017)"),
}


@contextmanager
def user_losses():
    """The two losses above registered for the duration (users' losses, as in the README)."""
    for name, (fn, reference) in USER_LOSSES.items():
        declare(
            name,
            fn,
            takes="logits",
            differentiable=True,
            twice_differentiable=True,
            bounded=True,
            robust=True,
            source="user",
            reference=reference,
        )
    try:
        yield
    finally:
        for name in USER_LOSSES:
            LOSSES.options.pop(name, None)


def experiment(
    out: Path,
    losses=LOSS_NAMES,
    noise=NOISE,
    models=tuple(MODELS),
    steps=1500,
    seeds=4,
    lr=0.1,
) -> list[dict]:
    """One run per (model, loss, noise) into `out/runs/...`; a row of numbers per run."""
    rows = []
    with user_losses():
        for model in models:
            for loss in losses:
                for rate in noise:
                    cfg = compose(
                        "data=digits",
                        f"data.label_noise={rate}",
                        f"loss={loss}",
                        f"model.widths={MODELS[model]}",
                        "optimizer=sgd",
                        f"optimizer.lr={lr}",
                        "probe=off",
                        f"trainer.steps={steps}",
                        f"trainer.seeds={seeds}",
                        "trainer.batch_size=128",
                        "trainer.log_every=100",
                        "trainer.progress=false",
                        "trainer.save_params=false",
                        "trainer.overwrite=true",  # a rerun moves the last to previous-<time>/
                    )
                    run_dir = out / "runs" / f"{model}-{loss}-noise={rate}"
                    run(cfg, run_dir)
                    metrics = load_run(run_dir, config=False)
                    by_step = metrics.groupby("step")
                    final = metrics[metrics.step == metrics.step.max()]
                    rows.append(
                        {
                            "model": model,
                            "loss": loss,
                            "noise": rate,
                            "test_accuracy": float(final.test_accuracy.mean()),
                            "test_accuracy_std": float(final.test_accuracy.std(ddof=0)),
                            "steps": np.asarray(sorted(by_step.groups)),
                            "test_curve": by_step.test_accuracy.mean().to_numpy(),
                        }
                    )
    return rows


def table(rows) -> str:
    noise = sorted({r["noise"] for r in rows})
    head = " | ".join(f"{rate:.0%} flipped" for rate in noise)
    lines = [f"| model | loss | {head} |", "|---|---|" + "---|" * len(noise)]
    for model in dict.fromkeys(r["model"] for r in rows):
        for loss in dict.fromkeys(r["loss"] for r in rows):
            cells = [
                f"{r['test_accuracy']:.3f} ± {r['test_accuracy_std']:.3f}"
                for rate in noise
                for r in rows
                if r["model"] == model and r["loss"] == loss and r["noise"] == rate
            ]
            lines.append(f"| {model} | {loss} | {' | '.join(cells)} |")
    return "\n".join(lines)


def figure(rows):
    models = list(dict.fromkeys(r["model"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    noise = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(1, 2 * len(models), figsize=(6 * len(models) + 4, 3.8))
    colors = dict(zip(losses, plt.cm.tab10.colors, strict=False))
    styles = dict(zip(noise, ("-", "--", ":"), strict=False))
    for m, model in enumerate(models):
        ax_bar, ax_curve = axes[2 * m], axes[2 * m + 1]
        width = 0.8 / len(losses)
        for i, loss in enumerate(losses):
            mine = [r for r in rows if r["model"] == model and r["loss"] == loss]
            mine.sort(key=lambda r: r["noise"])
            ax_bar.bar(
                np.arange(len(mine)) + (i - (len(losses) - 1) / 2) * width,
                [r["test_accuracy"] for r in mine],
                width,
                yerr=[r["test_accuracy_std"] for r in mine],
                color=colors[loss],
                label=loss,
                capsize=2,
            )
            for r in mine:
                ax_curve.plot(
                    r["steps"], r["test_curve"], color=colors[loss], ls=styles[r["noise"]]
                )
        ax_bar.set_xticks(range(len(noise)), [f"{rate:.0%}" for rate in noise])
        ax_bar.set(xlabel="training labels flipped", ylabel="final test accuracy (clean)")
        ax_bar.set_ylim(0, 1)
        ax_bar.set_title(f"{model}: test accuracy after training (4 seeds)", fontsize=9)
        ax_bar.legend(fontsize=7, loc="lower left")
        ax_curve.set(xlabel="step", ylabel="test accuracy")
        ax_curve.set_ylim(0, 1)
        ax_curve.set_title(f"{model}: test accuracy (solid 0%, dashed 20%, dotted 40%)", fontsize=9)
    fig.suptitle("Digits, SGD: losses under flipped training labels", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/experiments") / NAME)
    parser.add_argument("--figure", type=Path, help="also write the figure here")
    parser.add_argument("--steps", type=int, default=1500)
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
