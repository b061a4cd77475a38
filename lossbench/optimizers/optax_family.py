"""Gradient descent and the adaptive optimizers, straight from optax.

The options' fields are the optax functions' own arguments (`optimizer=adam` has b1, b2, eps,
...), plus the shared `lr`, `schedule`, `clip_norm`, `weight_decay`.
"""

from __future__ import annotations

import optax

from lossbench.optimizers.base import OPTIMIZERS, momentum_or_none


@OPTIMIZERS.register("gd", defaults={"lr": 0.1}, edge_of_stability=True)
def gd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Plain gradient descent (full batch with trainer.batch_size=null)."""
    return optax.sgd(learning_rate)


@OPTIMIZERS.register("sgd", defaults={"lr": 0.1}, edge_of_stability=True)
def sgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9, nesterov: bool = False
) -> optax.GradientTransformation:
    """Stochastic gradient descent with heavy-ball (or Nesterov) momentum."""
    return optax.sgd(learning_rate, momentum=momentum_or_none(momentum), nesterov=nesterov)


OPTIMIZERS.register("adam", defaults={"lr": 1e-3})(optax.adam)
OPTIMIZERS.register("adamw", defaults={"lr": 1e-3})(optax.adamw)
OPTIMIZERS.register("rmsprop", defaults={"lr": 1e-3})(optax.rmsprop)
OPTIMIZERS.register("adagrad", defaults={"lr": 1e-2})(optax.adagrad)
OPTIMIZERS.register("lion", defaults={"lr": 1e-4, "weight_decay": 0.0})(optax.lion)
