"""Multiclass losses on logits (batch, classes) with integer labels (batch,)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from lossbench.errors import ConfigError
from lossbench.losses.base import declare

MULTICLASS_HINGE_VARIANTS = ("crammer_singer", "weston_watkins")


def _cross_entropy(logits, labels):
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)


def _focal(logits, labels, gamma: float = 2.0):
    """Softmax focal loss of Lin et al. (2017): -(1 - p_y)^gamma log p_y.

    log(1 - p_y) is a log-sum-exp over the other classes, so the weight stays accurate when
    p_y -> 1. With two classes it equals `optax.losses.sigmoid_focal_loss` on z_1 - z_0.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    logp_y = jnp.sum(jnp.where(onehot, logp, 0.0), axis=-1)
    log_rest = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, logp), axis=-1)
    return -jnp.exp(gamma * log_rest) * logp_y


def _sparsemax(logits, labels):
    return optax.losses.multiclass_sparsemax_loss(logits, labels)


def _multiclass_hinge(logits, labels, margin: float = 1.0, variant: str = "crammer_singer"):
    """Multiclass hinge with margin m = margin.

    crammer_singer (Crammer & Singer, 2001): max_j (z_j + m [j != y]) - z_y.
    weston_watkins (Weston & Watkins, 1999): sum_{j != y} max(0, m - (z_y - z_j)).
    """
    m = margin
    if variant == "crammer_singer":
        return m * optax.losses.multiclass_hinge_loss(logits / m, labels)
    if variant == "weston_watkins":
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
        z_y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1, keepdims=True)
        return jnp.sum(jnp.where(onehot, 0.0, jnp.maximum(0.0, m - (z_y - logits))), axis=-1)
    raise ConfigError("loss.variant", variant, " | ".join(MULTICLASS_HINGE_VARIANTS))


def _zero_one(outputs, labels):
    """The 0-1 loss: 1 where the prediction is wrong. A metric only.

    Logits (B, C): the prediction is the argmax. A score (B, 1): the prediction is
    1 where score > 0, so a zero score counts as wrong for either label.
    """
    if outputs.shape[-1] == 1:
        y = 2.0 * jnp.asarray(labels, outputs.dtype) - 1.0
        return (y * outputs[..., 0] <= 0).astype(outputs.dtype)
    return (jnp.argmax(outputs, axis=-1) != labels).astype(outputs.dtype)


_classification = partial(declare, purpose="classification", takes="logits")


CROSS_ENTROPY = _classification(
    "cross_entropy",
    _cross_entropy,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=True,
    source="optax.losses.softmax_cross_entropy_with_integer_labels",
    reference="Cox (1958), multinomial logistic regression",
    notes="infimum 0 approached as the margin grows, never attained: separable data drive "
    "the logits to infinity",
)

FOCAL = _classification(
    "focal",
    _focal,
    convex=False,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=True,
    source="lossbench",
    reference="Lin et al. (2017)",
    notes="softmax form, -(1 - p_y)^gamma log p_y; gamma = 0 is cross entropy; non-convex "
    "for gamma = 2 (flat near p_y = 1); binary check against optax.losses.sigmoid_focal_loss",
)

SPARSEMAX = _classification(
    "sparsemax",
    _sparsemax,
    convex=True,
    differentiable=True,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.multiclass_sparsemax_loss",
    reference="Martins & Astudillo (2016)",
    notes="zero once z_y exceeds every other logit by 1; piecewise quadratic: curvature "
    "jumps where the sparsemax support changes",
)

MULTICLASS_HINGE = _classification(
    "multiclass_hinge",
    _multiclass_hinge,
    convex=True,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.multiclass_hinge_loss (crammer_singer); lossbench (weston_watkins)",
    reference="Crammer & Singer (2001); Weston & Watkins (1999)",
    notes="variant = crammer_singer (max over wrong classes) or weston_watkins (sum); "
    "kinks where a wrong class reaches the margin; piecewise linear, zero curvature",
)

ZERO_ONE = _classification(
    "zero_one",
    _zero_one,
    trainable=False,
    convex=False,
    differentiable=False,
    twice_differentiable=False,
    bounded=True,
    min_zero=True,
    robust=True,
    source="lossbench",
    reference="",
    notes="metric only: piecewise constant, zero gradient almost everywhere, jumps at the "
    "decision boundary; takes a score (B, 1) too",
)
