"""The Lanczos kernel: a symmetric matvec's tridiagonal decomposition with full
reorthogonalisation, its Ritz pairs, and start vectors (`lossbench.curvature.eigen` builds the
extreme eigenvalues of curvature matrices on it).

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
