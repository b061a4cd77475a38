"""The `task` registry: how a model and a loss make an objective on the data of one task.

An objective option is registered under the data task it serves (`Dataset.task`), with the
loss that task defaults to (`loss=`, which `data=` options select). Its builder takes the data,
the loss record and the loss config and returns an `Objective`: the model's output width and
a function of the built model giving `predict(params, batch)`, `loss_on_outputs(outputs,
batch)` (the mean per-example loss) and `output_metrics(outputs, batch)`. The split into
`predict` and `loss_on_outputs` is what the Gauss-Newton probe needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lossbench.errors import ConfigError
from lossbench.registry import Registry

OBJECTIVES = Registry("task")


@dataclass(frozen=True)
class Objective:
    out_features: Any  # what the model outputs: a width, or {head: width}
    make: Callable  # model -> (predict, loss_on_outputs, output_metrics)


def objective_for(data, loss, loss_cfg) -> Objective:
    """The objective of `loss` on `data`, by the data's task."""
    if data.task not in OBJECTIVES:
        raise ConfigError(
            "data.name", data.name, f"data of a task in {list(OBJECTIVES)}; it has {data.task!r}"
        )
    return OBJECTIVES[data.task].builder(data, loss, loss_cfg)


def default_loss(task: str) -> str | None:
    """The loss a task trains by default (what a `data=` option selects)."""
    return OBJECTIVES[task].meta.get("loss") if task in OBJECTIVES else None
