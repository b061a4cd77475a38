"""Spectral density of curvature matrices by stochastic Lanczos quadrature (SLQ).

Golub & Meurant (1994, Gauss quadrature from Lanczos); Ubaru, Chen & Saad (2017, SLQ);
Ghorbani, Krishnan & Xiao (2019, Hessian spectra of neural networks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lossbench.curvature.lanczos import lanczos
from lossbench.curvature.operators import Matvec, flat_matvec, hessian_matvec, jit_when_hashable

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


def quadrature_from_start(
    matvec_flat: Callable, start: jax.Array, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """Gauss quadrature of the spectral measure seen from the unit vector along `start`.

    Returns `(nodes, weights)` (m each): weights sum to 1 and Σ weights · nodes^p equals
    `qᵀ M^p q` for q = start/‖start‖ and every p ≤ 2m - 1 (Golub & Meurant, 1994).
    After an exact breakdown the missing nodes repeat `T[0, 0]` with weight 0.
    """
    decomposition = lanczos(matvec_flat, start, num_steps)
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
    `samples × lanczos_steps` matvecs (vmapped over samples).
    """
    matvec_flat, flat, _ = flat_matvec(matvec, params_like)
    num_steps = max(1, min(int(lanczos_steps), flat.shape[0]))
    probes = jax.random.rademacher(key, (samples, flat.shape[0]), flat.dtype)
    nodes, weights = jax.vmap(lambda z: quadrature_from_start(matvec_flat, z, num_steps))(probes)
    return SpectralDensity(nodes, weights / samples)


@jit_when_hashable("loss_fn", "lanczos_steps", "samples")
def spectral_density(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    lanczos_steps: int = 30,
    samples: int = 1,
) -> SpectralDensity:
    """Hessian spectral density of `loss_fn` at `params` by SLQ (see `spectral_density_of`)."""
    return spectral_density_of(
        hessian_matvec(loss_fn, params),
        params,
        key=key,
        lanczos_steps=lanczos_steps,
        samples=samples,
    )
