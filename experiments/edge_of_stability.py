"""Edge of stability: gradient descent (Cohen, Kaur, Li, Kolter & Talwalkar 2021, Fig. 1) and
Adam (Cohen, Ghorbani, Krishnan, Agarwal, Medapati, Badura, Suo, Cardoze, Nado, Dahl & Gilmer
2022), reproduced with lossbench.

Gradient descent: full-batch GD at three step sizes on the same network (a tanh MLP 64-64 on
digits, squared loss on one-hot targets, weights drawn at half the LeCun scale so that the
sharpness λmax starts well below every 2/η). λmax rises (progressive sharpening) until it
reaches 2/η, then hovers there while the loss keeps falling, non-monotonically. These are
lossbench runs (`lossbench.run`, λmax by the shipped `probe=sharpness`) in `--out/runs`.

Adam: for an optimizer with preconditioner P, the quantity that goes to the edge is the
*preconditioned* sharpness, the top eigenvalue of P⁻¹H; for Adam, P = diag(√v̂ + ε) at that
step, and with momentum β1 the threshold is (2 + 2β1)/((1 − β1)η), 38/η for β1 = 0.9 (Cohen
et al. 2022). lossbench's probes compute the sharpness of H alone, so this script trains Adam
itself (optax, full batch, the same problem built by `lossbench.problem.build_problem`) and
computes λmax(P⁻¹H) by lossbench's Lanczos (`lossbench.curvature.eigenvalues_of`) on the
symmetric map v ↦ P^-½ H P^-½ v, which has the same eigenvalues.

    .venv/bin/python experiments/edge_of_stability.py  # → outputs/experiments/edge_of_stability/
    .venv/bin/python experiments/edge_of_stability.py --figure experiments/edge_of_stability.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import _gallery
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from lossbench import compose, load_run, run
from lossbench.curvature import eigenvalues_of, hessian_matvec
from lossbench.problem import build_problem
from lossbench.train import seed_keys

NAME = "edge_of_stability"
PROBLEM = (
    "data=digits",
    "model=mlp",
    "model.widths=[64,64]",
    "model.activation=tanh",
    "init.scale=0.5",
    "loss=mse",
    "trainer.batch_size=null",
)
GD_RATES = (0.1, 0.15, 0.25)
ADAM_RATES = (1e-3, 3e-3)
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
STEPS = 2000
PROBE_EVERY = 50
REACHED = 0.95  # λ·η/threshold at or above this: the run has reached its threshold


def adam_threshold(lr: float, beta1: float = BETA1) -> float:
    """(2 + 2β1)/((1 − β1)η): the stability threshold of heavy-ball momentum with EMA
    coefficient β1 on a quadratic, 38/η at β1 = 0.9 (Cohen et al. 2022)."""
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def preconditioner(adam_state: optax.ScaleByAdamState, beta2: float = BETA2, eps: float = EPS):
    """Adam's P = √v̂ + ε per parameter (v̂ = ν/(1 − β2ᵗ), the bias-corrected second moment)."""

    def entry(nu):
        correction = 1 - beta2 ** adam_state.count.astype(nu.dtype)
        return jnp.sqrt(nu / correction) + eps

    return jax.tree.map(entry, adam_state.nu)


def preconditioned_matvec(matvec, p):
    """v ↦ P^-½ M P^-½ v for diagonal P (a pytree of positive entries): symmetric, with the
    eigenvalues of P⁻¹M (similar matrices: P^-½ (P^-½ M P^-½) P^½ = P⁻¹M)."""
    scale = jax.tree.map(lambda d: 1 / jnp.sqrt(d), p)

    def apply(v):
        return jax.tree.map(jnp.multiply, scale, matvec(jax.tree.map(jnp.multiply, scale, v)))

    return apply


def preconditioned_sharpness(loss_fn, params, p, *, key, lanczos_steps: int = 30):
    """λmax(P⁻¹H) of `loss_fn` at `params` by Lanczos on P^-½ H P^-½."""
    matvec = preconditioned_matvec(hessian_matvec(loss_fn, params), p)
    return eigenvalues_of(matvec, params, key=key, lanczos_steps=lanczos_steps).lambda_max


def gd_runs(out: Path, steps: int, rates, probe_every: int = PROBE_EVERY) -> list[dict]:
    """One lossbench run per step size into `out/runs/gd-lr=<η>`; a row of numbers per run."""
    rows = []
    for lr in rates:
        cfg = compose(
            *PROBLEM,
            "optimizer=gd",
            f"optimizer.lr={lr}",
            "probe=sharpness",
            f"probe.every={probe_every}",
            f"trainer.steps={steps}",
            "trainer.log_every=10",
            "trainer.progress=false",
            "trainer.save_params=false",
            "trainer.overwrite=true",  # a rerun moves the last one to previous-<time>/
        )
        run_dir = out / "runs" / f"gd-lr={lr}"
        run(cfg, run_dir)
        probes = load_run(run_dir, "probes", config=False)
        metrics = load_run(run_dir, config=False)
        rows.append(
            summarize(
                "GD",
                lr,
                2 / lr,
                probes.step.to_numpy(),
                probes.lambda_max.to_numpy(),
                metrics.step.to_numpy(),
                metrics.loss.to_numpy(),
            )
        )
    return rows


