"""Regression losses: predictions and real targets of shape (batch, d), summed over d.

The residual is r = prediction - target (the quantile loss uses target - prediction).
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import optax

from lossbench.losses.base import declare


def _mse(pred, target):
    return optax.losses.squared_error(pred, target).sum(axis=-1)


def _mae(pred, target):
    """Absolute error |r|, the least-absolute-deviations (median) loss (Laplace / Edgeworth)."""
    return jnp.abs(pred - target).sum(axis=-1)


def _huber(pred, target, delta: float = 1.0):
    """Huber (1964): r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond."""
    return optax.losses.huber_loss(pred, target, delta=delta).sum(axis=-1)


def _log_cosh(pred, target, scale: float = 1.0):
    """c^2 log cosh(r / c), c = scale: r^2 / 2 near 0, c |r| - c^2 log 2 far away."""
    c = scale
    return c**2 * optax.losses.log_cosh(pred / c, target / c).sum(axis=-1)


def _quantile(pred, target, quantile: float = 0.5):
    """Pinball loss of Koenker & Bassett (1978): max(tau u, (tau - 1) u), u = target - pred."""
    u = target - pred
    tau = quantile
    return jnp.maximum(tau * u, (tau - 1.0) * u).sum(axis=-1)


def _welsch(pred, target, scale: float = 1.0):
    """Welsch loss (Dennis & Welsch, 1978): c^2 / 2 (1 - exp(-(r / c)^2)), c = scale."""
    c = scale
    r = (pred - target) / c
    return (0.5 * c**2 * -jnp.expm1(-(r**2))).sum(axis=-1)


_regression = partial(declare, purpose="regression", takes="values")


MSE = _regression(
    "mse",
    _mse,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=True,
    robust=False,
    source="optax.losses.squared_error",
    reference="Gauss (1809), least squares",
    notes="summed over output dimensions, averaged over the batch; gradient grows with r",
)

MAE = _regression(
    "mae",
    _mae,
    convex=True,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="lossbench",
    reference="least absolute deviations (Laplace 1793, Edgeworth 1887)",
    notes="kink at r = 0: the minimum is non-differentiable, gradient has unit size everywhere",
)

HUBER = _regression(
    "huber",
    _huber,
    convex=True,
    differentiable=True,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.huber_loss",
    reference="Huber (1964)",
    notes="zero curvature in its linear region |r| > delta; second derivative jumps 1 -> 0 "
    "at |r| = delta",
)

LOG_COSH = _regression(
    "log_cosh",
    _log_cosh,
    convex=True,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=True,
    robust=True,
    source="optax.losses.log_cosh",
    reference="Chen et al. (2019)",
    notes="scaled by c = scale: a smooth Huber with delta = c; gradient c tanh(r / c), "
    "curvature decays like sech^2 far away",
)

QUANTILE = _regression(
    "quantile",
    _quantile,
    convex=True,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=True,
    robust=True,
    source="lossbench",
    reference="Koenker & Bassett (1978)",
    notes="pinball loss, tau = quantile; kink at r = 0, slopes tau and tau - 1; "
    "tau = 0.5 is half the MAE",
)

WELSCH = _regression(
    "welsch",
    _welsch,
    convex=False,
    differentiable=True,
    twice_differentiable=True,
    bounded=True,
    min_zero=True,
    robust=True,
    source="lossbench",
    reference="Dennis & Welsch (1978)",
    notes="bounded by c^2 / 2 per output, c = scale; redescending: gradient -> 0 far away, "
    "concave for |r| > c / sqrt(2)",
)
