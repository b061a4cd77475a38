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
Every run: plain SGD at η = 0.1, batch 128, 1000 steps, 4 seeds; the table is the final test
accuracy, mean ± std over seeds. The 12 runs of one (model, loss) (3 noise rates × 4 seeds)
train as one compiled program: lossbench's training chunk (`lossbench.train.make_train`, the
seeds as its rows) vmapped over the three label sets, so the script compiles 8 programs, not
24 runs (compiling is most of its time on a 2-core CPU).

    .venv/bin/python experiments/label_noise_losses.py  # → outputs/experiments/label_noise_losses/
    .venv/bin/python experiments/label_noise_losses.py --figure experiments/label_noise_losses.png
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import _gallery
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from lossbench import compose
from lossbench.data.base import make_dataset
from lossbench.losses import LOSSES, declare
from lossbench.problem import build_problem
from lossbench.train import make_train, seed_keys

NAME = "label_noise_losses"
LOSS_NAMES = ("cross_entropy", "savage_multiclass", "mae_softmax", "focal")
NOISE = (0.0, 0.2, 0.4)
MODELS = {"linear": "[]", "mlp": "[128,128]"}
STEPS = 1000
SEEDS = 4


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
    losses=LOSS_NAMES,
    noise=NOISE,
    models=tuple(MODELS),
    steps=STEPS,
    seeds=SEEDS,
    lr=0.1,
    log_every=100,
) -> list[dict]:
    """Every (model, loss, noise) cell; a row of numbers per cell."""
    rows = []
    with user_losses():
        for model in models:
            for loss in losses:
                rows += noise_rows(model, loss, noise, steps, seeds, lr, log_every)
    return rows


def noise_rows(model, loss, noise, steps, seeds, lr, log_every) -> list[dict]:
    """One (model, loss) at every noise rate as one compiled program: lossbench's training
    chunk (`lossbench.train.make_train`, seeds as rows) vmapped over the noise rates' label
    sets (the images, the split and the initial weights are the same for every rate)."""
    cfgs = [
        compose(
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
            f"trainer.log_every={log_every}",
        )
        for rate in noise
    ]
    problem = build_problem(cfgs[0])
    trains = [make_dataset(cfg.data).train for cfg in cfgs]
    for other in trains[1:]:
        np.testing.assert_array_equal(other["x"], trains[0]["x"])  # only labels differ
    train = jax.tree.map(lambda *arrays: jnp.stack(arrays), *trains)
    trainer = make_train(problem, cfgs[0].trainer)
    first = trainer.init(seed_keys(cfgs[0].trainer.seed, seeds))
    state = jax.tree.map(lambda a: jnp.stack([a] * len(noise)), first)
    run_all = jax.jit(
        jax.vmap(lambda s, tr, te: trainer.chunk(s, tr, te, None, steps), in_axes=(0, 0, None))
    )
    state, out = run_all(state, train, problem.data.test)
    (final,) = jax.vmap(trainer.evaluate, in_axes=(0, None))(state.params, (problem.data.test,))
    curves = np.concatenate(
        [np.asarray(out["eval"]["test_accuracy"]), np.asarray(final["accuracy"])[..., None]],
        axis=-1,
    )  # (noise, seeds, evaluations)
    eval_steps = np.append(np.arange(0, steps, log_every), steps)
    return [
        {
            "model": model,
            "loss": loss,
            "noise": rate,
            "test_accuracy": float(curves[i, :, -1].mean()),
            "test_accuracy_std": float(curves[i, :, -1].std()),
            "steps": eval_steps,
            "test_curve": curves[i].mean(axis=0),
        }
        for i, rate in enumerate(noise)
    ]


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
        ax_bar.set_title(f"{model}: test accuracy after training", fontsize=9)
        ax_bar.legend(fontsize=7, loc="lower left")
        ax_curve.set(xlabel="step", ylabel="test accuracy")
        ax_curve.set_ylim(0, 1)
        ax_curve.set_title(f"{model}: test accuracy (solid 0%, dashed 20%, dotted 40%)", fontsize=9)
    fig.suptitle("Digits, SGD: losses under flipped training labels", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    args = parser.parse_args(argv)
    rows = experiment(steps=args.steps, seeds=args.seeds)
    return _gallery.publish(args, NAME, table(rows), figure(rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
