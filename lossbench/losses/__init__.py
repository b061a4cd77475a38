"""The loss catalogue: every loss with its declared design properties.

`get_loss(name)` returns a trainable `Loss`; `LOSSES` maps names to them; `losses_for(task)`
lists the names that fit a task; `check_fits` and `check_loss_config` are the build-time
checks; `penalty` is the weight penalty added to any loss; `properties_table` and
`format_properties_table` list the declared properties.
"""

from lossbench.errors import ConfigError
from lossbench.losses import (  # noqa: F401  (registers)
    classification,
    embedding,
    identity,
    margin,
    multitask,
    regression,
    sequence,
)
from lossbench.losses.base import (
    LOSSES,
    TAKES_TASK,
    Loss,
    LossBase,
    LossProperties,
    declare,
)
from lossbench.losses.classification import MULTICLASS_HINGE_VARIANTS
from lossbench.losses.multitask import (
    multitask_extra_params,
    multitask_heads,
    multitask_properties,
)
from lossbench.losses.penalties import penalty, weight_leaves
from lossbench.losses.properties import format_properties_table, properties_table

ZERO_ONE_MESSAGE = (
    "the 0-1 loss is a metric only (zero gradient almost everywhere); train on a surrogate: "
    "hinge, logistic, cross_entropy, ..."
)


def losses_for(task: str) -> list[str]:
    """The trainable losses that fit a task (classification, regression, embedding, ...)."""
    return sorted(name for name, loss in LOSSES.items() if loss.task == task and loss.trainable)


def get_loss(name: str, for_training: bool = True) -> Loss:
    """The loss called `name`; metrics only (zero_one) need `for_training=False`."""
    if name not in LOSSES:
        known = sorted(n for n, loss in LOSSES.items() if loss.trainable or not for_training)
        raise ConfigError("loss.name", name, f"one of {known}")
    loss = LOSSES[name]
    if for_training and not loss.trainable:
        raise ConfigError("loss.name", name, ZERO_ONE_MESSAGE)
    return loss


def check_fits(loss_name: str, task: str) -> Loss:
    """The loss, if it fits the data's task; else a ConfigError listing those that do."""
    loss = get_loss(loss_name)
    if loss.task != task:
        raise ConfigError(
            "loss.name", loss_name, f"fits {loss.task}; losses for {task}: {losses_for(task)}"
        )
    return loss


# Hyper-parameter checks beyond type: field -> (test, what is allowed).
_RULES = {
    "delta": (lambda v: v > 0, "> 0"),
    "quantile": (lambda v: 0 < v < 1, "in (0, 1)"),
    "scale": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: v >= 0, ">= 0"),
    "margin": (lambda v: v > 0, "> 0"),
    "temperature": (lambda v: v > 0, "> 0"),
    "variant": (lambda v: v in MULTICLASS_HINGE_VARIANTS, " | ".join(MULTICLASS_HINGE_VARIANTS)),
}
_LOSS_RULES = {
    ("cosine", "margin"): (
        lambda v: -1 <= v < 1,
        "in [-1, 1) for cosine (a cosine similarity; at 1 the dissimilar term vanishes), e.g. 0.0",
    ),
}


def check_loss_config(cfg) -> Loss:
    """Check the loss config once, at build time: name, hyper-parameters, multitask heads."""
    loss = get_loss(cfg.name)
    if cfg.name == "multitask":
        multitask_heads(cfg)
    for field in loss.hyper:
        test, allowed = _LOSS_RULES.get((cfg.name, field), _RULES.get(field, (None, "")))
        value = getattr(cfg, field)
        if test is not None and not test(value):
            raise ConfigError(f"loss.{field}", value, f"{allowed} ({cfg.name})")
    for field in ("l1", "l2"):
        if getattr(cfg, field, 0.0) < 0:
            raise ConfigError(f"loss.{field}", getattr(cfg, field), ">= 0")
    return loss


register = declare  # a user's loss: lossbench.losses.register(name, fn, takes=...)


__all__ = [
    "LOSSES",
    "TAKES_TASK",
    "LossBase",
    "ZERO_ONE_MESSAGE",
    "Loss",
    "LossProperties",
    "check_fits",
    "check_loss_config",
    "declare",
    "format_properties_table",
    "get_loss",
    "losses_for",
    "multitask_extra_params",
    "multitask_heads",
    "multitask_properties",
    "penalty",
    "properties_table",
    "register",
    "weight_leaves",
]
