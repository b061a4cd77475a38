"""Compiled evaluation of a loss on points `origin + Σ c_i d_i`: lines, planes, curves.

One jitted program per (metrics function, chunk): `lax.map` over chunks of `chunk` points,
each chunk `vmap`ped, so a 51×51 grid is one call with no Python loop over points (the
loss-landscape tool of Li et al. 2018 loops per point and needs MPI to be fast). The default
chunk depends on the backend (benchmarks/landscape.md): on a GPU, large vmapped chunks
(hundreds of points per kernel); on a CPU, one point at a time inside the compiled scan, since
a vmapped chunk turns each layer's matmul into a batched one with per-point weights, which
XLA:CPU runs slower than the plain matmuls.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.curvature import hessian_eigenvalues
from lossbench.landscape.directions import tree_combine
from lossbench.landscape.first_layer import FirstLayerSplit, evaluate_points_split

PyTree = Any
MetricsFn = Callable[[PyTree, Any], Any]  # (params, data) -> scalar or dict of scalars


def _as_dict(value) -> dict:
    return value if isinstance(value, dict) else {"loss": value}


@partial(jax.jit, static_argnames=("metrics_fn", "chunk"))
def _evaluate(metrics_fn, origin, directions, coords, data, chunk):
    def one(c):
        return _as_dict(metrics_fn(tree_combine(origin, directions, c), data))

    return jax.lax.map(one, coords, batch_size=None if chunk == 1 else chunk)


def default_chunk() -> int:
    """Points per vmapped chunk: 1 on a CPU, 256 on an accelerator (see the module doc)."""
    return 1 if jax.default_backend() == "cpu" else 256


def evaluate_points(
    metrics_fn: MetricsFn,
    origin: PyTree,
    directions: tuple,
    coords,
    data: Any = None,
    *,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """`metrics_fn(origin + Σ_i coords[n, i] directions[i], data)` for every row n.

    `metrics_fn` must be the same function object from call to call (module-level or built
    once) so the compiled program is reused; `data` goes in as an argument, not a constant.
    `chunk`: points per vmapped batch (default: `default_chunk()`). Returns one `(N,)` array
    per metric (a scalar `metrics_fn` gives `"loss"`). A `FirstLayerSplit` in place of
    `metrics_fn` computes its first layer's products once (`landscape.first_layer`).
    """
    if isinstance(metrics_fn, FirstLayerSplit):
        chunk = default_chunk() if chunk is None else chunk
        return evaluate_points_split(metrics_fn, origin, directions, coords, data, chunk=chunk)
    coords = jnp.asarray(coords, jnp.result_type(*jax.tree_util.tree_leaves(origin)))
    if coords.ndim != 2 or coords.shape[1] != len(directions):
        raise ValueError(f"coords must be (N, {len(directions)}), got {coords.shape}")
    chunk = default_chunk() if chunk is None else chunk
    chunk = max(1, min(int(chunk), coords.shape[0]))
    out = _evaluate(metrics_fn, origin, tuple(directions), coords, data, chunk)
    return {name: np.asarray(value) for name, value in out.items()}


def grid_coords(*axes) -> np.ndarray:
    """All points of the grid `axes[0] × axes[1] × …` ('ij' order), as an `(N, k)` array."""
    mesh = np.meshgrid(*[np.asarray(a) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], 1)


def evaluate_grid(
    metrics_fn: MetricsFn,
    origin: PyTree,
    directions: tuple,
    axes: tuple,
    data: Any = None,
    *,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """Metrics on the grid `origin + a d_1 + b d_2` (`a` in `axes[0]`, `b` in `axes[1]`).

    Returns arrays shaped `(len(axes[0]), len(axes[1]), …)`: `values[i, j]` is at
    `(axes[0][i], axes[1][j])` (matplotlib's `contour(a, b, values.T)`).
    """
    shape = tuple(len(a) for a in axes)
    flat = evaluate_points(metrics_fn, origin, directions, grid_coords(*axes), data, chunk=chunk)
    return {name: value.reshape(shape) for name, value in flat.items()}


@partial(jax.jit, static_argnames=("loss_fn", "lanczos_steps"))
def _curvature(loss_fn, origin, directions, coords, data, key, lanczos_steps):
    def one(c):
        params = tree_combine(origin, directions, c)
        result = hessian_eigenvalues(loss_fn, params, data, key=key, lanczos_steps=lanczos_steps)
        return result.lambda_max, result.lambda_min

    return jax.lax.map(one, coords)


def curvature_grid(
    loss_fn: Callable[..., jax.Array],
    origin: PyTree,
    directions: tuple,
    axes: tuple,
    data: Any = None,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, np.ndarray]:
    """λmax and λmin of the Hessian at every point of a (coarse) grid, one Lanczos each.

    `loss_fn(params, data)`; the map of λmin/λmax is Li et al. (2018)'s Fig. 9. λmin is a
    Ritz value, so a negative one is certain negative curvature (see `hessian_eigenvalues`).
    """
    shape = tuple(len(a) for a in axes)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(origin))
    coords = jnp.asarray(grid_coords(*axes), dtype)
    top, bottom = _curvature(loss_fn, origin, tuple(directions), coords, data, key, lanczos_steps)
    return {
        "lambda_max": np.asarray(top).reshape(shape),
        "lambda_min": np.asarray(bottom).reshape(shape),
    }
