"""Extreme eigenvalues of curvature matrices by Lanczos with full reorthogonalisation.

Lanczos (1950) with one classical Gram-Schmidt pass per step and a second only when the
first shows orthogonality being lost (Giraud et al., 2005). Our own kernel, not matfree's
`decomp.tridiag_sym(reortho="full")` (which the tests keep as the oracle): matfree always runs
two passes over a column-major basis, 1.3-1.7 x the matvec floor at m = 80 against about 1.0
here (benchmarks/probe_cost_kernels.md). Everything is a pure function of arrays: it runs
under `jax.jit`, `jax.vmap` and inside `lax.scan`, in float32 or float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

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
    matvec_flat: Callable,
    start: jax.Array,
    num_steps: int,
    max_size: Any = None,
    top_tolerance: Any = None,
    ritz_tolerance: Any = None,
) -> LanczosDecomposition:
    """Run up to `num_steps` Lanczos steps from `start` (any norm), reorthogonalised.

    `max_size` (may be traced) caps the steps, e.g. at the dimension of a subspace that
    `matvec_flat` and `start` live in, or at a warm start's shorter budget: the loop stops
    there, and at a breakdown, so no matvec is wasted. `top_tolerance` (may be traced; a
    negative value turns it off) also stops the loop, after at least 2 steps, once a step
    raised the largest Ritz value by at most `top_tolerance` times its size: the top Ritz
    value grows monotonically towards λmax, and a step that barely moves it means the
    Krylov space has (nearly) converged there. Only the top end is converged then.
    `ritz_tolerance` (may be traced; negative: off) stops the loop, after at least 2 steps,
    once the top Ritz pair's error estimate `r² / (θ₁ - θ₂)` is at most `ritz_tolerance`
    times `|θ₁|`: `r = β_j |y_j|` is its residual norm (free, see `eigenvalues_of`) and
    `θ₁ - θ₂` the Ritz gap standing in for `λ₁ - λ₂` in the Kato-Temple bound
    `λ₁ - θ₁ <= r² / (θ₁ - λ₂)` (Temple 1928; Kato 1949; Parlett 1998, ch. 10). It decides
    on the step's own Ritz pair, not on the next step's change. An estimate, not a bound:
    while θ₂ still lies below λ₂ the gap is overestimated, so the tolerance must be chosen
    by measurement (`benchmarks/sharpness_warm_start.md`).

    Lanczos (1950), three-term recurrence, then one classical Gram-Schmidt pass against the
    whole basis (kept row-major, (m, n)); a second pass runs only when the first removed
    more than 1 - 1/√2 of the vector's norm, i.e. when orthogonality was being lost ("twice
    is enough": Kahan's test, Parlett 1998 §6.9; Giraud, Langou, Rozložník & van den Eshof
    2005). The diagonal of `T` takes the pass's own coefficient as a correction, so it is the
    computed `q_jᵀ A q_j`; its eigenvalues are Rayleigh quotients.

    Breakdown: a step is kept while its vector is finite and came from a beta well above
    rounding (`beta_j > 100 eps ‖A q_j‖`, Parlett 1998 §6.9: below it the new vector is
    rounding noise), and while a second pass did not again remove most of it (the vector
    was numerically in the span). A NaN matvec (diverged params) leaves `T[0, 0]` NaN,
    which is reported as such; a zero or NaN `start` gives `size` 0.
    """
    dtype = start.dtype
    eps = jnp.finfo(dtype).eps
    shrink = 1 / np.sqrt(2)  # Kahan's threshold, the "twice is enough" test
    steps = num_steps if max_size is None else jnp.minimum(max_size, num_steps)
    q0 = start / jnp.linalg.norm(start)
    q0_ok = jnp.all(jnp.isfinite(q0))
    # One spare row: q_m is computed but not kept; rows past the current step are zero, so a
    # pass against the whole array is a pass against the basis so far.
    basis = jnp.zeros((num_steps + 1, start.shape[0]), dtype).at[0].set(jnp.where(q0_ok, q0, 0))
    zeros = jnp.zeros(num_steps, dtype)

    def reorthogonalise(basis, w):
        """One CGS pass, and a second while the norm keeps dropping below `shrink`."""

        def one_pass(state):
            w, coefficients, passes, _, _ = state
            c = basis @ w
            new = w - c @ basis
            dropped = jnp.linalg.norm(new) < shrink * jnp.linalg.norm(w)
            return new, coefficients + c, passes + 1, dropped, dropped & (passes == 1)

        state = one_pass((w, jnp.zeros(basis.shape[0], dtype), 0, False, False))
        state = jax.lax.while_loop(lambda s: s[3] & (s[2] < 2), one_pass, state)
        w, coefficients, _, _, in_span = state
        return w, coefficients, in_span

    def leading_block(projections, size):
        """The leading `size` block of the symmetrised `T`, the other diagonal entries
        pushed below its spectrum."""
        valid = jnp.arange(num_steps) < size
        block = jnp.where(valid[:, None] & valid[None, :], projections, 0)
        block = jnp.triu(block) + jnp.triu(block, 1).T
        bound = jnp.max(jnp.sum(jnp.abs(block), axis=1))
        return block + jnp.diag(jnp.where(valid, 0, -(2 * bound + 1)))

    def top_ritz_value(projections, size):
        """The largest eigenvalue of the leading `size` block of the symmetrised `T`."""
        return jnp.linalg.eigvalsh(leading_block(projections, size))[-1]

    def top_ritz_error(projections, size, beta):
        """`(θ₁, r² / (θ₁ - θ₂))` of the leading `size` block (see `ritz_tolerance`)."""
        values, vectors = jnp.linalg.eigh(leading_block(projections, size))
        residual = beta * jnp.abs(vectors[size - 1, -1])
        gap = values[-1] - values[max(num_steps - 2, 0)]
        return values[-1], jnp.where(gap > 0, residual**2 / jnp.where(gap > 0, gap, 1), jnp.inf)

    def step(carry):
        j, basis, projections, betas, previous_beta, _, previous_top = carry
        q, q_previous = basis[j], basis[jnp.maximum(j - 1, 0)]
        w = matvec_flat(q).astype(dtype)
        image_norm = jnp.linalg.norm(w)
        alpha = jnp.vdot(q, w)
        w = w - alpha * q - previous_beta * q_previous
        w, coefficients, in_span = reorthogonalise(basis, w)
        # column j of Q A Qᵀ as computed: the recurrence's alpha and beta plus the pass's
        # coefficients (rounding-level above the diagonal band, as in Arnoldi's H)
        column = (
            coefficients.at[j]
            .add(alpha)
            .at[jnp.maximum(j - 1, 0)]
            .add(jnp.where(j > 0, previous_beta, 0))
        )
        beta = jnp.linalg.norm(w)
        q_next = w / beta
        keep = jnp.all(jnp.isfinite(q_next)) & (beta > 100 * eps * image_norm) & ~in_span
        projections = projections.at[:, j].set(column[:num_steps])
        stop, top = ~keep, previous_top
        if top_tolerance is not None:
            top = top_ritz_value(projections, j + 1)
            converged = (j >= 1) & (top - previous_top <= top_tolerance * jnp.abs(top))
            stop = stop | ((top_tolerance >= 0) & converged)
        if ritz_tolerance is not None:
            top, error = top_ritz_error(projections, j + 1, beta)
            converged = (j >= 1) & (error <= ritz_tolerance * jnp.abs(top))
            stop = stop | ((ritz_tolerance >= 0) & converged)
        basis = basis.at[j + 1].set(jnp.where(~stop & (j + 1 < steps), q_next, 0))
        return j + 1, basis, projections, betas.at[j].set(beta), beta, stop, top

    projections = jnp.zeros((num_steps, num_steps), dtype)
    init = (0, basis, projections, zeros, jnp.zeros((), dtype), ~q0_ok, jnp.zeros((), dtype))
    size, basis, projections, betas, _, _, _ = jax.lax.while_loop(
        lambda c: (c[0] < steps) & ~c[5], step, init
    )
    valid = jnp.arange(num_steps) < size
    rows, columns = jnp.indices((num_steps, num_steps))
    tridiagonal = jnp.where(rows <= columns, projections, projections.T)  # upper part, mirrored
    tridiagonal = jnp.where(valid[:, None] & valid[None, :], tridiagonal, 0)
    residual_norm = betas[jnp.maximum(size - 1, 0)]
    return LanczosDecomposition(basis[:num_steps], tridiagonal, size, residual_norm)


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
