"""Figures of a run, from its files: what happened and when.

    from lossbench.plots import plot_run
    fig = plot_run("outputs/2026-11-25/12-00-00")    # loss, gradient, curvature, regimes
    lossbench plot RUN_DIR                           # writes RUN_DIR/run.png

Reads files only (through `lossbench.analysis`), never live objects. Every axis takes its
limits from the finite data it shows: no floors are added to put zeros or negative values on a
log axis (a log axis is used only where the data are positive and span a decade or more), a
constant series gets a linear axis with distinct ticks, and a diverged run is marked at the
step the run's summary records.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import ScalarFormatter

from lossbench.analysis import is_run_dir, load_config, load_run, load_spectra, load_summary

REGIME_COLORS = {
    "descent": "tab:cyan",
    "strict_saddle": "tab:red",
    "flat": "tab:orange",
    "minimum": "tab:green",
    "plateau": "tab:purple",
    "edge_of_stability": "tab:blue",
    "oscillation": "tab:olive",
    "divergence": "black",
}
DIVERGED_COLOR = "black"
FEW_POINTS = 30  # series this short are drawn with markers, so a single point still shows


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _scale_axis(ax, series: list) -> None:
    """Log scale where every finite value is >= 0 and the positive ones span a decade or more
    (zeros are left out, never floored); symlog for signed values spanning three decades or
    more; linear otherwise. Limits come from the finite data, padded by 5%."""
    values = np.concatenate([_finite(s) for s in series]) if series else np.array([])
    if values.size == 0:
        return
    positive = values[values > 0]
    lo, hi = values.min(), values.max()
    if lo >= 0 and positive.size >= 2 and positive.max() >= 10 * positive.min():
        ax.set_yscale("log")
        pad = (positive.max() / positive.min()) ** 0.05
        ax.set_ylim(positive.min() / pad, positive.max() * pad)
        return
    magnitudes = np.abs(values[values != 0])
    if lo < 0 < hi and magnitudes.size and magnitudes.max() >= 1e3 * magnitudes.min():
        ax.set_yscale("symlog", linthresh=max(magnitudes.min(), 1e-3 * magnitudes.max()))
        ax.set_ylim(lo * 1.1 if lo < 0 else 0, hi * 1.1)
        return
    span = hi - lo
    pad = 0.05 * span if span > 0 else max(abs(hi) * 1e-3, 1e-6)
    ax.set_ylim(lo - pad, hi + pad)
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_powerlimits((-3, 4))
    ax.yaxis.set_major_formatter(formatter)


def _plot_series(ax, x, y, *args, **kwargs):
    """A line, with markers when the series is short (one point still shows)."""
    if len(x) <= FEW_POINTS:
        kwargs.setdefault("marker", "o")
        kwargs.setdefault("ms", 3)
    return ax.plot(np.asarray(x), np.asarray(y, dtype=float), *args, **kwargs)


def _diverged_at(summary: dict, events, seed: int) -> int | None:
    """The step at which `seed` diverged: from summary.json, else its divergence episode."""
    seeds, steps = summary.get("diverged_seeds") or [], summary.get("diverged_at") or []
    if seed in seeds and len(steps) == len(seeds):
        return int(steps[seeds.index(seed)])
    if not events.empty:
        hits = events[(events.seed == seed) & (events.kind == "divergence")]
        if not hits.empty:
            return int(hits.start_step.min())
    return None


def _train_loss_label(cfg: dict) -> str:
    if not cfg or cfg.get("data", {}).get("name") == "none":
        return "loss"
    batch = cfg.get("trainer", {}).get("batch_size")
    return "train loss (full batch)" if batch is None else f"train loss (batch of {batch})"


def _threshold_label(probes) -> str:
    if "two_over_lr" in probes and np.allclose(probes.eos_threshold, probes.two_over_lr):
        return "2/η"
    return "(2+2β)/η"


def plot_run(run_dir: str | Path, seed: int | None = None):
    """Loss, gradient norm and curvature against steps, episodes shaded by regime, the
    divergence step marked."""
    metrics = load_run(run_dir, config=False)
    probes = load_run(run_dir, "probes", config=False)
    events = load_run(run_dir, "events", config=False)
    cfg, summary = load_config(run_dir), load_summary(run_dir)
    if metrics.empty:
        raise ValueError(f"{run_dir}: no metrics to plot (status {summary.get('status')})")
    seed = int(metrics.seed.iloc[0]) if seed is None else seed
    m = metrics[metrics.seed == seed]
    p = probes[probes.seed == seed] if not probes.empty else probes
    panels = 3 if not p.empty else 2
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.6 * panels), sharex=True)
    ax_loss, ax_grad = axes[0], axes[1]

    _plot_series(ax_loss, m.step, m.loss, label=_train_loss_label(cfg))
    loss_series = [m.loss]
    if "test_loss" in m and np.isfinite(m.test_loss).any():
        _plot_series(ax_loss, m.step, m.test_loss, label="test loss")
        loss_series.append(m.test_loss)
    _scale_axis(ax_loss, loss_series)
    ax_loss.set_ylabel("loss")
    _plot_series(ax_grad, m.step, m.grad_norm, color="tab:gray", label="‖g‖")
    _scale_axis(ax_grad, [m.grad_norm])
    ax_grad.set_ylabel("gradient norm ‖g‖")

    if not p.empty:
        ax_curv = axes[2]
        _plot_series(ax_curv, p.step, p.lambda_max, label="λmax")
        _plot_series(ax_curv, p.step, p.lambda_min, label="λmin")
        curvature = [p.lambda_max, p.lambda_min]
        if "eos_threshold" in p and np.isfinite(p.eos_threshold).any():
            label, threshold = _threshold_label(p), _finite(p.eos_threshold)
            top = np.abs(np.concatenate([_finite(c) for c in curvature] + [np.zeros(1)])).max()
            if threshold.min() <= 10 * top:
                ax_curv.plot(p.step, p.eos_threshold, "--", color="black", label=label)
                curvature.append(p.eos_threshold)
            else:  # far above the spectrum: named, not drawn, so λ keeps the axis
                value = f"{threshold.min():.3g}" + ("" if np.ptp(threshold) == 0 else "…")
                ax_curv.plot([], [], "--", color="black", label=f"{label} = {value} (off scale)")
        _scale_axis(ax_curv, curvature)
        lo, hi = ax_curv.get_ylim()
        if lo < 0 < hi:
            ax_curv.axhline(0, color="gray", lw=0.5)
        ax_curv.set_ylabel("Hessian eigenvalue")
        ax_curv.legend(loc="best", fontsize=8)

    last = max(int(m.step.max()), int(p.step.max()) if not p.empty else 0)
    first = min(int(m.step.min()), int(p.step.min()) if not p.empty else last)
    diverged = _diverged_at(summary, events, seed)
    handles = _shade_regimes(axes, events, seed, last, skip_divergence=diverged is not None)
    if diverged is not None:
        for ax in axes:
            ax.axvline(diverged, color=DIVERGED_COLOR, ls="--", lw=1)
            ax.axvspan(diverged, max(last, diverged + 1), color=DIVERGED_COLOR, alpha=0.08, lw=0)
        handles.append(
            Line2D(
                [], [], color=DIVERGED_COLOR, ls="--", lw=1, label=f"diverged at step {diverged}"
            )
        )
        last = max(last, diverged + 1)
    axes[-1].set_xlim(first, last if last > first else first + 1)

    lines, labels = ax_loss.get_legend_handles_labels()
    ax_loss.legend(
        lines + handles, labels + [h.get_label() for h in handles], loc="best", fontsize=7, ncol=2
    )
    axes[-1].set_xlabel("step")
    fig.suptitle(_title(cfg, run_dir, seed, metrics.seed.nunique()), fontsize=9)
    fig.tight_layout()
    return fig


def _shade_regimes(axes, events, seed: int, last: int, skip_divergence: bool) -> list:
    """Shade each episode of `seed` in its regime's colour; one legend patch per regime."""
    if events.empty:
        return []
    own = events[events.seed == seed]
    if skip_divergence:
        own = own[own.kind != "divergence"]
    for _, event in own.iterrows():
        color = REGIME_COLORS.get(event.kind, "lightgray")
        end = min(max(event.end_step, event.start_step + 1), max(last, event.start_step + 1))
        for ax in axes:
            ax.axvspan(event.start_step, end, color=color, alpha=0.12, lw=0)
    kinds = list(dict.fromkeys(own.kind))
    order = [k for k in REGIME_COLORS if k in kinds] + [k for k in kinds if k not in REGIME_COLORS]
    return [
        Patch(color=REGIME_COLORS.get(k, "lightgray"), alpha=0.3, label=k.replace("_", " "))
        for k in order
    ]


