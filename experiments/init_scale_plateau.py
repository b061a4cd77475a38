"""Plateau length against initialisation scale in a deep linear network, against Saxe,
McClelland & Ganguli (2014), eq. 11.

A linear network with one hidden layer (two weight matrices, width 16, no biases: the N_l = 3
network of the paper's section 1) learns y = A x on exactly white inputs, A with singular
values s = (3, 2, 1, 0.5) (`data=linear_teacher`), by full-batch gradient descent on the mean
squared error from N(0, σ²) weights, σ swept over five decades, 8 seeds each (vmapped,
`trainer.seeds`). From parameter snapshots every 10 steps we read each mode's strength
u_α(t) = u_αᵀ W2 W1 v_α (u_α, v_α the singular vectors of A) and its half-learning step, the
first step with u_α ≥ s_α / 2 (linearly interpolated between snapshots).

Eq. 11 of the paper: a mode of strength s, started at strength u0 on the decoupled manifold
with equal layer strengths (a = b), goes from u0 to u_f in time

    t = τ ∫ du / (2u(s − u)) = τ/(2s) · ln[u_f (s − u0) / (u0 (s − u_f))],

so its half-learning time (u_f = s/2) is τ/(2s) · ln((s − u0)/u0): inversely proportional to
s, and growing only like ln(1/u0) as the start shrinks. Our loss, mean_μ ‖W x_μ − y_μ‖² =
‖W − A‖²_F, is the paper's ½ Σ_μ ‖y − W x‖² times 2/n, so one step of size η is 2η units of
τ. From a random start the mode is not on that manifold; its linearised dynamics (the cubic
terms are O(σ⁴)) give a = W1 v_α and b = W2ᵀ u_α growing as (a0 + b0)/2 · e^{st} once the
(a − b) part has decayed, so the effective start is u0 = |a0 + b0|²/4, computed per seed and
mode from the initial weights: no fitted constant. For N(0, σ²) weights u0 ≈ hσ²/2 (h the
width), so the plateau grows by τ/s per e-fold decrease of σ.

    .venv/bin/python experiments/init_scale_plateau.py  # → outputs/experiments/init_scale_plateau/
    .venv/bin/python experiments/init_scale_plateau.py --figure experiments/init_scale_plateau.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import _gallery
import matplotlib.pyplot as plt
import numpy as np

from lossbench import compose, run
from lossbench.data.base import make_dataset
from lossbench.snapshots import load_snapshots

NAME = "init_scale_plateau"
SCALES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
LR = 0.005  # small enough that gradient descent follows the gradient flow of eq. 11
WIDTH = 16


def _overrides(scale, steps, seeds, every):
    return (
        "experiment=deep_linear",
        "model.depth=2",
        f"model.width={WIDTH}",
        "init=normal",
        "init.std=1.0",
        f"init.scale={scale}",
        f"optimizer.lr={LR}",
        "probe=off",
        f"trainer.steps={steps}",
        f"trainer.seeds={seeds}",
        f"trainer.chunk={every}",
        f"trainer.log_every={every}",
        f"trainer.snapshot_every={every}",
        "trainer.progress=false",
        "trainer.save_params=false",
        "trainer.overwrite=true",  # a rerun moves the last one to previous-<time>/
    )


def teacher_modes(cfg):
    """The singular values s and vectors (U, V) of A = Σ_yx (the inputs are white)."""
    data = make_dataset(cfg.data)
    x, y = (np.asarray(data.train[k], np.float64) for k in ("x", "y"))
    u, s, vt = np.linalg.svd(y.T @ x / len(x))
    return s, u, vt.T


def mode_strengths(tree, u, v):
    """u_αᵀ W2 W1 v_α per seed and mode: the kernels act as x @ K1 @ K2, so W2 W1 = (K1 K2)ᵀ."""
    k1, k2 = (np.asarray(tree["layers"][i]["kernel"], np.float64) for i in (0, 1))
    product = np.einsum("sih,shj->sij", k1, k2)  # (seeds, in, out)
    return np.einsum("ia,sij,ja->sa", v, product, u)


def effective_start(tree, u, v):
    """|a0 + b0|² / 4 per seed and mode, a0 = W1 v_α = K1ᵀ v_α, b0 = W2ᵀ u_α = K2 u_α."""
    k1, k2 = (np.asarray(tree["layers"][i]["kernel"], np.float64) for i in (0, 1))
    a0 = np.einsum("sih,ia->sah", k1, v)
    b0 = np.einsum("shj,ja->sah", k2, u)
    return np.sum((a0 + b0) ** 2, axis=-1) / 4


def eq11_time(s, u0, uf):
    """Saxe et al. (2014), eq. 11, in units of τ: the time from u0 to uf for strength s."""
    return np.log(uf * (s - u0) / (u0 * (s - uf))) / (2 * s)


def half_steps(steps, strengths, s):
    """First step with u_α ≥ s_α/2 per seed and mode, interpolated; nan if never."""
    steps = np.asarray(steps, np.float64)
    out = np.full(strengths.shape[1:], np.nan)
    for seed in range(strengths.shape[1]):
        for a, target in enumerate(s / 2):
            path = strengths[:, seed, a]
            above = np.flatnonzero(path >= target)
            if above.size == 0 or above[0] == 0:
                continue
            i = above[0]
            frac = (target - path[i - 1]) / (path[i] - path[i - 1])
            out[seed, a] = steps[i - 1] + frac * (steps[i] - steps[i - 1])
    return out


def experiment(out: Path, scales=SCALES, steps=3000, seeds=8, every=10) -> dict:
    """One run per init scale into `out/runs/scale=<σ>`; measured and predicted steps."""
    rows, curves = [], {}
    s = u = v = None
    for scale in scales:
        cfg = compose(*_overrides(scale, steps, seeds, every))
        if s is None:
            s, u, v = teacher_modes(cfg)
        run_dir = out / "runs" / f"scale={scale:g}"
        run(cfg, run_dir)
        snap_steps, trees = load_snapshots(run_dir)
        strengths = np.stack([mode_strengths(t, u, v) for t in trees])  # (time, seed, mode)
        u0 = effective_start(trees[0], u, v)  # (seed, mode)
        measured = half_steps(snap_steps, strengths, s)
        reached = np.isfinite(measured).any(0)
        mean, std = np.full(len(s), np.nan), np.full(len(s), np.nan)
        mean[reached] = np.nanmean(measured[:, reached], 0)
        std[reached] = np.nanstd(measured[:, reached], 0)
        predicted = eq11_time(s, u0, s / 2) / (2 * LR)  # τ units → steps: one step is 2η τ
        curves[scale] = {"steps": np.asarray(snap_steps), "strengths": strengths, "u0": u0}
        rows.append(
            {
                "scale": scale,
                "u0": u0.mean(0),
                "measured": mean,
                "measured_std": std,
                "never": int(np.isnan(measured).sum()),
                "predicted": predicted.mean(0),
                "ratio": mean / predicted.mean(0),
            }
        )
    fits = {}  # steps per e-fold of 1/σ, for the modes half learned at every scale
    logs = np.log([1 / r["scale"] for r in rows])
    for a, sa in enumerate(s):
        times = np.array([r["measured"][a] for r in rows])
        if len(rows) > 1 and np.isfinite(times).all():
            fits[float(sa)] = float(np.polyfit(logs, times, 1)[0])
    return {"s": s, "rows": rows, "curves": curves, "slopes": fits, "steps": steps, "lr": LR}


def table(results) -> str:
    s = results["s"]
    head = " | ".join(f"s = {x:g}: measured / eq. 11" for x in s)
    lines = [f"| σ | u0 (s = {s[0]:g}) | {head} |", "|---" * (2 + len(s)) + "|"]
    for r in results["rows"]:
        cells = " | ".join(
            f"{m:.0f} ± {sd:.0f} / {p:.0f}"
            for m, sd, p in zip(r["measured"], r["measured_std"], r["predicted"], strict=True)
        )
        lines.append(f"| {r['scale']:g} | {r['u0'][0]:.2e} | {cells} |")
    slopes = ", ".join(
        f"s = {sa:g}: {m:.0f} (eq. 11: {1 / (2 * results['lr'] * sa):.0f})"
        for sa, m in results["slopes"].items()
    )
    worst = max(np.nanmax(abs(r["ratio"] - 1)) for r in results["rows"])
    never = sum(r["never"] for r in results["rows"])
    return "\n".join(
        [
            *lines,
            "",
            f"Half-learning steps (mean ± std over seeds). Slope in steps per e-fold of 1/σ: "
            f"{slopes}. Largest |measured / eq. 11 − 1| over scales and modes: {worst:.3f}. "
            f"Mode half-learnings not reached within {results['steps']} steps: {never}.",
        ]
    )


def figure(results):
    s, rows, curves = results["s"], results["rows"], results["curves"]
    fig, (ax_path, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    scale = rows[len(rows) // 2]["scale"]
    curve = curves[scale]
    tau_per_step = 2 * results["lr"]
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(s)))
    for a, (sa, color) in enumerate(zip(s, colors, strict=True)):
        ax_path.plot(curve["steps"], curve["strengths"][:, :, a] / sa, color=color, lw=0.6)
        # eq. 12, the inverse of eq. 11, from the mean effective start
        t = curve["steps"] * tau_per_step
        u0 = curve["u0"][:, a].mean()
        theory = sa * np.exp(2 * sa * t) / (np.exp(2 * sa * t) - 1 + sa / u0)
        ax_path.plot(curve["steps"], theory / sa, color=color, ls="--", lw=1.5, label=f"s = {sa:g}")
        sigma = np.array([r["scale"] for r in rows])
        ax_time.errorbar(
            sigma,
            [r["measured"][a] for r in rows],
            yerr=[r["measured_std"][a] for r in rows],
            fmt="o",
            color=color,
            capsize=3,
            label=f"s = {sa:g} (measured)",
        )
        ax_time.plot(sigma, [r["predicted"][a] for r in rows], color=color, ls="--")
    ax_path.set(xlabel="step", ylabel="mode strength u_α / s_α")
    ax_path.set_title(
        f"σ = {scale:g}: 8 seeds (solid), eq. 12 from the mean u0 (dashed)", fontsize=9
    )
    ax_path.legend(fontsize=8)
    ax_time.set_xscale("log")
    ax_time.set(xlabel="init scale σ (weights N(0, σ²))", ylabel="steps to u_α = s_α / 2")
    ax_time.set_title("half-learning step: measured (points) vs eq. 11 (dashed)", fontsize=9)
    ax_time.legend(fontsize=8)
    fig.suptitle(
        "Deep linear net (one hidden layer, width 16), GD η = 0.005: the plateau grows like "
        "ln(1/σ)/s (Saxe et al. 2014, eq. 11)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args(argv)
    results = experiment(args.out, steps=args.steps, seeds=args.seeds)
    return _gallery.publish(args, NAME, table(results), figure(results))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
