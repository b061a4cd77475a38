"""Spectral density of curvature matrices by stochastic Lanczos quadrature (SLQ).

Golub & Meurant (1994, Gauss quadrature from Lanczos); Ubaru, Chen & Saad (2017, SLQ);
Ghorbani, Krishnan & Xiao (2019, Hessian spectra of neural networks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from matfree import decomp

from lossbench.curvature.lanczos import LanczosDecomposition
from lossbench.curvature.operators import (
    Matvec,
    batched_map,
    bind_args,
    compiled,
    flat_matvec,
    hessian_matvec,
    rademacher_probe,
)

PyTree = Any


class SpectralDensity(NamedTuple):
    """Quadrature nodes and weights, shaped (samples, m); all weights sum to 1.

    The spectral measure (1/n) Σ_i δ(t - λ_i) is approximated by Σ weights · δ(t - nodes).
    Each sample's weights sum to 1/samples; its nodes are the Ritz values of one Lanczos run.
    """

    nodes: jax.Array
    weights: jax.Array

    def density(self, grid: jax.Array, sigma: float) -> jax.Array:
        """The measure smoothed by a Gaussian kernel of width `sigma`, evaluated on `grid`.

        Integrates to 1 over a grid that covers the nodes with a few `sigma` to spare.
        """
        nodes, weights = self.nodes.reshape(-1), self.weights.reshape(-1)
        z = (jnp.asarray(grid)[..., None] - nodes) / sigma
        kernel = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
        return kernel @ weights

    def negative_mass(self, tol: float = 1e-3) -> jax.Array:
        """Weight of the nodes below `-tol · max |node|`: the estimated fraction of eigenvalues
        that are clearly negative (Ghorbani et al., 2019). `tol` is relative, so rounding-level
        negative nodes of a positive semi-definite matrix do not count."""
        scale = jnp.max(jnp.abs(self.nodes))
        return jnp.sum(jnp.where(self.nodes < -tol * scale, self.weights, 0))


def matfree_lanczos(
    matvec_flat: Callable, start: jax.Array, num_steps: int
) -> LanczosDecomposition:
    """Like `lanczos` (same result, same breakdown rules), on matfree's engine, for SLQ.

    Quadrature weights of clustered nodes are sensitive to rounding in `T`; matfree's two
    full passes and dense `T` keep them within 1e-4 in float32 where our single-pass kernel
    did not in the tests, at about 10% more time per SLQ sample at m = 30 (benchmarks/).

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
    size = jnp.sum(valid)
    rows, columns = jnp.indices((num_steps, num_steps))
    tridiagonal = jnp.where(rows <= columns, hessenberg, hessenberg.T)  # upper part, mirrored
    tridiagonal = jnp.where(valid[:, None] & valid[None, :], tridiagonal, 0)
    all_betas = jnp.append(betas, jnp.linalg.norm(residual))
    residual_norm = all_betas[jnp.maximum(size - 1, 0)]
    return LanczosDecomposition(
        jnp.where(valid[:, None], basis, 0), tridiagonal, size, residual_norm
    )


def quadrature_from_start(
    matvec_flat: Callable, start: jax.Array, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """Gauss quadrature of the spectral measure seen from the unit vector along `start`.

    Returns `(nodes, weights)` (m each): weights sum to 1 and Σ weights · nodes^p equals
    `qᵀ M^p q` for q = start/‖start‖ and every p ≤ 2m - 1 (Golub & Meurant, 1994).
    After an exact breakdown the missing nodes repeat `T[0, 0]` with weight 0.
    """
    decomposition = matfree_lanczos(matvec_flat, start, num_steps)
    tridiagonal = decomposition.tridiagonal
    valid = jnp.arange(num_steps) < decomposition.size
    filler = jnp.where(valid, 0, tridiagonal[0, 0])
    nodes, vectors = jnp.linalg.eigh(tridiagonal + jnp.diag(filler))
    return nodes, vectors[0] ** 2


def lanczos_quadrature(
    matvec: Matvec, v: PyTree, *, lanczos_steps: int
) -> tuple[jax.Array, jax.Array]:
    """Gauss quadrature `(nodes, weights)` of `M` seen from the pytree `v` (see
    `quadrature_from_start`); `lanczos_steps` is clipped to the number of parameters."""
    matvec_flat, flat, _ = flat_matvec(matvec, v)
    num_steps = max(1, min(int(lanczos_steps), flat.shape[0]))
    return quadrature_from_start(matvec_flat, flat, num_steps)


def spectral_density_of(
    matvec: Matvec,
    params_like: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 30,
    samples: int = 1,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad, 2017) with Rademacher probes.

    The first moment Σ weights · nodes is a Hutchinson estimate of tr(M)/n; with m Lanczos
    steps the moments up to 2m - 1 are Hutchinson estimates of tr(M^p)/n. Costs
    `samples × lanczos_steps` matvecs, vmapped within batches of probes, batches in turn
    (`batched_map`).
    """
    matvec_flat, flat, _ = flat_matvec(matvec, params_like)
    num_steps = max(1, min(int(lanczos_steps), flat.shape[0]))
    n, dtype = flat.shape[0], flat.dtype
    nodes, weights = batched_map(
        lambda k: quadrature_from_start(matvec_flat, rademacher_probe(k, n, dtype), num_steps),
        jax.random.split(key, samples),
        n,
        kind="slq",
    )
    return SpectralDensity(nodes, weights / samples)


@compiled("loss_fn", "lanczos_steps", "samples")
def spectral_density(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int = 30,
    samples: int = 1,
) -> SpectralDensity:
    """Hessian spectral density of `loss_fn(params, *args)` in `params` by SLQ (see
    `spectral_density_of`; `args` traced)."""
    return spectral_density_of(
        hessian_matvec(bind_args(loss_fn, args), params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        samples=samples,
    )
