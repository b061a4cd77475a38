"""The `optimizer` registry, the fields every optimizer shares, schedules, and the record
training uses.

An optimizer option is a function of the learning-rate schedule (`learning_rate`, context) and
its own keyword arguments returning an optax transformation: optax's own functions
(`optax.adam`) register as they are. Every option also has the shared fields of
`OptimizerBase`: `lr`, `schedule`, `clip_norm` (global-norm clipping) and `weight_decay`
(decoupled L2, `optax.add_decayed_weights`), applied here unless the builder takes them
itself (adamw, lion and sam do).

`make_optimizer(cfg, steps)` returns an `Optimizer`: an `optax.GradientTransformationExtraArgs`
plus the schedule and the edge-of-stability threshold. The training step calls

    updates, state = tx.update(grads, state, params, key=..., value_fn=..., grad_fn=...)

so optimizers that need fresh randomness (`key`, a PRNG key per step), the loss on the current
batch (`value_fn(params) -> scalar`) or its gradient (`grad_fn(params, i) -> grads`, optax's SAM
convention) can take them; plain optax transforms ignore the extras.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax.numpy as jnp
import optax

from lossbench.errors import ConfigError, is_traced
from lossbench.registry import Registry, arguments


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | warmup_cosine | step
    warmup_steps: int = 0
    decay_steps: int | None = None  # null -> trainer.steps
    end_value: float = 0.0  # as a fraction of the peak lr
    boundaries: list[int] = field(default_factory=list)  # step: where the lr is multiplied
    factor: float = 0.1  # step: the multiplier


@dataclass
class OptimizerBase:
    """Fields every optimizer has."""

    lr: float = 0.01
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clip_norm: float | None = None  # global-norm clipping
    weight_decay: float = 0.0


OPTIMIZERS = Registry("optimizer", base=OptimizerBase)
SHARED = tuple(f.name for f in dataclasses.fields(OptimizerBase))


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


@dataclass(frozen=True)
class Optimizer:
    tx: optax.GradientTransformationExtraArgs
    schedule: optax.Schedule
    name: str
    momentum: float
    nesterov: bool
    edge_of_stability: bool = False  # the step is lr times a (momentum-averaged) gradient

    def eos_threshold(self, step) -> jnp.ndarray:
        """Largest stable sharpness for this step (Cohen et al. 2021): 2/eta for gradient
        descent, (2 + 2 beta)/eta with heavy-ball momentum beta, (2 + 2 beta)/((1 + 2 beta) eta)
        with Nesterov momentum; NaN for adaptive optimizers (no single step size)."""
        if not self.edge_of_stability:
            return jnp.nan
        lr, beta = self.schedule(step), self.momentum
        if self.nesterov:
            return (2 + 2 * beta) / ((1 + 2 * beta) * lr)
        return (2 + 2 * beta) / lr

    def two_over_lr(self, step) -> jnp.ndarray:
        if not self.edge_of_stability:
            return jnp.nan
        return 2.0 / self.schedule(step)


def momentum_or_none(momentum):
    """optax's momentum argument: None (no trace) for a momentum of 0; a traced momentum
    (a fused sweep) keeps its trace, so jobs of one program share one state layout."""
    return momentum if is_traced(momentum) or momentum else None


def _shared(cfg) -> OptimizerBase:
    """The shared fields (their defaults where a user's `_target_` config leaves them out)."""
    values = {k: getattr(cfg, k) for k in SHARED if getattr(cfg, k, None) is not None}
    return OptimizerBase(**values)


def _check(shared: OptimizerBase, cfg):
    """The shared values (already checked on each job's concrete config when traced)."""
    values = (shared.lr, shared.weight_decay, shared.clip_norm, getattr(cfg, "momentum", None))
    if any(is_traced(v) for v in values):
        return
    if not shared.lr > 0:
        raise ConfigError("optimizer.lr", shared.lr, "a number > 0")
    momentum = getattr(cfg, "momentum", None) or 0.0
    if not 0 <= momentum < 1:
        raise ConfigError("optimizer.momentum", momentum, "a number in [0, 1)")
    if shared.weight_decay < 0:
        raise ConfigError("optimizer.weight_decay", shared.weight_decay, "a number >= 0")
    if shared.clip_norm is not None and not shared.clip_norm > 0:
        raise ConfigError("optimizer.clip_norm", shared.clip_norm, "null or a number > 0")


def make_optimizer(cfg, steps: int) -> Optimizer:
    """Build the optax optimizer the `optimizer` config selects, with schedule and clipping."""
    shared = _shared(cfg)
    _check(shared, cfg)
    schedule = make_schedule(shared, steps)
    option = OPTIMIZERS.resolve(cfg)
    kwargs = arguments(option, cfg, {"learning_rate": schedule}, skip=SHARED)
    parts = []
    if shared.clip_norm is not None and "clip_norm" not in kwargs:
        parts.append(optax.clip_by_global_norm(shared.clip_norm))
    decay = shared.weight_decay
    if (is_traced(decay) or decay) and "weight_decay" not in kwargs:
        parts.append(optax.add_decayed_weights(shared.weight_decay))  # L2 coupled to the gradient
    parts.append(option.builder(**kwargs))
    tx = optax.with_extra_args_support(optax.chain(*parts) if len(parts) > 1 else parts[0])
    momentum = getattr(cfg, "momentum", None)
    momentum = momentum if is_traced(momentum) else float(momentum or 0.0)
    nesterov = bool(getattr(cfg, "nesterov", False))
    eos = bool(option.meta.get("edge_of_stability", False))
    return Optimizer(tx, schedule, option.name, momentum, nesterov, eos)
