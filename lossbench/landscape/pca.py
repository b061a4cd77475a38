"""PCA of an optimization trajectory (Li et al. 2018, §7): the plane the path mostly lies in."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any


class TrajectoryPCA(NamedTuple):
    """Principal directions of `snapshots - final` and the path in their coordinates.

    `directions`: unit pytrees shaped like the parameters; `explained_variance_ratio`: the
    fraction of the trajectory's sum of squares each one carries; `coords`: `(n, k)` positions
    of the snapshots in the plane (the final point is the origin).
    """

    directions: tuple
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    coords: np.ndarray


def trajectory_pca(snapshots: list[PyTree], final: PyTree, k: int = 2) -> TrajectoryPCA:
    """Top-`k` principal directions of the trajectory around its final point.

    Li et al. (2018) take the matrix `[θ_i - θ_n]` and its principal components; we do not
    subtract its mean, so the plane passes through the final point, the origin of the
    plot, and the projected path is the least-squares closest path within that plane.
    Signs are fixed so that the first snapshot (the start) has non-negative coordinates.
    """
    leaves, treedef = jax.tree_util.tree_flatten(final)
    shapes = [np.shape(x) for x in leaves]
    end = _flat(final)
    matrix = np.stack([_flat(s) - end for s in snapshots])  # (n, P), float64
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    k = min(k, len(s))
    total = float(np.sum(s**2))
    ratio = s[:k] ** 2 / total if total > 0 else np.zeros(k)
    coords = u[:, :k] * s[:k]
    signs = np.where(coords[0] < 0, -1.0, 1.0)
    coords, vt = coords * signs, vt[:k] * signs[:, None]
    dtypes = [np.result_type(x) for x in leaves]
    directions = tuple(_unflat(v, treedef, shapes, dtypes) for v in vt)
    return TrajectoryPCA(directions, ratio, s[:k], coords)


def _flat(tree: PyTree) -> np.ndarray:
    return np.concatenate(
        [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(tree)]
    )


def _unflat(vector: np.ndarray, treedef, shapes, dtypes) -> PyTree:
    sizes = [int(np.prod(s)) for s in shapes]
    parts = np.split(vector, np.cumsum(sizes)[:-1])
    leaves = [p.reshape(s).astype(d) for p, s, d in zip(parts, shapes, dtypes, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)
