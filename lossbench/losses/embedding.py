"""Metric-learning losses on embeddings: pairs, triplets and two augmented views.

Structures (see `lossbench.losses.base`): pairs {"left", "right"} with a flag (B,) that is 1
for a similar pair; triplets {"anchor", "positive", "negative"}; views {"view1", "view2"}.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from lossbench.losses.base import declare


def _safe_norm(x):
    """Euclidean norm over the last axis with gradient 0 (a subgradient) at x = 0."""
    sq = jnp.sum(x**2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _cosine(outputs, flags, margin: float = 0.0):
    """Cosine embedding loss: 1 - cos for similar pairs, max(0, cos - margin) for dissimilar.

    As torch.nn.CosineEmbeddingLoss; the margin lies in [-1, 1).
    """
    left, right = outputs["left"], outputs["right"]
    cos = optax.losses.cosine_similarity(left, right, epsilon=jnp.finfo(left.dtype).eps)
    same = jnp.asarray(flags, cos.dtype)
    return same * (1.0 - cos) + (1.0 - same) * jnp.maximum(0.0, cos - margin)


def _contrastive(outputs, flags, margin: float = 1.0):
    """Contrastive loss (Hadsell, Chopra & LeCun, 2006), d = |left - right|, m = margin.

    Similar pairs d^2 / 2, dissimilar pairs max(0, m - d)^2 / 2.
    """
    d = _safe_norm(outputs["left"] - outputs["right"])
    same = jnp.asarray(flags, d.dtype)
    return 0.5 * (same * d**2 + (1.0 - same) * jnp.maximum(0.0, margin - d) ** 2)


def _triplet(outputs, targets, margin: float = 1.0):
    """Triplet margin loss max(0, d(a, p) - d(a, n) + margin) (Schroff et al., 2015)."""
    return optax.losses.triplet_margin_loss(
        outputs["anchor"], outputs["positive"], outputs["negative"], margin=margin
    )


def _ntxent(outputs, targets, temperature: float = 0.5):
    """NT-Xent of SimCLR (Chen et al., 2020) per input: the mean of its two views' terms.

    For each of the 2B embeddings, -log softmax over the other 2B - 1 of the cosine
    similarities / temperature, taken at its other view. The batch mean equals
    `optax.losses.ntxent` on the stacked views (which returns only that mean).
    """
    z1, z2 = outputs["view1"], outputs["view2"]
    b = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0)
    eps = jnp.finfo(z.dtype).eps
    # cosine similarities as one (2B, 2B) matmul of unit vectors (norms clipped at eps, as
    # optax.losses.cosine_similarity does), not a (2B, 2B, D) broadcast
    unit = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), eps)
    sim = (unit @ unit.T) / temperature
    sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
    partner = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    positive = jnp.take_along_axis(sim, partner[:, None], axis=1)[:, 0]
    per_view = jax.nn.logsumexp(sim, axis=1) - positive
    return 0.5 * (per_view[:b] + per_view[b:])


_embedding = partial(declare, purpose="embedding")


COSINE = _embedding(
    "cosine",
    _cosine,
    takes="pairs",
    convex=False,
    differentiable=False,
    twice_differentiable=False,
    bounded=True,
    min_zero=True,
    robust=True,
    source="lossbench (on optax.losses.cosine_similarity)",
    reference="cosine embedding loss, as torch.nn.CosineEmbeddingLoss",
    notes="margin in [-1, 1) (set loss.margin, e.g. 0.0); kink at cos = margin on dissimilar "
    "pairs; scale-invariant, so the gradient shrinks like 1 / |embedding|; bounded by 2",
)

CONTRASTIVE = _embedding(
    "contrastive",
    _contrastive,
    takes="pairs",
    convex=False,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=False,
    source="lossbench",
    reference="Hadsell, Chopra & LeCun (2006)",
    notes="dissimilar term max(0, m - d)^2 / 2 has a kink (a local maximum) at d = 0 and "
    "curvature jump at d = m; similar pairs pull with force d",
)

TRIPLET = _embedding(
    "triplet",
    _triplet,
    takes="triplets",
    convex=False,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.triplet_margin_loss",
    reference="Schroff, Kalenichenko & Philbin (2015)",
    notes="Euclidean (not squared, as in FaceNet) distances, as Balntas et al. (2016); "
    "kink where d(a, p) + margin = d(a, n); zero once every negative is margin away",
)

NTXENT = _embedding(
    "ntxent",
    _ntxent,
    takes="views",
    convex=False,
    differentiable=True,
    twice_differentiable=True,
    bounded=True,
    min_zero=False,
    robust=True,
    source="lossbench (per example; batch mean = optax.losses.ntxent)",
    reference="Chen, Kornblith, Norouzi & Hinton (2020)",
    notes="depends on the whole batch (2B - 2 negatives); bounded by log(1 + (2B - 2) "
    "exp(2 / temperature)) and above a positive floor; smooth away from zero embeddings",
)
