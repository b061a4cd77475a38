"""Optimizers, one registry (`OPTIMIZERS`): gradient descent and optax's adaptive methods
(`optax_family`) and the saddle escapers (`escape`). Register your own
`(learning_rate, **fields) -> optax transformation` with `@lossbench.optimizers.register(...)`.
"""

from lossbench.optimizers import escape, optax_family  # noqa: F401  (registers)
from lossbench.optimizers.base import (
    OPTIMIZERS,
    Optimizer,
    OptimizerBase,
    ScheduleConfig,
    make_optimizer,
    make_schedule,
)

register = OPTIMIZERS.register

__all__ = [
    "OPTIMIZERS",
    "Optimizer",
    "OptimizerBase",
    "ScheduleConfig",
    "make_optimizer",
    "make_schedule",
    "register",
]
