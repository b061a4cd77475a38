"""Classification and regression: one model output per example against the label or target,
and the objective of models that are their own loss (analytic surfaces, `data=none`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lossbench import losses
from lossbench.errors import ConfigError
from lossbench.tasks.base import OBJECTIVES, Objective


def output_dim(loss: losses.Loss, data) -> int:
    """The model's output width for this loss on this data."""
    takes = loss.properties.takes
    if takes == "logits" or (takes == "batch" and data.task == "classification"):
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
    return data.target_dim or 1


def _one_hot_regression(loss: losses.Loss, data) -> bool:
    """A regression loss on class labels: fit one-hot targets (as in Hui & Belkin 2021, and
    Cohen et al. 2021's MSE runs); accuracy is the argmax of the outputs."""
    return data.task == "classification" and loss.properties.takes == "values"


def _supervised(data, loss: losses.Loss, loss_cfg) -> Objective:
    takes = loss.properties.takes
    one_hot = _one_hot_regression(loss, data)
    if not (one_hot or takes == "batch"):
        losses.check_fits(loss.name, data.task)
    classify = data.task == "classification"

    def make(model):
        def predict(params, batch):
            return model.apply(params, batch["x"])

        def targets(batch):
            if takes == "batch":  # a user's loss of (outputs, batch)
                return batch
            if one_hot:
                return jax.nn.one_hot(batch["y"], data.num_classes, dtype=jnp.float32)
            return batch["y"]

        def loss_on_outputs(outputs, batch):
            return jnp.mean(loss(outputs, targets(batch), loss_cfg))

        def accuracy(outputs, batch):
            if takes == "score":
                return jnp.mean((outputs[:, 0] > 0) == (batch["y"] == 1))
            return jnp.mean(jnp.argmax(outputs, -1) == batch["y"])

        def output_metrics(outputs, batch):
            return {"accuracy": accuracy(outputs, batch)} if classify else {}

        return predict, loss_on_outputs, output_metrics

    return Objective(output_dim(loss, data), make)


OBJECTIVES.register("classification", loss="cross_entropy")(_supervised)
OBJECTIVES.register("regression", loss="mse")(_supervised)


@OBJECTIVES.register("surface", loss="none")
def _surface(data, loss: losses.Loss, loss_cfg) -> Objective:
    """The model's output is the loss (an analytic surface: its parameters are the point)."""
    losses.check_fits(loss.name, "surface")

    def make(model):
        def predict(params, batch):
            return model.apply(params)

        def loss_on_outputs(outputs, batch):
            return outputs

        return predict, loss_on_outputs, lambda outputs, batch: {}

    return Objective(1, make)
