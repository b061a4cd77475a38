"""Regression losses: predictions and real targets of shape (batch, d)."""

from __future__ import annotations

import optax

from lossbench.losses.base import Loss, LossProperties, register


def _mse(pred, target, cfg):
    return optax.losses.squared_error(pred, target).sum(axis=-1)


MSE = register(
    Loss(
        "mse",
        _mse,
        LossProperties(
            purpose="regression",
            takes="values",
            convex=True,
            differentiable=True,
            twice_differentiable=True,
            bounded=False,
            min_zero=True,
            robust=False,
            source="optax.losses.squared_error",
            notes="summed over output dimensions, averaged over the batch",
        ),
    )
)
