"""Loss barriers between two parameter sets: the straight line and a trained Bézier curve.

The barrier of a path `θ(t)`, t in [0, 1], is `max_t [L(θ(t)) - ((1-t) L(θ(0)) + t L(θ(1)))]`,
the height above the chord between the endpoints (Frankle et al. 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis"). Mode connectivity: a quadratic Bézier curve
`(1-t)² a + 2t(1-t) θ + t² b` whose bend θ is trained to minimise the loss averaged over
uniform t (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of
DNNs") can join two minima the straight line separates by a barrier.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossbench.landscape.directions import line_direction, tree_combine
from lossbench.landscape.grid import MetricsFn, evaluate_points

PyTree = Any


def barrier_height(t, values) -> tuple[float, float]:
    """`(height, t_max)`: the largest excess of `values` over the chord of its endpoints."""
    t, values = np.asarray(t, np.float64), np.asarray(values, np.float64)
    chord = (1 - t) * values[0] + t * values[-1]
    excess = values - chord
    i = int(np.nanargmax(excess))
    return float(excess[i]), float(t[i])


def linear_path(
    metrics_fn: MetricsFn, start: PyTree, end: PyTree, data: Any = None, *, points: int = 51
) -> dict[str, np.ndarray]:
    """Metrics along `start + t (end - start)` at `points` values of t in [0, 1]."""
    t = np.linspace(0.0, 1.0, points)
    out = evaluate_points(metrics_fn, start, (line_direction(start, end),), t[:, None], data)
    return {"t": t, **out}


def bezier_point(start: PyTree, bend: PyTree, end: PyTree, t) -> PyTree:
    """The quadratic Bézier curve `(1-t)² start + 2t(1-t) bend + t² end`."""
    directions = (line_direction(start, bend), line_direction(start, end))
    return tree_combine(start, directions, jnp.stack([2 * t * (1 - t), t * t]))


def bezier_path(
    metrics_fn: MetricsFn,
    start: PyTree,
    bend: PyTree,
    end: PyTree,
    data: Any = None,
    *,
    points: int = 51,
) -> dict[str, np.ndarray]:
    """Metrics along the Bézier curve at `points` values of t in [0, 1] (one compiled call)."""
    t = np.linspace(0.0, 1.0, points)
    coords = np.stack([2 * t * (1 - t), t * t], 1)
    directions = (line_direction(start, bend), line_direction(start, end))
    return {"t": t, **evaluate_points(metrics_fn, start, directions, coords, data)}


@partial(jax.jit, static_argnames=("loss_fn", "steps", "samples", "lr"))
def _fit_bezier(loss_fn, start, end, data, key, steps, samples, lr):
    optimizer = optax.adam(lr)

    def curve_loss(bend, t):
        values = jax.vmap(lambda s: loss_fn(bezier_point(start, bend, end, s), data))(t)
        return jnp.mean(values)

    def step(carry, key):
        bend, opt_state = carry
        t = jax.random.uniform(key, (samples,))
        value, grad = jax.value_and_grad(curve_loss)(bend, t)
        updates, opt_state = optimizer.update(grad, opt_state, bend)
        return (optax.apply_updates(bend, updates), opt_state), value

    bend = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, start, end)
    (bend, _), history = jax.lax.scan(
        step, (bend, optimizer.init(bend)), jax.random.split(key, steps)
    )
    return bend, history


def fit_bezier(
    loss_fn: Callable[[PyTree, Any], jax.Array],
    start: PyTree,
    end: PyTree,
    data: Any = None,
    *,
    key: jax.Array,
    steps: int = 500,
    samples: int = 4,
    lr: float = 1e-2,
) -> tuple[PyTree, np.ndarray]:
    """Train the bend of a quadratic Bézier curve between `start` and `end` (Garipov et al.
    2018): minimise the mean of `loss_fn(curve(t), data)` over `samples` uniform t per step,
    with Adam, starting from the midpoint. Returns the bend and the loss history.
    One compiled `lax.scan`; `loss_fn` must be the same object between calls to reuse it.
    """
    bend, history = _fit_bezier(loss_fn, start, end, data, key, steps, samples, lr)
    return bend, np.asarray(history)
