"""Extreme eigenvalues of curvature matrices by Lanczos with full reorthogonalisation.

Lanczos (1950); the iteration is matfree's full-reorthogonalisation Arnoldi, the engine of
`decomp.tridiag_sym(reortho="full")` (Krämer et al., 2024). Everything is a pure function of
arrays: it runs under `jax.jit`, `jax.vmap` and inside `lax.scan`, in float32 or float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matfree import decomp

from lossbench.curvature.operators import (
    Matvec,
    flat_matvec,
    ggn_matvec,
    hessian_matvec,
    jit_when_hashable,
    parameter_blocks,
)

EIGEN_STATIC = ("lanczos_steps", "top_k", "bottom_k", "warm_start_noise", "residuals")

PyTree = Any


class LanczosDecomposition(NamedTuple):
    """`A Qᵀ ≈ Qᵀ T + r e_sᵀ` for `Q` (m, n) with orthonormal rows, restricted to its first
    `size` rows.

    When the Krylov space becomes (numerically) invariant after `size` < m steps — a breakdown,
    e.g. for a zero or a multiple-of-identity Hessian, or once the range of a low-rank Hessian
    is exhausted — the next basis vector is rounding noise, no longer orthogonal to the others.
    Rows from `size` on are then zeroed, `T` is zero outside its leading `size` block and
    `residual_norm` is the (tiny) beta at the breakdown; the remaining matvecs are wasted.
    """

    basis: jax.Array  # (m, n)
    tridiagonal: jax.Array  # (m, m), symmetric: Q A Qᵀ
    size: jax.Array  # int: valid leading steps
    residual_norm: jax.Array  # beta after the last valid step: ‖A q - Σ T q‖


def lanczos(
    matvec_flat: Callable, start: jax.Array, num_steps: int, max_size: Any = None
) -> LanczosDecomposition:
    """Run `num_steps` Lanczos steps with full reorthogonalisation from `start` (any norm).

    `max_size` (may be traced) caps the valid steps, e.g. at the dimension of a subspace that
    `matvec_flat` and `start` live in.

    Lanczos (1950). The iteration is matfree's Arnoldi (`decomp.hessenberg(reortho="full")`,
    which is what `decomp.tridiag_sym(reortho="full")` runs): its unsymmetrised Hessenberg
    matrix keeps the betas, which the breakdown check needs. `T` is the upper triangle of H
    mirrored, i.e. the computed `q_iᵀ A q_j`, so its eigenvalues are Rayleigh quotients.
    """
    arnoldi = decomp.hessenberg(num_steps, reortho="full", custom_vjp=False)
    basis, hessenberg, residual, _ = arnoldi(matvec_flat, start)
    # A step is valid while its basis vector is finite, came from a beta well above rounding
    # (beta_j > 100 eps ‖A q_j‖, Kahan's "twice is enough" test, Parlett 1998 §6.9: below it
    # the new vector is rounding noise) and is orthonormal to the earlier ones. matfree
    # divides by beta = 0 on an exact breakdown (NaN rows) and normalises rounding noise on a
    # near one. A NaN matvec (diverged params) leaves T[0, 0] NaN, which is reported as such.
    eps = jnp.finfo(basis.dtype).eps
    betas = jnp.diagonal(hessenberg, -1)  # beta_j = H[j + 1, j], j < m - 1
    image_norms = jnp.sqrt(jnp.sum(hessenberg**2, axis=0))  # ‖A q_j‖ (up to the last beta)
    clear_beta = jnp.concatenate([jnp.ones(1, bool), betas > 100 * eps * image_norms[:-1]])
    finite = jnp.all(jnp.isfinite(basis), axis=1)
    safe_basis = jnp.where(finite[:, None], basis, 0)
    gram_error = jnp.abs(safe_basis @ safe_basis.T - jnp.eye(num_steps, dtype=basis.dtype))
    orthonormal = jnp.max(jnp.tril(gram_error), axis=1) <= jnp.sqrt(eps)
    valid = jnp.cumprod(finite & clear_beta & orthonormal).astype(bool)
    if max_size is not None:
        valid = valid & (jnp.arange(num_steps) < max_size)
    size = jnp.sum(valid)
    rows, columns = jnp.indices((num_steps, num_steps))
    tridiagonal = jnp.where(rows <= columns, hessenberg, hessenberg.T)  # upper part, mirrored
    tridiagonal = jnp.where(valid[:, None] & valid[None, :], tridiagonal, 0)
    all_betas = jnp.append(betas, jnp.linalg.norm(residual))
    residual_norm = all_betas[jnp.maximum(size - 1, 0)]
    return LanczosDecomposition(
        jnp.where(valid[:, None], basis, 0), tridiagonal, size, residual_norm
    )


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


@jit_when_hashable("loss_fn", *EIGEN_STATIC)
def hessian_eigenvalues(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
    top_k: int = 1,
    bottom_k: int = 1,
    v0: PyTree | None = None,
    warm_start_noise: float = 1.0,
    residuals: str = "lanczos",
) -> EigenResult:
    """Extreme Hessian eigenpairs of `loss_fn` at `params` (see `eigenvalues_of`), compiled.

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
        warm_start_noise=warm_start_noise,
        residuals=residuals,
    )


@jit_when_hashable("predict", "loss_on_outputs", *EIGEN_STATIC)
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
    warm_start_noise: float = 1.0,
    residuals: str = "lanczos",
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


@jit_when_hashable("loss_fn", "lanczos_steps")
def block_top_eigenvalues(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """{"layers/0/kernel": top eigenvalue of that leaf's diagonal Hessian block, ...}.

    The block Hessian is the Hessian of the loss as a function of that leaf alone, the other
    leaves held fixed (see `block_top_eigenvalues_of`).
    """
    return block_top_eigenvalues_of(
        hessian_matvec(loss_fn, params), params, key=key, lanczos_steps=lanczos_steps
    )


@jit_when_hashable("predict", "loss_on_outputs", "lanczos_steps")
def block_top_ggn_eigenvalues(
    predict: Callable[[PyTree], PyTree],
    loss_on_outputs: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 20,
) -> dict[str, jax.Array]:
    """Like `block_top_eigenvalues`, for the diagonal blocks of the Gauss-Newton matrix."""
    return block_top_eigenvalues_of(
        ggn_matvec(predict, loss_on_outputs, params), params, key=key, lanczos_steps=lanczos_steps
    )
