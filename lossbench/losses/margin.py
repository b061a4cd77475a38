"""Binary losses on one score (batch, 1) with labels in {0, 1}, as functions of the margin.

With y = 2 label - 1 and v = y * score, each loss is phi(v): a surrogate of the 0-1 loss
1[v <= 0] (Bartlett, Jordan & McAuliffe, 2006).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from lossbench.losses.base import declare, signed_margin


def _squeeze(score):
    return score[..., 0] if score.ndim > 1 else score


def _binary_cross_entropy(score, labels):
    return optax.losses.sigmoid_binary_cross_entropy(_squeeze(score), labels)


def _logistic(score, labels):
    """Logistic loss log(1 + exp(-v)): the binary cross entropy in margin form."""
    return jax.nn.softplus(-signed_margin(score, labels))


def _hinge(score, labels, margin: float = 1.0):
    """Hinge loss max(0, m - v) of the SVM (Cortes & Vapnik, 1995), m = margin."""
    m = margin
    y = 2.0 * jnp.asarray(labels, score.dtype) - 1.0
    return m * optax.losses.hinge_loss(_squeeze(score) / m, y)


def _squared_hinge(score, labels, margin: float = 1.0):
    """Squared hinge max(0, m - v)^2 of the L2-SVM (Mangasarian & Musicant, 2001)."""
    return jnp.maximum(0.0, margin - signed_margin(score, labels)) ** 2


def _exponential(score, labels):
    """Exponential loss exp(-v) of AdaBoost (Freund & Schapire, 1997)."""
    return jnp.exp(-signed_margin(score, labels))


def _savage(score, labels):
    """Savage loss 1 / (1 + exp(2v))^2 (Masnadi-Shirazi & Vasconcelos, 2008)."""
    return jax.nn.sigmoid(-2.0 * signed_margin(score, labels)) ** 2


_margin = partial(declare, purpose="classification", takes="score")


BINARY_CROSS_ENTROPY = _margin(
    "binary_cross_entropy",
    _binary_cross_entropy,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=True,
    source="optax.losses.sigmoid_binary_cross_entropy",
    reference="Cox (1958), logistic regression",
    notes="sigmoid on one score; the same function as `logistic`; infimum 0 not attained",
)

LOGISTIC = _margin(
    "logistic",
    _logistic,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=True,
    source="lossbench",
    reference="Bartlett, Jordan & McAuliffe (2006)",
    notes="log(1 + exp(-v)); equals binary_cross_entropy; infimum 0 not attained",
)

HINGE = _margin(
    "hinge",
    _hinge,
    convex=True,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.hinge_loss",
    reference="Cortes & Vapnik (1995)",
    notes="kink at v = margin; zero loss and zero gradient beyond it; zero curvature",
)

SQUARED_HINGE = _margin(
    "squared_hinge",
    _squared_hinge,
    convex=True,
    differentiable=True,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=False,
    source="lossbench",
    reference="Mangasarian & Musicant (2001)",
    notes="second derivative jumps 2 -> 0 at v = margin; gradient grows with the violation",
)

EXPONENTIAL = _margin(
    "exponential",
    _exponential,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=False,
    source="lossbench",
    reference="Freund & Schapire (1997)",
    notes="exp(-v): gradient grows exponentially on misclassified points (label-noise "
    "sensitive); overflows in float32 past v < -88",
)

SAVAGE = _margin(
    "savage",
    _savage,
    convex=False,
    differentiable=True,
    twice_differentiable=True,
    bounded=True,
    min_zero=False,
    robust=True,
    source="lossbench",
    reference="Masnadi-Shirazi & Vasconcelos (2008)",
    notes="bounded by 1; gradient -> 0 on badly misclassified points (outlier-robust); "
    "non-convex, flat at both ends",
)
