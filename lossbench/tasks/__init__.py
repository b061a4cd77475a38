"""Tasks beyond classification and regression: embedding, sequence and multitask.

Each task has datasets (`lossbench.tasks.datasets`, registered in `lossbench.data.DATASETS`),
networks (`lossbench.tasks.models`, registered in `lossbench.models.NETWORKS`) and an objective
that turns a model and a loss into `predict`, `loss_on_outputs` and `output_metrics`
(`embedding`, `sequence`, `multitask`). `build_task` is what `lossbench.problem.build_problem`
calls for data whose task is one of `TASKS`:

    task        data                                        model           losses
    embedding   digit_pairs, digit_triplets, digit_views,   embedding_mlp   contrastive, cosine
                digit_metric (all three forms)                              (pairs), triplet,
                                                                            ntxent (views)
    sequence    ctc_synthetic                               seq_conv        ctc
    multitask   digits_multitask                            multihead_mlp   multitask
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossbench import losses
from lossbench.errors import ConfigError
from lossbench.initializers import make_init
from lossbench.models import Model, make_model
from lossbench.tasks.datasets import TASK_DATASETS
from lossbench.tasks.embedding import embedding_objective
from lossbench.tasks.models import TASK_MODELS, TASK_NETWORKS
from lossbench.tasks.multitask import (
    head_dims,
    init_with_loss_params,
    multitask_objective,
    with_loss_params,
)
from lossbench.tasks.sequence import sequence_objective

TASKS = tuple(TASK_MODELS)


@dataclass(frozen=True)
class TaskParts:
    model: Model
    init_params: Any
    predict: Any
    loss_on_outputs: Any
    output_metrics: Any


def _check_model(model_cfg, data) -> None:
    allowed = list(TASK_MODELS[data.task])
    if model_cfg.name not in allowed:
        raise ConfigError(
            "model.name", model_cfg.name, f"a model for {data.task} data {data.name!r}: {allowed}"
        )


def build_task(cfg, data, loss: losses.Loss) -> TaskParts:
    """Model, init and objective for embedding / sequence / multitask `data` and `loss`."""
    losses.check_fits(loss.name, data.task)
    _check_model(cfg.model, data)
    if data.task == "embedding":
        model = make_model(cfg.model, data, cfg.model.embed_dim)
        objective = embedding_objective(model, loss, cfg.loss, data)
        return TaskParts(model, make_init(cfg.init, model), *objective)
    if data.task == "sequence":
        model = make_model(cfg.model, data, data.info["vocab"] + 1)
        objective = sequence_objective(model, loss, cfg.loss, data)
        return TaskParts(model, make_init(cfg.init, model), *objective)
    # multitask
    model = make_model(cfg.model, data, head_dims(cfg.loss, data))
    extra = loss.init_extra(cfg.loss)
    if extra:
        model = with_loss_params(model, extra)
        init_params = init_with_loss_params(make_init(cfg.init, model), extra)
    else:
        init_params = make_init(cfg.init, model)
    objective = multitask_objective(model, loss, cfg.loss, data, learned=bool(extra))
    return TaskParts(model, init_params, *objective)


__all__ = ["TASKS", "TASK_DATASETS", "TASK_MODELS", "TASK_NETWORKS", "TaskParts", "build_task"]
