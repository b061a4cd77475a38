"""Extreme eigenvalues of curvature matrices (Hessian, GGN, their diagonal blocks) from one
Lanczos run of the kernel in `lossbench.curvature.lanczos` (Lanczos, 1950; Giraud et al.,
2005): top and bottom Ritz pairs, residuals, warm starts. Pure functions of arrays, under
`jax.jit`, `jax.vmap` and inside `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.curvature.lanczos import lanczos, ritz_values_and_vectors, start_vector
from lossbench.curvature.operators import (
    Matvec,
    bind_args,
    compiled,
    flat_matvec,
    ggn_matvec,
    hessian_matvec,
    parameter_blocks,
)

EIGEN_STATIC = ("lanczos_steps", "top_k", "bottom_k", "warm_start_noise", "residuals")

PyTree = Any


class EigenResult(NamedTuple):
    """Extreme Ritz pairs of one Lanczos run.

    `top` is descending, `bottom` ascending (most negative first); the vectors are pytrees
    shaped like the parameters with a leading k axis. Entries past the Krylov space (k larger
    than the number of distinct eigenvalues Lanczos could see) are NaN with zero vectors.
    `lambda_max` / `lambda_min` are the largest / smallest Ritz values of the run, `steps`
    the Lanczos steps it took (fewer than asked at a breakdown or a converged top).
    """

    top: jax.Array
    bottom: jax.Array
    top_vectors: PyTree
    bottom_vectors: PyTree
    residuals_top: jax.Array
    residuals_bottom: jax.Array
    lambda_max: jax.Array
    lambda_min: jax.Array
    steps: jax.Array  # Lanczos steps (matvecs) run


def eigenvalues_of(
    matvec: Matvec,
    params_like: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    warm_start_noise: float = 1.0,
    residuals: str = "lanczos",
    max_steps: Any = None,
    top_tolerance: Any = None,
    ritz_tolerance: Any = None,
) -> EigenResult:
    """Top-k and bottom-k eigenpairs of a symmetric operator by one Lanczos run.

    Lanczos (1950) with full reorthogonalisation (see `lanczos`). Each reported eigenvalue is a Ritz
    value, a Rayleigh quotient `vᵀMv` of a unit vector, so it lies inside the true spectrum:
    the reported λmin is never below the true λmin (up to rounding, about machine epsilon times
    ‖M‖). A negative λmin is therefore certain negative curvature; a positive one proves
    nothing, it may not have converged. Lanczos finds extreme eigenvalues first; interior ones
    and clusters converge slowly, so read the residuals.

    Args:
      matvec: `v -> M v` on pytrees shaped like `params_like`.
      key: random start vector (also mixed into a warm start).
      lanczos_steps: matvecs; clipped to the number of parameters.
      v0: optional warm start, e.g. the last probe's top eigenvector (see `start_vector`).
      warm_start_noise: norm of the random unit vector added to the normalised `v0`.
      residuals: how `‖M v - λ v‖` is computed per Ritz pair: "lanczos" (free: `β_m |y_m|`,
        beta times the last component of the eigenvector of T; exact in exact arithmetic and,
        with full reorthogonalisation, accurate down to about eps·‖M‖) or "matvec" (one real
        matvec per reported pair).
      max_steps: optional cap on the steps actually run, at most `lanczos_steps` (which sizes
        the arrays); may be traced, e.g. fewer steps when `v0` is a warm start.
      top_tolerance: optional (may be traced; negative: off): stop once a step raises the
        top Ritz value by at most this fraction of it (see `lanczos`); the bottom is then
        not converged.
      ritz_tolerance: optional (may be traced; negative: off): stop once the top Ritz
        pair's error estimate `r² / (θ₁ - θ₂)` is at most this fraction of `|θ₁|` (see
        `lanczos`).
    """
    if residuals not in ("lanczos", "matvec"):
        raise ValueError(f"residuals={residuals!r} is not allowed: 'lanczos' or 'matvec'")
    matvec_flat, flat, unravel = flat_matvec(matvec, params_like)
    num_steps = max(1, min(int(lanczos_steps), flat.shape[0]))
    start = start_vector(key, flat, v0, warm_start_noise)
    decomposition = lanczos(matvec_flat, start, num_steps, max_steps, top_tolerance, ritz_tolerance)
    values, coefficients, first_valid = ritz_values_and_vectors(decomposition)
    size = decomposition.size

    def select(indices, exists):
        safe = jnp.clip(indices, 0, num_steps - 1)
        chosen = coefficients[:, safe]  # (m, k)
        vectors = jnp.where(exists[:, None], chosen.T @ decomposition.basis, 0)
        eigenvalues = jnp.where(exists, values[safe], jnp.nan)
        if residuals == "lanczos":
            last = coefficients[size - 1, safe]
            residual = decomposition.residual_norm * jnp.abs(last)
        else:
            images = jax.vmap(matvec_flat)(vectors)
            residual = jnp.linalg.norm(images - eigenvalues[:, None] * vectors, axis=1)
        residual = jnp.where(exists, residual, jnp.nan)
        return eigenvalues, jax.vmap(unravel)(vectors), residual

    rank = jnp.arange(top_k)
    top, top_vectors, residuals_top = select(num_steps - 1 - rank, rank < size)
    rank = jnp.arange(bottom_k)
    bottom, bottom_vectors, residuals_bottom = select(first_valid + rank, rank < size)
    return EigenResult(
        top=top,
        bottom=bottom,
        top_vectors=top_vectors,
        bottom_vectors=bottom_vectors,
        residuals_top=residuals_top,
        residuals_bottom=residuals_bottom,
        lambda_max=values[num_steps - 1],
        lambda_min=values[first_valid],
        steps=size,
    )


@compiled("loss_fn", *EIGEN_STATIC)
def hessian_eigenvalues(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    warm_start_noise: float = 1.0,
    residuals: str = "lanczos",
) -> EigenResult:
    """Extreme Hessian eigenpairs of `loss_fn(params, *args)` in `params` (see
    `eigenvalues_of`), compiled once per `loss_fn` and shapes.

    `args` (data, targets, any pytrees) are traced: a module-level `loss_fn` called again
    with new arrays of the same shapes compiles nothing. A negative `bottom[0]` /
    `lambda_min` is certain negative curvature: Ritz values never lie below the true smallest
    eigenvalue.
    """
    return eigenvalues_of(
        hessian_matvec(bind_args(loss_fn, args), params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        top_k=top_k,
        bottom_k=bottom_k,
        v0=v0,
        warm_start_noise=warm_start_noise,
        residuals=residuals,
    )


@compiled("predict", "loss_on_outputs", *EIGEN_STATIC)
def ggn_eigenvalues(
    predict: Callable[..., PyTree],
    loss_on_outputs: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    warm_start_noise: float = 1.0,
    residuals: str = "lanczos",
) -> EigenResult:
    """Extreme eigenpairs of the generalized Gauss-Newton matrix of
    `loss_on_outputs(predict(params, *args), *args)` (see `ggn_vp`; `args` traced)."""
    return eigenvalues_of(
        ggn_matvec(bind_args(predict, args), bind_args(loss_on_outputs, args), params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        top_k=top_k,
        bottom_k=bottom_k,
        v0=v0,
        warm_start_noise=warm_start_noise,
        residuals=residuals,
    )


def block_top_eigenvalues_of(
    matvec: Matvec, params_like: PyTree, *, key: jax.Array, lanczos_steps: int = 20
) -> dict[str, jax.Array]:
    """Top eigenvalue of each diagonal block of a curvature operator, one block per leaf.

    Blocks are the floating-point leaves of `params_like` (see `parameter_blocks`): a dense
    layer gives a kernel block and a bias block. Block b's operator is `P_b M P_b`, with P_b
    the coordinate mask of its leaf, so one vmapped Lanczos run serves all blocks (one compiled
    loop, `blocks × steps` matvecs batched over blocks; memory `blocks × n × steps`). Steps are
    `min(lanczos_steps, largest block)`; a smaller block is solved exactly once its dimension is
    exhausted. Block curvature in the spirit of PyHessian's per-layer spectra (Yao et al., 2020).
    """
    matvec_flat, flat, _ = flat_matvec(matvec, params_like)
    blocks = parameter_blocks(params_like)
    if not blocks:
        return {}
    offsets = np.cumsum([0] + [np.size(leaf) for leaf in jax.tree_util.tree_leaves(params_like)])
    masks = np.zeros((len(blocks), flat.shape[0]), bool)
    for row, (_, index, _) in enumerate(blocks):
        masks[row, offsets[index] : offsets[index + 1]] = True
    sizes = masks.sum(axis=1)
    num_steps = max(1, min(int(lanczos_steps), int(sizes.max())))
    masks = jnp.asarray(masks, flat.dtype)

    def block_top(mask, size, block_key):
        start = mask * jax.random.normal(block_key, flat.shape, flat.dtype)
        decomposition = lanczos(lambda x: mask * matvec_flat(mask * x), start, num_steps, size)
        values, _, _ = ritz_values_and_vectors(decomposition)
        return values[-1]

    keys = jax.random.split(key, len(blocks))
    tops = jax.vmap(block_top)(masks, jnp.asarray(sizes), keys)
    return {name: tops[row] for row, (name, _, _) in enumerate(blocks)}


@compiled("loss_fn", "lanczos_steps")
def block_top_eigenvalues(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """{"layers/0/kernel": top eigenvalue of that leaf's diagonal Hessian block, ...}.

    The block Hessian is the Hessian of the loss as a function of that leaf alone, the other
    leaves held fixed (see `block_top_eigenvalues_of`); `loss_fn(params, *args)`.
    """
    return block_top_eigenvalues_of(
        hessian_matvec(bind_args(loss_fn, args), params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
    )


@compiled("predict", "loss_on_outputs", "lanczos_steps")
def block_top_ggn_eigenvalues(
    predict: Callable[..., PyTree],
    loss_on_outputs: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """Like `block_top_eigenvalues`, for the diagonal blocks of the Gauss-Newton matrix."""
    return block_top_eigenvalues_of(
        ggn_matvec(bind_args(predict, args), bind_args(loss_on_outputs, args), params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
    )
