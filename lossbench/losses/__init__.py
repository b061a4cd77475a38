"""The loss catalogue: every loss with its declared design properties.

`get_loss(name)` returns a `Loss`; `LOSSES` maps names to them; `losses_for(task)` lists the
names that fit a task.
"""

from lossbench.losses import classification, regression  # noqa: F401  (registers)
from lossbench.losses.base import LOSSES, Loss, LossProperties
from lossbench.schema import ConfigError


def losses_for(task: str) -> list[str]:
    return sorted(name for name, loss in LOSSES.items() if loss.task == task and loss.trainable)


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise ConfigError("loss.name", name, f"one of {sorted(LOSSES)}")
    return LOSSES[name]


__all__ = ["LOSSES", "Loss", "LossProperties", "get_loss", "losses_for"]
