"""Extreme eigenvalues of curvature matrices by Lanczos with full reorthogonalisation.

Lanczos (1950); the decomposition is matfree's `decomp.tridiag_sym(reortho="full")`
(Krämer et al., 2024). Everything is a pure function of arrays: it runs under `jax.jit`,
`jax.vmap` and inside `lax.scan`, in float32 or float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from matfree import decomp

from lossbench.curvature.operators import (
    Matvec,
    flat_matvec,
    ggn_matvec,
    hessian_matvec,
    parameter_blocks,
)

PyTree = Any


class LanczosDecomposition(NamedTuple):
    """`A Qᵀ ≈ Qᵀ T + r e_mᵀ` for `Q` (m, n) with orthonormal rows.

    If the Krylov space became invariant after `size` < m steps (exact breakdown, e.g. a zero
    or a multiple-of-identity Hessian), rows from `size` on are zero, `T` is zero outside its
    leading `size` block and `residual_norm` is 0: the Ritz pairs of that block are exact.
    """

    basis: jax.Array  # (m, n)
    tridiagonal: jax.Array  # (m, m), symmetric
    size: jax.Array  # int: valid leading steps
    residual_norm: jax.Array  # ‖r‖, the beta that would follow the last valid step


def lanczos(matvec_flat: Callable, start: jax.Array, num_steps: int) -> LanczosDecomposition:
    """Run `num_steps` Lanczos steps with full reorthogonalisation from `start` (any norm)."""
    tridiag = decomp.tridiag_sym(num_steps, reortho="full", materialize=True, custom_vjp=False)
    basis, tridiagonal, residual, _ = tridiag(matvec_flat, start)
    # matfree divides by a zero beta on exact breakdown: every later row is NaN. Keep the
    # leading block, which is exact. (A NaN matvec, e.g. diverged params, leaves T[0, 0] NaN.)
    valid = jnp.cumprod(jnp.all(jnp.isfinite(basis), axis=1)).astype(bool)
    size = jnp.sum(valid)
    basis = jnp.where(valid[:, None], basis, 0)
    tridiagonal = jnp.where(valid[:, None] & valid[None, :], tridiagonal, 0)
    residual_norm = jnp.where(size == num_steps, jnp.linalg.norm(residual), 0)
    return LanczosDecomposition(basis, tridiagonal, size, residual_norm)


def ritz_values_and_vectors(decomposition: LanczosDecomposition):
    """Eigenpairs of the valid block of `T`, ascending, with invalid slots pushed to the front.

    Returns `(values, coefficients, first_valid)`: `values[first_valid:]` are the Ritz values
    in ascending order and `coefficients[:, i]` the eigenvector of `T` for `values[i]`.
    """
    tridiagonal, size = decomposition.tridiagonal, decomposition.size
    num_steps = tridiagonal.shape[0]
    valid = jnp.arange(num_steps) < size
    bound = jnp.max(jnp.sum(jnp.abs(tridiagonal), axis=1))  # Gershgorin: ≥ spectral radius
    padded = tridiagonal + jnp.diag(jnp.where(valid, 0, -(2 * bound + 1)))
    values, coefficients = jnp.linalg.eigh(padded)
    return values, coefficients, num_steps - size


class EigenResult(NamedTuple):
    """Extreme Ritz pairs of one Lanczos run.

    `top` is descending, `bottom` ascending (most negative first); the vectors are pytrees
    shaped like the parameters with a leading k axis. Entries past the Krylov space (k larger
    than the number of distinct eigenvalues Lanczos could see) are NaN with zero vectors.
    `lambda_max` / `lambda_min` are the largest / smallest Ritz values of the run.
    """

    top: jax.Array
    bottom: jax.Array
    top_vectors: PyTree
    bottom_vectors: PyTree
    residuals_top: jax.Array
    residuals_bottom: jax.Array
    lambda_max: jax.Array
    lambda_min: jax.Array


def start_vector(key: jax.Array, like: jax.Array, v0: PyTree | None, noise: float) -> jax.Array:
    """A random unit vector, or `v0/‖v0‖ + noise·(random unit vector)` for a warm start.

    The random part keeps every eigendirection in the Krylov space (a start exactly on the top
    eigenvector would hide the bottom ones). A zero `v0` means a cold start.
    """
    random = jax.random.normal(key, like.shape, like.dtype)
    random = random / jnp.linalg.norm(random)
    if v0 is None:
        return random
    warm = ravel_pytree(v0)[0].astype(like.dtype)
    norm = jnp.linalg.norm(warm)
    has_warm = norm > 0
    warm = warm / jnp.where(has_warm, norm, 1)
    return jnp.where(has_warm, warm + noise * random, random)


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
) -> EigenResult:
    """Top-k and bottom-k eigenpairs of a symmetric operator by one Lanczos run.

    Lanczos (1950) with full reorthogonalisation (matfree). Each reported eigenvalue is a Ritz
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
    """
    if residuals not in ("lanczos", "matvec"):
        raise ValueError(f"residuals={residuals!r} is not allowed: 'lanczos' or 'matvec'")
    matvec_flat, flat, unravel = flat_matvec(matvec, params_like)
    num_steps = max(1, min(int(lanczos_steps), flat.shape[0]))
    decomposition = lanczos(matvec_flat, start_vector(key, flat, v0, warm_start_noise), num_steps)
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
    )


def hessian_eigenvalues(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    **options,
) -> EigenResult:
    """Extreme Hessian eigenpairs of `loss_fn` at `params` (see `eigenvalues_of`).

    A negative `bottom[0]` / `lambda_min` is certain negative curvature: Ritz values never lie
    below the true smallest eigenvalue.
    """
    return eigenvalues_of(
        hessian_matvec(loss_fn, params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        top_k=top_k,
        bottom_k=bottom_k,
        v0=v0,
        **options,
    )


def ggn_eigenvalues(
    predict: Callable[[PyTree], PyTree],
    loss_on_outputs: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    **options,
) -> EigenResult:
    """Extreme eigenpairs of the generalized Gauss-Newton matrix (see `ggn_vp`)."""
    return eigenvalues_of(
        ggn_matvec(predict, loss_on_outputs, params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        top_k=top_k,
        bottom_k=bottom_k,
        v0=v0,
        **options,
    )


def block_top_eigenvalues_of(
    block_matvec: Callable[[Callable, jax.Array], Matvec],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """Top eigenvalue of each diagonal curvature block, one block per parameter leaf.

    `block_matvec(restrict, value)` returns the matvec of the block's own curvature, where
    `restrict(x)` is `params` with the block replaced by `x` (see `parameter_blocks`). Blocks
    are leaves: a dense layer gives a kernel block and a bias block. Lanczos steps are clipped
    to each block's size, so small blocks are solved exactly.
    """
    blocks = parameter_blocks(params)
    keys = jax.random.split(key, max(len(blocks), 1))
    return {
        name: eigenvalues_of(
            block_matvec(restrict, value),
            value,
            key=block_key,
            lanczos_steps=lanczos_steps,
            top_k=0,
            bottom_k=0,
        ).lambda_max
        for (name, restrict, value), block_key in zip(blocks, keys, strict=False)
    }


def block_top_eigenvalues(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """{"layers/0/kernel": top eigenvalue of that leaf's diagonal Hessian block, ...}.

    Per-layer curvature in the spirit of PyHessian (Yao et al., 2020); the block Hessian is the
    Hessian of the loss as a function of that leaf alone, others held fixed.
    """

    def block_matvec(restrict, value):
        return hessian_matvec(lambda x: loss_fn(restrict(x)), value)

    return block_top_eigenvalues_of(block_matvec, params, key=key, lanczos_steps=lanczos_steps)


def block_top_ggn_eigenvalues(
    predict: Callable[[PyTree], PyTree],
    loss_on_outputs: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """Like `block_top_eigenvalues`, for the diagonal blocks of the Gauss-Newton matrix."""

    def block_matvec(restrict, value):
        return ggn_matvec(lambda x: predict(restrict(x)), loss_on_outputs, value)

    return block_top_eigenvalues_of(block_matvec, params, key=key, lanczos_steps=lanczos_steps)
