"""The landscape of a saved run, as one dict of plain arrays (what `landscape/<name>.npz` holds).

    from lossbench.landscape import compute_landscape
    result = compute_landscape("outputs/…/RUN", "filter", grid=51, span=1.0)
    result["loss"]          # (51, 51) train loss at final + a d1 + b d2
    result["path"]          # the trajectory projected on the plane (from snapshots/)

Kinds: `filter` (two filter-normalised random directions, Li et al. 2018), `eigen` (the top
and bottom Hessian eigenvectors), `pca` (the trajectory's top two principal directions, Li et
al. 2018 §7), `line` (the straight line to another run's final point, another seed's, or from
the first snapshot; optional trained Bézier curve, Garipov et al. 2018).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from lossbench.landscape.barrier import barrier_height, bezier_path, fit_bezier
from lossbench.landscape.directions import (
    eigen_directions,
    line_direction,
    project,
    random_directions,
)
from lossbench.landscape.grid import curvature_grid, evaluate_grid, evaluate_points
from lossbench.landscape.pca import trajectory_pca
from lossbench.landscape.runs import (
    final_params,
    load_run_problem,
    run_context,
    run_trajectory,
    seed_count,
)

KINDS = ("filter", "eigen", "pca", "line")
LOSS_KEYS = ("loss", "test_loss")


def compute_landscape(
    run_dir: str | Path,
    kind: str = "filter",
    *,
    grid: int = 51,
    span: float | None = None,
    other: str | Path | None = None,
    seed: int = 0,
    curvature: int = 0,
    lanczos_steps: int = 20,
    key: int = 0,
    chunk: int | None = None,
    extend: float = 0.0,
    bezier: int = 0,
    one_d: str = "zero",
) -> dict[str, Any]:
    """Evaluate a run's train/test loss and accuracy on a plane or a line through its final
    parameters (seed index `seed`). Returns plain arrays and scalars (see the module doc).

    Args:
      grid: points per axis (plane) or along the line.
      span: planes cover `[-span, span]²` (default 1, in units of the directions; for `pca` the
        default frames the projected trajectory).
      other: `line` only: the other run, whose final point (same seed index) ends the line.
        Without it, the line joins seed 0 and 1 of this run if it has two, or else its first
        snapshot (the start) to its final point.
      curvature: side of a coarse sub-grid with λmax, λmin per point (0: none).
      extend: `line` only: also evaluate t in [-extend, 0) and (1, 1 + extend].
      bezier: `line` only: train a quadratic Bézier bend for this many Adam steps (0: none).
      one_d: `filter` only: 1-D leaves "zero" (Li et al.'s default) or "weights".
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: one of {list(KINDS)}")
    context = run_context(run_dir)
    problem, data = context.problem, context.data
    metrics_fn, loss_fn = context.metrics_fn, context.loss_fn
    final = final_params(run_dir, problem, seed)
    rng_dirs, rng_curv, rng_eig = jax.random.split(jax.random.key(key), 3)
    out: dict[str, Any] = {"kind": kind, "run_dir": str(run_dir), "seed": seed}
    center = eigen_directions(
        loss_fn, final, data, key=rng_eig, top_k=1, bottom_k=1, lanczos_steps=lanczos_steps
    )
    out["center_lambda_max"] = float(center["top_values"][0])
    out["center_lambda_min"] = float(center["bottom_values"][0])
    if kind == "line":
        start, end, labels = _line_ends(run_dir, problem, final, seed, other)
        out["labels"] = np.array(labels)
        out.update(_line(context, start, end, grid, extend, bezier, rng_dirs, lanczos_steps))
        return out

    if kind == "filter":
        directions = random_directions(rng_dirs, final, 2, one_d=one_d)
    elif kind == "eigen":
        directions = (center["top"][0], center["bottom"][0])
        out["eigenvalues"] = np.array([center["top_values"][0], center["bottom_values"][0]])
        out["eigen_residuals"] = np.array(
            [center["top_residuals"][0], center["bottom_residuals"][0]]
        )
    steps, snapshots = run_trajectory(run_dir, problem, seed)
    final_step = _final_step(run_dir)
    if not steps or steps[-1] != final_step:
        steps, snapshots = [*steps, final_step], [*snapshots, final]
    if kind == "pca":
        if len(snapshots) < 3:
            raise ValueError(
                "kind='pca' is not allowed: the run needs snapshots (trainer.snapshot_every), "
                f"it has {len(snapshots) - 1}"
            )
        pca = trajectory_pca(snapshots, final)
        directions = pca.directions
        out["explained_variance_ratio"] = pca.explained_variance_ratio
    path = project(snapshots, final, directions)
    out["path"], out["path_steps"] = path, np.asarray(steps)
    a_range, b_range = _ranges(kind, span, path)
    out["a"], out["b"] = np.linspace(*a_range, grid), np.linspace(*b_range, grid)
    plane_fn = context.first_layer or metrics_fn  # the same values, first layer once
    out.update(evaluate_grid(plane_fn, final, directions, (out["a"], out["b"]), data, chunk=chunk))
    out["direction_norms"] = np.array([_norm(d) for d in directions])
    if curvature:
        axes = (np.linspace(*a_range, curvature), np.linspace(*b_range, curvature))
        out["curvature_a"], out["curvature_b"] = axes
        out.update(
            curvature_grid(
                loss_fn, final, directions, axes, data, key=rng_curv, lanczos_steps=lanczos_steps
            )
        )
    return out


def _line(context, start, end, grid, extend, bezier, rng, lanczos_steps) -> dict:
    """Metrics along the line (and the Bézier curve), barriers, λmax at both ends."""
    data, metrics_fn, loss_fn = context.data, context.metrics_fn, context.loss_fn
    step = 1.0 / (grid - 1)
    outside = int(round(extend / step))
    t = np.arange(-outside, grid + outside) * step
    out = {"t": t}
    out.update(evaluate_points(metrics_fn, start, (line_direction(start, end),), t[:, None], data))
    inside = slice(outside, outside + grid)
    for name in LOSS_KEYS:
        if name in out:
            out[f"barrier_{name}"], out[f"barrier_t_{name}"] = barrier_height(
                t[inside], out[name][inside]
            )
    rng_fit, rng_a, rng_b = jax.random.split(rng, 3)
    for label, point, k in (("start", start, rng_a), ("end", end, rng_b)):
        eig = eigen_directions(
            context.loss_fn, point, data, key=k, top_k=1, bottom_k=1, lanczos_steps=lanczos_steps
        )
        out[f"{label}_lambda_max"] = float(eig["top_values"][0])
    if bezier:
        bend, history = fit_bezier(loss_fn, start, end, data, key=rng_fit, steps=bezier)
        curve = bezier_path(metrics_fn, start, bend, end, data, points=grid)
        out.update({f"bezier_{k}": v for k, v in curve.items()})
        out["bezier_history"] = history
        for name in LOSS_KEYS:
            if name in curve:
                out[f"bezier_barrier_{name}"] = barrier_height(curve["t"], curve[name])[0]
    return out


def _line_ends(run_dir, problem, final, seed, other):
    """`(start, end, labels)`: this run's final point is the end, except for seed pairs."""
    if other is not None:
        _, other_problem = load_run_problem(other)
        if other_problem.param_count != problem.param_count:
            raise ValueError(
                f"other={str(other)!r} is not allowed: a run of the same model "
                f"({problem.param_count} parameters, it has {other_problem.param_count})"
            )
        return final, final_params(other, problem, seed), (str(run_dir), str(other))
    if seed_count(run_dir) > 1:
        partner = 1 if seed == 0 else 0
        return final, final_params(run_dir, problem, partner), (f"seed {seed}", f"seed {partner}")
    steps, snapshots = run_trajectory(run_dir, problem, seed)
    if not snapshots:
        raise ValueError(
            "kind='line' is not allowed here: give other=RUN_DIR2, or a run with "
            "trainer.seeds >= 2, or one with snapshots (trainer.snapshot_every)"
        )
    return snapshots[0], final, (f"step {steps[0]}", "final")


def _ranges(kind, span, path):
    if span is not None or kind != "pca":
        s = 1.0 if span is None else float(span)
        return (-s, s), (-s, s)
    lo, hi = np.minimum(path.min(0), 0), np.maximum(path.max(0), 0)
    margin = 0.25 * np.maximum(hi - lo, 1e-8)
    return (lo[0] - margin[0], hi[0] + margin[0]), (lo[1] - margin[1], hi[1] + margin[1])


def _final_step(run_dir) -> int:
    from lossbench.analysis import load_summary

    summary = load_summary(run_dir)
    return int(summary.get("steps_completed", -1))


def _norm(tree) -> float:
    return float(
        np.sqrt(
            sum(
                np.sum(np.square(np.asarray(x, np.float64)))
                for x in jax.tree_util.tree_leaves(tree)
            )
        )
    )