def _title(cfg: dict, run_dir, seed: int, n_seeds: int) -> str:
    if not cfg:
        return str(run_dir)
    opt = cfg["optimizer"]
    what = (
        f"{cfg['model']['name']} surface"
        if cfg["data"]["name"] == "none"
        else f"{cfg['model']['name']} on {cfg['data']['name']}, loss {cfg['loss']['name']}"
    )
    title = f"{what}, {opt['name']} lr={opt['lr']}, init {cfg['init']['name']}"
    return title + (f", seed {seed}" if n_seeds > 1 else "")


def plot_density(
    run_dir: str | Path,
    step: int | None = None,
    sigma: float | None = None,
    seed: int | None = None,
    decades: float = 5.0,
):
    """The SLQ spectral density at one probe (the last by default), Gaussian-smoothed
    (Ghorbani et al., 2019), on a log axis spanning `decades` below its peak."""
    spectra = load_spectra(run_dir)
    if spectra is None:
        raise FileNotFoundError(f"{run_dir}: no spectra.npz (use probe=full or density_samples)")
    seed = int(spectra["seed"][0]) if seed is None else seed
    rows = np.flatnonzero(spectra["seed"] == seed)
    if step is not None:
        rows = rows[spectra["step"][rows] == step]
    if rows.size == 0:
        where = "" if step is None else f" at step {step}"
        raise ValueError(f"{run_dir}: no spectrum for seed {seed}{where}")
    index = int(rows[-1])
    nodes, weights = spectra["nodes"][index].ravel(), spectra["weights"][index].ravel()
    weights = weights / weights.sum()  # SLQ weights sum to 1 per probe vector
    span = nodes.max() - nodes.min()
    sigma = sigma or max(span / 100, 1e-6 * max(1.0, np.abs(nodes).max()))
    grid = np.linspace(nodes.min() - 3 * sigma, nodes.max() + 3 * sigma, 800)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes[None]) / sigma) ** 2)
    density = kernel @ weights / (np.sqrt(2 * np.pi) * sigma)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(grid, np.where(density > 0, density, np.nan))
    ax.set_yscale("log")
    peak = np.nanmax(density)
    ax.set_ylim(peak * 10.0**-decades, peak * 2)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel(f"density (σ = {sigma:.2g})")
    ax.set_title(f"Hessian spectral density at step {int(spectra['step'][index])}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_surface_path(run_dir: str | Path, seed: int | None = None, resolution: int = 200):
    """For analytic surfaces: contours of the surface and the path the optimizer took."""
    import jax

    from lossbench.models.surfaces import SURFACES

    cfg = load_config(run_dir)
    model = cfg["model"]
    surface = SURFACES[model["name"]]
    metrics = load_run(run_dir, config=False)
    seed = int(metrics.seed.iloc[0]) if seed is None else seed
    path = metrics[metrics.seed == seed][["x_0", "x_1"]].to_numpy(dtype=float)
    path = path[np.isfinite(path).all(1)]
    span = np.maximum(path.max(0) - path.min(0), 1.0)
    lo, hi = path.min(0) - 0.15 * span, path.max(0) + 0.15 * span
    xs, ys = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    if model["dim"] > 2:
        grid = np.concatenate([grid, np.zeros((len(grid), model["dim"] - 2))], 1)
    a, b = model.get("a", 1.0), model.get("b", 1.0)  # coefficients the surface uses
    values = np.asarray(jax.vmap(lambda x: surface.fn(x, a, b))(grid))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.contour(xs, ys, values.reshape(resolution, resolution), levels=30, linewidths=0.6)
    ax.plot(path[:, 0], path[:, 1], ".-", color="tab:red", ms=2, lw=0.8, label="path")
    ax.plot(*path[0], "o", color="black", label="start")
    ax.plot(*path[-1], "*", color="tab:red", ms=10, label="end")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x₀")
    ax.set_ylabel("x₁")
    ax.legend(fontsize=8)
    opt = cfg["optimizer"]
    ax.set_title(f"{model['name']}: {opt['name']} lr={opt['lr']}, {len(path)} steps", fontsize=9)
    fig.tight_layout()
    return fig


USAGE = "usage: lossbench plot RUN_DIR"


def plot_main(argv: list[str]) -> int:
    """`lossbench plot RUN_DIR`: write run.png (and density.png / path.png where they apply).
    Bad arguments or a directory that is not a run: one line on stderr, exit code 2."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    if not is_run_dir(run_dir):
        print(f"lossbench plot: {run_dir} is not a run directory", file=sys.stderr)
        return 2
    metrics = load_run(run_dir, config=False)
    if metrics.empty:
        print(f"lossbench plot: {run_dir} has no metrics to plot", file=sys.stderr)
        return 2
    written = [run_dir / "run.png"]
    plot_run(run_dir).savefig(written[0], dpi=120)
    if (run_dir / "spectra.npz").exists():
        written.append(run_dir / "density.png")
        plot_density(run_dir).savefig(written[-1], dpi=120)
    if {"x_0", "x_1"} <= set(metrics.columns):
        written.append(run_dir / "path.png")
        plot_surface_path(run_dir).savefig(written[-1], dpi=120)
    plt.close("all")
    print("\n".join(str(p) for p in written))
    return 0
