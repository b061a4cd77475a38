"""Figures of a run, from its files: what happened and when.

    from lossbench.plots import plot_run
    fig = plot_run("outputs/2026-11-25/12-00-00")    # loss, gradient, curvature, regimes
    lossbench plot RUN_DIR                           # writes RUN_DIR/run.png

Reads files only (through `lossbench.analysis`), never live objects.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lossbench.analysis import load_config, load_run, load_spectra

REGIME_COLORS = {
    "descent": None,
    "strict_saddle": "tab:red",
    "flat": "tab:orange",
    "minimum": "tab:green",
    "plateau": "tab:purple",
    "edge_of_stability": "tab:blue",
    "oscillation": "tab:olive",
    "divergence": "black",
}


def _shade_events(ax, events, seed):
    for _, event in events[events.seed == seed].iterrows():
        color = REGIME_COLORS.get(event.kind)
        if color is not None:
            ax.axvspan(
                event.start_step,
                max(event.end_step, event.start_step + 1),
                color=color,
                alpha=0.12,
                lw=0,
            )


def plot_run(run_dir: str | Path, seed: int | None = None):
    """Loss, gradient norm and curvature against steps, episodes shaded by regime."""
    metrics = load_run(run_dir, config=False)
    probes = load_run(run_dir, "probes", config=False)
    events = load_run(run_dir, "events", config=False)
    seed = int(metrics.seed.iloc[0]) if seed is None else seed
    m = metrics[metrics.seed == seed]
    panels = 3 if not probes.empty else 2
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.6 * panels), sharex=True)
    ax_loss, ax_grad = axes[0], axes[1]
    shifted = m.loss - min(0.0, m.loss.min()) + 1e-12  # log scale for losses that go negative
    ax_loss.plot(m.step, shifted, label="train loss (batch)")
    if "test_loss" in m:
        ax_loss.plot(m.step, m.test_loss, label="test loss")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss" + (" (shifted)" if m.loss.min() < 0 else ""))
    ax_grad.plot(m.step, m.grad_norm, color="tab:gray")
    ax_grad.set_yscale("log")
    ax_grad.set_ylabel("‖g‖")
    if not probes.empty:
        p = probes[probes.seed == seed]
        ax_curv = axes[2]
        ax_curv.plot(p.step, p.lambda_max, "o-", ms=3, label="λmax")
        ax_curv.plot(p.step, p.lambda_min, "o-", ms=3, label="λmin")
        if "eos_threshold" in p and np.isfinite(p.eos_threshold).any():
            ax_curv.plot(p.step, p.eos_threshold, "--", color="black", label="(2+2β)/η")
        ax_curv.axhline(0, color="gray", lw=0.5)
        ax_curv.set_yscale("symlog", linthresh=1e-3)
        ax_curv.set_ylabel("curvature")
        ax_curv.legend(loc="best", fontsize=8)
    handles = []
    if not events.empty:
        for ax in axes:
            _shade_events(ax, events, seed)
        from matplotlib.patches import Patch

        kinds = [k for k in REGIME_COLORS if k in set(events[events.seed == seed].kind)]
        handles = [
            Patch(color=REGIME_COLORS[k], alpha=0.3, label=k.replace("_", " "))
            for k in kinds
            if REGIME_COLORS[k] is not None
        ]
    lines, labels = ax_loss.get_legend_handles_labels()
    ax_loss.legend(
        lines + handles, labels + [h.get_label() for h in handles], loc="best", fontsize=7, ncol=2
    )
    axes[-1].set_xlabel("step")
    title = _title(run_dir)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _title(run_dir) -> str:
    cfg = load_config(run_dir)
    if not cfg:
        return str(run_dir)
    return (
        f"{cfg['model']['name']} on {cfg['data']['name']}, loss {cfg['loss']['name']}, "
        f"{cfg['optimizer']['name']} lr={cfg['optimizer']['lr']}, init {cfg['init']['name']}"
    )


def plot_density(run_dir: str | Path, step: int | None = None, sigma: float | None = None):
    """The SLQ spectral density at one probe (the last by default), Gaussian-smoothed."""
    spectra = load_spectra(run_dir)
    if spectra is None:
        raise FileNotFoundError(f"{run_dir}: no spectra.npz (use probe=full or density_samples)")
    index = (
        len(spectra["step"]) - 1
        if step is None
        else int(np.flatnonzero(spectra["step"] == step)[0])
    )
    nodes, weights = spectra["nodes"][index].ravel(), spectra["weights"][index].ravel()
    span = nodes.max() - nodes.min()
    sigma = sigma or max(span / 100, 1e-6)
    grid = np.linspace(nodes.min() - 3 * sigma, nodes.max() + 3 * sigma, 800)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes[None]) / sigma) ** 2)
    density = kernel @ weights / (np.sqrt(2 * np.pi) * sigma)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.semilogy(grid, np.maximum(density, 1e-12))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density at step {int(spectra['step'][index])}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_surface_path(run_dir: str | Path, seed: int | None = None, resolution: int = 200):
    """For analytic surfaces: contours of the surface and the path the optimizer took."""
    from lossbench.surfaces import SURFACES

    cfg = load_config(run_dir)
    model = cfg["model"]
    surface = SURFACES[model["name"]]
    metrics = load_run(run_dir, config=False)
    seed = int(metrics.seed.iloc[0]) if seed is None else seed
    path = metrics[metrics.seed == seed][["x_0", "x_1"]].to_numpy()
    lo = np.minimum(path.min(0), -1.0) - 0.5
    hi = np.maximum(path.max(0), 1.0) + 0.5
    xs, ys = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    if model["dim"] > 2:
        grid = np.concatenate([grid, np.zeros((len(grid), model["dim"] - 2))], 1)
    import jax

    values = np.asarray(jax.vmap(lambda x: surface.fn(x, model["a"], model["b"]))(grid))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.contour(xs, ys, values.reshape(resolution, resolution), levels=30, linewidths=0.6)
    ax.plot(path[:, 0], path[:, 1], ".-", color="tab:red", ms=2, lw=0.8)
    ax.plot(*path[0], "o", color="black", label="start")
    ax.plot(*path[-1], "*", color="tab:red", ms=10, label="end")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    ax.set_title(f"{model['name']}: {cfg['optimizer']['name']} path", fontsize=9)
    fig.tight_layout()
    return fig


def plot_main(argv: list[str]) -> int:
    """`lossbench plot RUN_DIR`: write run.png (and density.png / path.png where they apply)."""
    if not argv:
        print("usage: lossbench plot RUN_DIR", file=__import__("sys").stderr)
        return 2
    run_dir = Path(argv[0])
    written = [run_dir / "run.png"]
    plot_run(run_dir).savefig(written[0], dpi=120)
    if (run_dir / "spectra.npz").exists():
        written.append(run_dir / "density.png")
        plot_density(run_dir).savefig(written[-1], dpi=120)
    if "x_0" in load_run(run_dir, config=False).columns and "x_1" in load_run(run_dir).columns:
        written.append(run_dir / "path.png")
        plot_surface_path(run_dir).savefig(written[-1], dpi=120)
    plt.close("all")
    print("\n".join(str(p) for p in written))
    return 0
