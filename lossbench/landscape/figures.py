"""Figures of a landscape result (the dict `compute_landscape` returns, or its loaded npz).

plot_contour(result)   # contours of the loss with the projected trajectory, start and end
plot_surface(result)   # the same plane as a 3-D surface
plot_line(result)      # train/test loss and accuracy along a line, barrier annotated
plot_curvature(result) # λmin/λmax on the coarse sub-grid (Li et al. 2018, Fig. 9)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

AXIS_NAMES = {
    "filter": ("δ (filter-normalised)", "η (filter-normalised)"),
    "eigen": ("top Hessian eigenvector", "bottom Hessian eigenvector"),
    "pca": ("PC 1", "PC 2"),
}


def contour_levels(values: np.ndarray, count: int = 25) -> np.ndarray:
    """Contour values from the minimum to the 98th percentile: log-spaced for a positive loss
    (they resolve the basin and the walls alike), else evenly spaced."""
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(np.quantile(finite, 0.98))
    if hi <= lo:
        hi = lo + 1.0
    if lo > 0:
        return np.geomspace(lo * 1.001, hi, count)
    return np.linspace(lo, hi, count)


def _axis_labels(result, ax) -> None:
    names = AXIS_NAMES.get(str(result["kind"]), ("a", "b"))
    if "explained_variance_ratio" in result:
        ratio = np.asarray(result["explained_variance_ratio"])
        names = tuple(f"{n} ({100 * r:.1f}%)" for n, r in zip(names, ratio, strict=False))
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])


def plot_contour(result, metric: str = "loss", ax=None, title: str | None = None, levels=None):
    """Contours of `metric` on the plane, the projected trajectory, its start and end.
    `levels`: contour values (default: 25 log-spaced from the minimum; pass the same ones to
    compare two planes)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 4.5))
    values = np.asarray(result[metric], np.float64)
    a, b = np.asarray(result["a"]), np.asarray(result["b"])
    contours = ax.contour(
        a,
        b,
        values.T,
        levels=contour_levels(values) if levels is None else levels,
        cmap="viridis",
        linewidths=0.8,
    )
    ax.clabel(contours, contours.levels[::4], fontsize=6, fmt="%.3g")
    if "path" in result and len(result["path"]) > 1:
        path = np.asarray(result["path"])
        ax.plot(path[:, 0], path[:, 1], ".-", color="tab:red", ms=3, lw=0.9, label="trajectory")
        ax.plot(*path[0], "o", color="black", label="start")
    ax.plot(0, 0, "*", color="tab:red", ms=11, label="end (final)")
    ax.set_xlim(a[0], a[-1])
    ax.set_ylim(b[0], b[-1])
    _axis_labels(result, ax)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or f"{metric}: {result['kind']} plane", fontsize=9)
    fig.tight_layout()
    return fig


def plot_surface(result, metric: str = "loss", ax=None, title: str | None = None):
    """The plane's `metric` as a 3-D surface (log10 of a positive loss)."""
    if ax is None:
        fig = plt.figure(figsize=(5.5, 4.5))
        ax = fig.add_subplot(projection="3d")
    fig = ax.figure
    values = np.asarray(result[metric], np.float64)
    positive = bool(np.all(values[np.isfinite(values)] > 0))
    shown = np.log10(values) if positive else values
    a, b = np.meshgrid(np.asarray(result["a"]), np.asarray(result["b"]), indexing="ij")
    ax.plot_surface(a, b, shown, cmap="viridis", linewidth=0, antialiased=True)
    _axis_labels(result, ax)
    ax.set_zlabel(f"log10 {metric}" if positive else metric)
    ax.set_title(title or f"{metric}: {result['kind']} plane", fontsize=9)
    return fig


def plot_line(result, axes=None, title: str | None = None):
    """Loss (left) and accuracy (right) along the line, with the barrier height annotated;
    the trained Bézier curve dashed where there is one."""
    has_acc = "accuracy" in result
    if axes is None:
        fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(9 if has_acc else 5, 3.6))
    axes = np.atleast_1d(axes)
    fig = axes[0].figure
    t = np.asarray(result["t"])
    labels = [str(x) for x in np.atleast_1d(result.get("labels", ["start", "end"]))]
    for name, color in (("loss", "tab:blue"), ("test_loss", "tab:orange")):
        if name not in result:
            continue
        axes[0].plot(t, result[name], color=color, label=f"{name} (line)")
        if f"barrier_{name}" in result:
            height, at = float(result[f"barrier_{name}"]), float(result[f"barrier_t_{name}"])
            top = float(np.interp(at, t, result[name]))
            axes[0].annotate(
                f"barrier {height:.3g}",
                (at, top),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=color,
            )
        if f"bezier_{name}" in result:
            label = f"{name} (Bézier, barrier {float(result[f'bezier_barrier_{name}']):.3g})"
            axes[0].plot(
                result["bezier_t"], result[f"bezier_{name}"], "--", color=color, label=label
            )
    axes[0].set_yscale("log" if np.all(np.asarray(result["loss"]) > 0) else "linear")
    axes[0].set_xlabel(f"t   (0: {labels[0]}, 1: {labels[1]})")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    if has_acc:
        for name, color in (("accuracy", "tab:blue"), ("test_accuracy", "tab:orange")):
            if name in result:
                axes[1].plot(t, result[name], color=color, label=name)
            if f"bezier_{name}" in result:
                axes[1].plot(result["bezier_t"], result[f"bezier_{name}"], "--", color=color)
        axes[1].set_xlabel("t")
        axes[1].set_ylabel("accuracy")
        axes[1].legend(fontsize=7)
    for ax in axes:
        ax.axvline(0, color="grey", lw=0.5)
        ax.axvline(1, color="grey", lw=0.5)
    axes[0].set_title(title or "linear interpolation", fontsize=9)
    fig.tight_layout()
    return fig


def plot_curvature(result, ax=None):
    """λmin/λmax on the coarse sub-grid: blue where the curvature is convex-like (≈ 0 or
    above), red where negative curvature is a sizeable share (Li et al. 2018, Fig. 9)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 4.5))
    ratio = np.abs(result["lambda_min"] / result["lambda_max"])
    ratio = np.where(result["lambda_min"] < 0, ratio, 0.0)
    mesh = ax.pcolormesh(
        result["curvature_a"],
        result["curvature_b"],
        ratio.T,
        cmap="coolwarm",
        vmin=0,
        vmax=max(1e-6, float(np.nanmax(ratio))),
        shading="nearest",
    )
    fig.colorbar(mesh, ax=ax, label="|λmin / λmax| where λmin < 0")
    _axis_labels(result, ax)
    ax.set_title("negative curvature share", fontsize=9)
    fig.tight_layout()
    return fig