def adam_runs(steps: int, rates, probe_every: int = PROBE_EVERY, seed: int = 0) -> list[dict]:
    """Full-batch Adam at each rate (vmapped over rates) on the GD runs' problem and initial
    weights; λmax(P⁻¹H) every `probe_every` steps. A row of numbers per rate."""
    problem = build_problem(compose(*PROBLEM, f"trainer.steps={steps}"))
    batch = {k: jnp.asarray(v) for k, v in problem.data.train.items()}
    # the weights of the lossbench run with trainer.seed=seed: its trainer draws them from the
    # first half of the row key's split (lossbench.train.make_train)
    params = problem.init_params(jax.random.split(seed_keys(seed, 1)[0])[0])

    def loss_fn(p):
        return problem.loss(p, batch)

    def optimizer(lr):
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=BETA1, b2=BETA2, eps=EPS)

    def chunk(params, state, lr, key):
        def step(carry, _):
            params, state = carry
            loss, grad = jax.value_and_grad(loss_fn)(params)
            updates, state = optimizer(lr).update(grad, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(step, (params, state), None, length=probe_every)
        adam_state = state.inner_state[0]
        sharpness = preconditioned_sharpness(loss_fn, params, preconditioner(adam_state), key=key)
        return params, state, losses, sharpness

    chunks = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, None)))
    lrs = jnp.asarray(rates, jnp.float32)
    stacked = jax.tree.map(lambda a: jnp.stack([a] * len(rates)), params)
    state = jax.vmap(lambda lr: optimizer(lr).init(params))(lrs)
    losses, sharpness = [], []
    for i in range(steps // probe_every):
        stacked, state, chunk_losses, chunk_sharpness = chunks(
            stacked, state, lrs, jax.random.key(i)
        )
        losses.append(chunk_losses)
        sharpness.append(chunk_sharpness)
    losses, sharpness = np.concatenate(losses, axis=1), np.stack(sharpness, axis=1)
    probe_steps = probe_every * np.arange(1, sharpness.shape[1] + 1)
    return [
        summarize(
            "Adam",
            lr,
            adam_threshold(lr),
            probe_steps,
            sharpness[i],
            np.arange(losses.shape[1]),
            losses[i],
        )
        for i, lr in enumerate(rates)
    ]


def summarize(method, lr, threshold, probe_steps, sharpness, steps, loss) -> dict:
    """The numbers of one run: when its sharpness reached `threshold`, and how it sat after."""
    ratio = sharpness / threshold
    reached = np.flatnonzero(ratio >= REACHED)
    row = {
        "method": method,
        "lr": lr,
        "threshold": threshold,
        "probe_steps": probe_steps,
        "sharpness": sharpness,
        "steps": steps,
        "loss": loss,
        "start_ratio": float(ratio[0]),
        "final_loss": float(loss[-1]),
        "reached_at": None,
        "after_ratio": float("nan"),
        "after_range": None,
        "monotone_after": None,
    }
    if reached.size:
        after = ratio[reached[0] :]
        row["reached_at"] = int(probe_steps[reached[0]])
        row["after_ratio"] = float(np.median(after))
        row["after_range"] = (float(after.min()), float(after.max()))
        row["monotone_after"] = bool(np.all(np.diff(loss[steps >= row["reached_at"]]) <= 0))
    return row


def experiment(out: Path, steps: int = STEPS, rates=GD_RATES, adam_rates=ADAM_RATES) -> list[dict]:
    """The GD runs (lossbench) and the Adam runs; a row of numbers per run."""
    return gd_runs(out, steps, rates) + adam_runs(steps, adam_rates)


def table(rows) -> str:
    lines = [
        "| optimizer | η | threshold | sharpness / threshold at the first probe "
        "| first probe ≥ 0.95 threshold | median (min–max) ratio after | final loss "
        "| loss monotone after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        threshold = (
            f"2/η = {r['threshold']:.3g}"
            if r["method"] == "GD"
            else (f"38/η = {r['threshold']:.4g}")
        )
        if r["reached_at"] is None:
            reached, after = "never", "—"
        else:
            low, high = r["after_range"]
            reached, after = str(r["reached_at"]), f"{r['after_ratio']:.3f} ({low:.2f}–{high:.2f})"
        lines.append(
            f"| {r['method']} | {r['lr']:g} | {threshold} | {r['start_ratio']:.2f} | {reached} "
            f"| {after} | {r['final_loss']:.3e} | {r['monotone_after']} |"
        )
    return "\n".join(lines)


def figure(rows):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for row_axes, method in zip(axes, ("GD", "Adam"), strict=True):
        ax_loss, ax_sharp = row_axes
        for r in (r for r in rows if r["method"] == method):
            label = f"η = {r['lr']:g}"
            line = ax_sharp.plot(r["probe_steps"], r["sharpness"], label=label)[0]
            ax_sharp.axhline(r["threshold"], color=line.get_color(), ls="--", lw=0.8)
            ax_loss.semilogy(r["steps"], r["loss"], color=line.get_color(), lw=0.8, label=label)
        ax_loss.set(ylabel=f"{method}: train loss (full batch)")
        ax_loss.legend(fontsize=8)
    axes[0, 1].set(ylabel="GD: λmax(H) (dashed: 2/η)")
    axes[1, 1].set(ylabel="Adam: λmax(P⁻¹H) (dashed: 38/η)")
    axes[1, 1].set_yscale("log")
    for ax in axes[1]:
        ax.set(xlabel="step")
    fig.suptitle(
        "Full-batch training, tanh MLP on digits, squared loss: the sharpness rises to the "
        "stability threshold and hovers there\n(GD: λmax(H) at 2/η, Cohen et al. 2021; Adam, "
        "β1 = 0.9: preconditioned λmax(P⁻¹H) at 38/η, Cohen et al. 2022)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    rows = experiment(args.out, steps=args.steps)
    return _gallery.publish(args, NAME, table(rows), figure(rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
