"""Directions in parameter space to slice a loss along: pure functions on pytrees.

Random Gaussian directions with filter normalisation (Li et al. 2018), extreme Hessian
eigenvectors (top: sharpest; bottom: the escape direction at a saddle), the straight line
between two parameter sets, and the tree arithmetic the grids use.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.curvature import hessian_eigenvalues

PyTree = Any
ONE_D = ("zero", "weights")


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves, jnp.zeros(()))


def tree_norm(a: PyTree) -> jax.Array:
    return jnp.sqrt(tree_dot(a, a))


def tree_combine(origin: PyTree, directions: tuple, coefficients) -> PyTree:
    """`origin + Σ_i coefficients[i] · directions[i]` (leafwise, in the origin's dtype)."""

    def leaf(o, *ds):
        out = o
        for i, d in enumerate(ds):
            out = out + coefficients[i].astype(o.dtype) * d.astype(o.dtype)
        return out

    return jax.tree_util.tree_map(leaf, origin, *directions)


def filter_norms(leaf: jax.Array) -> jax.Array:
    """Norm of each filter of a flax kernel: one per output unit, the *last* axis.

    Dense `(in, out)` -> `out` norms over the inputs; Conv `(kh, kw, in, out)` -> `out` norms
    over `(kh, kw, in)`. (PyTorch keeps output units on the first axis; flax on the last.)
    """
    return jnp.sqrt(jnp.sum(jnp.square(leaf), axis=tuple(range(leaf.ndim - 1))))


def filter_normalize(direction: PyTree, params: PyTree, *, one_d: str = "zero") -> PyTree:
    """Scale every filter of `direction` to the norm of the same filter of `params`.

    Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets", §4:
    `d_ij <- d_ij / ‖d_ij‖ · ‖θ_ij‖` for filter j of layer i. Leaves with fewer than two
    axes (biases, norm scales) are set to zero (`one_d="zero"`, Li et al.'s default
    `ignore='biasbn'`) or to the weights themselves (`one_d="weights"`, as their code does
    without `ignore`).
    """
    if one_d not in ONE_D:
        raise ValueError(f"one_d={one_d!r} is not allowed: one of {list(ONE_D)}")

    def leaf(d, w):
        if w.ndim <= 1:
            return jnp.zeros_like(w) if one_d == "zero" else jnp.asarray(w)
        scale = filter_norms(w) / (filter_norms(d) + 1e-10)
        return (d * scale).astype(w.dtype)

    return jax.tree_util.tree_map(leaf, direction, params)


def gaussian_like(key: jax.Array, params: PyTree) -> PyTree:
    """An i.i.d. standard normal pytree shaped like `params` (one key per leaf)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    draws = [
        jax.random.normal(k, jnp.shape(w), jnp.result_type(w))
        for k, w in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, draws)


def random_directions(
    key: jax.Array, params: PyTree, count: int = 2, *, one_d: str = "zero"
) -> tuple[PyTree, ...]:
    """`count` filter-normalised Gaussian directions at `params` (Li et al. 2018).

    Raises ValueError when every leaf has fewer than two axes (nothing to normalise, e.g. an
    analytic surface's point): use Hessian eigenvectors or the coordinate axes there.
    """
    if all(jnp.ndim(w) <= 1 for w in jax.tree_util.tree_leaves(params)) and one_d == "zero":
        raise ValueError(
            "kind='filter' is not allowed: the parameters have no kernels (every leaf is 1-D); "
            "use kind=eigen, pca or line"
        )
    return _random_directions(key, params, count, one_d)


@partial(jax.jit, static_argnames=("count", "one_d"))
def _random_directions(key, params, count, one_d):
    keys = jax.random.split(key, count)
    return tuple(filter_normalize(gaussian_like(k, params), params, one_d=one_d) for k in keys)


def eigen_directions(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    top_k: int = 2,
    bottom_k: int = 1,
    lanczos_steps: int = 40,
) -> dict:
    """Unit Hessian eigenvectors of `loss_fn(params, *args)` at `params` from one Lanczos run
    (`lossbench.curvature.hessian_eigenvalues`; `args`, e.g. the data, are traced).

    Returns `top` / `bottom` (tuples of pytrees, top descending, bottom ascending: the first
    bottom vector is the escape direction at a saddle) and their eigenvalues and residuals.
    """
    result = hessian_eigenvalues(
        loss_fn, params, *args, key=key, lanczos_steps=lanczos_steps, top_k=top_k, bottom_k=bottom_k
    )

    def unstack(vectors, k):
        return tuple(jax.tree_util.tree_map(lambda v, i=i: v[i], vectors) for i in range(k))

    return {
        "top": unstack(result.top_vectors, top_k),
        "bottom": unstack(result.bottom_vectors, bottom_k),
        "top_values": np.asarray(result.top),
        "bottom_values": np.asarray(result.bottom),
        "top_residuals": np.asarray(result.residuals_top),
        "bottom_residuals": np.asarray(result.residuals_bottom),
    }


def line_direction(start: PyTree, end: PyTree) -> PyTree:
    """`end - start`: the straight line `start + t (end - start)`, t in [0, 1]."""
    return jax.tree_util.tree_map(lambda a, b: jnp.asarray(b) - jnp.asarray(a), start, end)


def orthogonalize(first: PyTree, second: PyTree) -> PyTree:
    """`second` minus its projection on `first` (Gram-Schmidt), keeping its norm."""
    norm = tree_norm(second)
    coef = tree_dot(first, second) / tree_dot(first, first)
    out = jax.tree_util.tree_map(lambda a, b: b - coef * a, first, second)
    return jax.tree_util.tree_map(lambda v: v * (norm / tree_norm(out)), out)


def project(points: list[PyTree], origin: PyTree, directions: tuple) -> np.ndarray:
    """Coordinates of `points - origin` in the span of `directions` (least squares).

    For orthogonal directions this is `⟨p - o, d⟩ / ‖d‖²`; least squares also handles the
    non-orthogonal random directions, so the drawn path is the closest point of the plane.
    """
    basis = np.stack([_flat(d) for d in directions], 1)
    diffs = np.stack([_flat(p) - _flat(origin) for p in points], 1)
    coords, *_ = np.linalg.lstsq(basis, diffs, rcond=None)
    return coords.T


def _flat(tree: PyTree) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])
