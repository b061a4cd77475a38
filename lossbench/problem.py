"""Build a `Problem` from a frozen config: data, model, init, loss, optimizer as pure functions.

This is the one place where config values are checked beyond their type: every check raises
`ConfigError` naming the key, the value and what is allowed, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from lossbench import losses
from lossbench.data import Dataset, make_dataset
from lossbench.errors import ConfigError
from lossbench.initializers import make_init
from lossbench.models import Model, make_model, surface_names
from lossbench.optimizers import Optimizer, make_optimizer
from lossbench.tasks import TASKS, build_task

SUPERVISED_MODELS = ("linear", "mlp", "deep_linear", "cnn")  # classification / regression


@dataclass(frozen=True)
class Problem:
    """Everything training needs, as plain arrays and pure functions of `(params, batch)`.

    `loss(params, batch) = loss_on_outputs(predict(params, batch), batch) + penalty(params)`;
    the split into `predict` and `loss_on_outputs` is what the Gauss-Newton probe needs.
    """

    data: Dataset
    model: Model
    init_params: Callable[[jax.Array], Any]
    predict: Callable  # (params, batch) -> outputs (any pytree)
    loss_on_outputs: Callable  # (outputs, batch) -> scalar, the mean per-example loss
    output_metrics: Callable  # (outputs, batch) -> dict of scalars (accuracy where it applies)
    penalty: Callable | None  # params -> scalar weight penalty, or None
    optimizer: Optimizer
    loss_name: str

    @property
    def param_count(self) -> int:
        return self.model.param_count

    def loss_and_outputs(self, params, batch):
        """The training objective and the model outputs it was computed from."""
        outputs = self.predict(params, batch)
        value = self.loss_on_outputs(outputs, batch)
        if self.penalty is not None:
            value = value + self.penalty(params)
        return value, outputs

    def loss(self, params, batch):
        return self.loss_and_outputs(params, batch)[0]

    def metrics(self, params, batch) -> dict:
        value, outputs = self.loss_and_outputs(params, batch)
        return {"loss": value, **self.output_metrics(outputs, batch)}


def output_dim(loss: losses.Loss, data: Dataset) -> int:
    takes = loss.properties.takes
    if takes == "logits":
        return data.num_classes
    if takes == "score":
        if data.num_classes != 2:
            multiclass = [
                name
                for name in losses.losses_for("classification")
                if losses.LOSSES[name].properties.takes == "logits"
            ]
            raise ConfigError(
                "loss.name",
                loss.name,
                f"a binary loss needs 2 classes, data {data.name!r} has {data.num_classes}; "
                f"multiclass losses: {multiclass}",
            )
        return 1
    if takes == "values":
        return data.num_classes if _one_hot_regression(loss, data) else data.target_dim
    return 1


def _one_hot_regression(loss: losses.Loss, data: Dataset) -> bool:
    """A regression loss on class labels: fit one-hot targets (as in Hui & Belkin 2021, and
    Cohen et al. 2021's MSE runs); accuracy is the argmax of the outputs."""
    return data.task == "classification" and loss.properties.takes == "values"


def _supervised_objective(model: Model, loss: losses.Loss, loss_cfg, data: Dataset):
    takes = loss.properties.takes
    one_hot = _one_hot_regression(loss, data)

    def predict(params, batch):
        return model.apply(params, batch["x"])

    def targets(batch):
        if one_hot:
            return jax.nn.one_hot(batch["y"], data.num_classes, dtype=jnp.float32)
        return batch["y"]

    def loss_on_outputs(outputs, batch):
        return jnp.mean(loss.fn(outputs, targets(batch), loss_cfg))

    def accuracy(outputs, batch):
        if takes in ("logits", "values"):
            return jnp.mean(jnp.argmax(outputs, -1) == batch["y"])
        return jnp.mean((outputs[:, 0] > 0) == (batch["y"] == 1))

    classify = data.task == "classification"

    def output_metrics(outputs, batch):
        return {"accuracy": accuracy(outputs, batch)} if classify else {}

    return predict, loss_on_outputs, output_metrics


def _surface_objective(model: Model):
    def predict(params, batch):
        return model.apply(params)

    def loss_on_outputs(outputs, batch):
        return outputs

    return predict, loss_on_outputs, lambda outputs, batch: {}


def _weight_penalty(loss_cfg) -> Callable | None:
    if not (loss_cfg.l1 or loss_cfg.l2):
        return None
    return lambda params: losses.penalty(params, loss_cfg)


def build_problem(cfg) -> Problem:
    """Check and build everything a run needs from the (frozen) config."""
    data = make_dataset(cfg.data)
    loss = losses.check_loss_config(cfg.loss)
    if data.task == "surface":
        model = make_model(cfg.model, data, 1)
        if model.kind != "surface":
            raise ConfigError("model.name", cfg.model.name, "a surface model when data=none")
        predict, loss_on_outputs, output_metrics = _surface_objective(model)
        init_params = make_init(cfg.init, model)
    elif data.task in TASKS:  # embedding, sequence, multitask: lossbench.tasks
        task = build_task(cfg, data, loss)
        model, init_params, predict = task.model, task.init_params, task.predict
        loss_on_outputs, output_metrics = task.loss_on_outputs, task.output_metrics
    else:
        if not _one_hot_regression(loss, data):
            losses.check_fits(loss.name, data.task)
        if cfg.model.name in surface_names():
            raise ConfigError(
                "data.name",
                cfg.data.name,
                f"none for the analytic surface {cfg.model.name!r} (data=none)",
            )
        if cfg.model.name not in SUPERVISED_MODELS:
            raise ConfigError(
                "model.name",
                cfg.model.name,
                f"a model for {data.task} data {data.name!r}: {list(SUPERVISED_MODELS)}",
            )
        model = make_model(cfg.model, data, output_dim(loss, data))
        predict, loss_on_outputs, output_metrics = _supervised_objective(
            model, loss, cfg.loss, data
        )
        init_params = make_init(cfg.init, model)

    _check_trainer(cfg.trainer, data)
    optimizer = make_optimizer(cfg.optimizer, cfg.trainer.steps)
    return Problem(
        data=data,
        model=model,
        init_params=init_params,
        predict=predict,
        loss_on_outputs=loss_on_outputs,
        output_metrics=output_metrics,
        penalty=_weight_penalty(cfg.loss),
        optimizer=optimizer,
        loss_name=loss.name,
    )


def _check_trainer(t, data: Dataset):
    if t.steps <= 0:
        raise ConfigError("trainer.steps", t.steps, "a positive integer")
    if t.log_every <= 0:
        raise ConfigError("trainer.log_every", t.log_every, "a positive integer")
    if t.seeds < 1:
        raise ConfigError("trainer.seeds", t.seeds, "an integer >= 1")
    if t.chunk <= 0:
        raise ConfigError("trainer.chunk", t.chunk, "a positive integer")
    surface = data.task == "surface"  # surfaces have no data to batch
    if t.batch_size is not None and not surface and not 0 < t.batch_size <= data.n_train:
        raise ConfigError(
            "trainer.batch_size",
            t.batch_size,
            f"null (full batch) or an integer in [1, {data.n_train}] (the training set size)",
        )
