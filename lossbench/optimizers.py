"""Optimizers and learning-rate schedules, all optax.

`make_optimizer(cfg, steps)` returns an `Optimizer`: an `optax.GradientTransformationExtraArgs`
plus the schedule and the edge-of-stability threshold. The training step calls

    updates, state = tx.update(grads, state, params, key=..., value_fn=..., grad_fn=...)

so optimizers that need fresh randomness (`key`, a PRNG key per step), the loss on the current
batch (`value_fn(params) -> scalar`) or its gradient (`grad_fn(params, i) -> grads`, optax's SAM
convention) can take them; plain optax transforms ignore the extras.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import optax

from lossbench.errors import ConfigError


def make_schedule(cfg, steps: int) -> optax.Schedule:
    """The learning rate per step: constant, cosine, warmup_cosine or step (piecewise)."""
    s, lr = cfg.schedule, cfg.lr
    decay_steps = s.decay_steps or steps
    if decay_steps <= 0:
        raise ConfigError("optimizer.schedule.decay_steps", s.decay_steps, "a positive integer")
    if s.name == "constant":
        return optax.constant_schedule(lr)
    if s.name == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps, alpha=s.end_value)
    if s.name == "warmup_cosine":
        if not 0 <= s.warmup_steps < decay_steps:
            raise ConfigError(
                "optimizer.schedule.warmup_steps", s.warmup_steps, f"in [0, {decay_steps})"
            )
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, s.warmup_steps, decay_steps, end_value=s.end_value * lr
        )
    if s.name == "step":
        return optax.piecewise_constant_schedule(lr, {int(b): s.factor for b in s.boundaries})
    raise ConfigError(
        "optimizer.schedule.name", s.name, "one of ['constant', 'cosine', 'step', 'warmup_cosine']"
    )


def _sgd(cfg, lr):
    return optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov)


# name -> (builder(cfg, schedule) -> GradientTransformation, has_native_weight_decay)
OPTIMIZERS: dict[str, tuple[Callable, bool]] = {
    "gd": (_sgd, False),
    "sgd": (_sgd, False),
    "adam": (lambda c, lr: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps), False),
    "adamw": (
        lambda c, lr: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay),
        True,
    ),
    "rmsprop": (
        lambda c, lr: optax.rmsprop(lr, decay=c.decay, eps=c.eps, momentum=c.momentum or None),
        False,
    ),
    "adagrad": (lambda c, lr: optax.adagrad(lr, eps=c.eps), False),
    "lion": (
        lambda c, lr: optax.lion(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay),
        True,
    ),
}

# Optimizers whose step is lr * (momentum-averaged) gradient: the edge of stability applies.
GRADIENT_DESCENT_FAMILY = {"gd", "sgd"}


def register(name: str, builder: Callable, *, native_weight_decay: bool = False, gd_like=False):
    """Add an optimizer option (used by `lossbench.escape` for saddle-escaping methods)."""
    OPTIMIZERS[name] = (builder, native_weight_decay)
    if gd_like:
        GRADIENT_DESCENT_FAMILY.add(name)


@dataclass(frozen=True)
class Optimizer:
    tx: optax.GradientTransformationExtraArgs
    schedule: optax.Schedule
    name: str
    momentum: float
    nesterov: bool

    def eos_threshold(self, step) -> jnp.ndarray:
        """Largest stable sharpness for this step (Cohen et al. 2021): 2/eta for gradient
        descent, (2 + 2 beta)/eta with heavy-ball momentum beta, (2 + 2 beta)/((1 + 2 beta) eta)
        with Nesterov momentum; NaN for adaptive optimizers (no single step size)."""
        if self.name not in GRADIENT_DESCENT_FAMILY:
            return jnp.nan
        lr, beta = self.schedule(step), self.momentum
        if self.nesterov:
            return (2 + 2 * beta) / ((1 + 2 * beta) * lr)
        return (2 + 2 * beta) / lr

    def two_over_lr(self, step) -> jnp.ndarray:
        if self.name not in GRADIENT_DESCENT_FAMILY:
            return jnp.nan
        return 2.0 / self.schedule(step)


def _check(cfg):
    if cfg.name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", cfg.name, f"one of {sorted(OPTIMIZERS)}")
    if not cfg.lr > 0:
        raise ConfigError("optimizer.lr", cfg.lr, "a number > 0")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError("optimizer.momentum", cfg.momentum, "a number in [0, 1)")
    if cfg.name == "gd" and cfg.momentum:
        raise ConfigError("optimizer.momentum", cfg.momentum, "0 for plain gd; use optimizer=sgd")
    if cfg.weight_decay < 0:
        raise ConfigError("optimizer.weight_decay", cfg.weight_decay, "a number >= 0")
    if cfg.clip_norm is not None and not cfg.clip_norm > 0:
        raise ConfigError("optimizer.clip_norm", cfg.clip_norm, "null or a number > 0")


def make_optimizer(cfg, steps: int) -> Optimizer:
    """Build the optax optimizer the `optimizer` config names, with schedule and clipping."""
    _check(cfg)
    schedule = make_schedule(cfg, steps)
    builder, native_decay = OPTIMIZERS[cfg.name]
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay and not native_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))  # L2 coupled to the gradient
    parts.append(builder(cfg, schedule))
    tx = optax.with_extra_args_support(optax.chain(*parts) if len(parts) > 1 else parts[0])
    return Optimizer(tx, schedule, cfg.name, float(cfg.momentum), bool(cfg.nesterov))


from lossbench import escape  # noqa: E402,F401  (registers pgd, noisy_gd, sam, saddle_free_newton)
