"""Classification losses: logits (batch, classes) with integer labels, or one score with 0/1."""

from __future__ import annotations

import optax

from lossbench.losses.base import Loss, LossProperties, register


def _cross_entropy(logits, labels, cfg):
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)


CROSS_ENTROPY = register(
    Loss(
        "cross_entropy",
        _cross_entropy,
        LossProperties(
            purpose="classification",
            takes="logits",
            convex=True,
            differentiable=True,
            twice_differentiable=True,
            bounded=False,
            min_zero=False,
            robust=True,
            source="optax.losses.softmax_cross_entropy_with_integer_labels",
            notes="infimum 0 approached as the margin grows, never attained",
        ),
    )
)
