"""Multi-task learning: one trunk, a head per task loss, a weighted sum of the task losses.

The heads follow `loss.tasks` (`lossbench.losses.multitask_heads`): a "logits" head is trained
on the class `y`, a "score" head on the parity `odd`, a "values" head on `ink`
(`lossbench.data.tasks.digits_multitask`).

With `loss.learned_weights` the task weights are learned as in Kendall, Gal & Cipolla (2018):
the loss's extra parameters (`{"log_var": zeros(n_tasks)}`) are trained with the network's, in
one pytree `params = {"model": network params, "loss": {"log_var": ...}}`. They start at 0
(weight 1) whatever `init` says: the init draws only `kernel` leaves of the network. For the
Gauss-Newton probe they pass through `predict` unchanged — outputs are
`{"heads": {...}, "loss": {"log_var": ...}}` — so `loss_on_outputs(predict(params, batch))`
is still the whole objective. With fixed weights params are the network's alone and
`outputs["loss"]` is empty.

Metrics: `loss_<task>` (each task's unweighted mean loss), `accuracy` (logits head),
`score_accuracy` (score head), and with learned weights `log_var_<task>` (s_i; the effective
weight of a task is c_i exp(-s_i)).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from lossbench import losses
from lossbench.models.base import Model
from lossbench.tasks.base import OBJECTIVES, Objective

TARGET_KEYS = {"logits": "y", "score": "odd", "values": "ink"}


@dataclass(frozen=True)
class ModelWithLossParams(Model):
    """A network whose params pytree also holds the loss's extra trainable parameters.

    `shapes` = {"model": network shapes, "loss": extra shapes}; `apply` reads params["model"].
    """

    def apply(self, params, x=None):
        return nnx.merge(self.graphdef, params["model"])(x)


def head_dims(loss_cfg, data) -> dict[str, int]:
    """{head kind: output width} for the task losses of the multitask loss."""
    dims = {"logits": data.num_classes, "score": 1, "values": data.train["ink"].shape[1]}
    return {takes: dims[takes] for takes in losses.multitask_heads(loss_cfg)}


def with_loss_params(model: Model, extra) -> Model:
    """`model` with the loss's extra parameters added to its params pytree."""
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), extra)
    return ModelWithLossParams(
        model.name, model.graphdef, {"model": model.shapes, "loss": shapes}, model.step_metrics
    )


def init_with_loss_params(init_params, extra):
    """The network's init, with the extra parameters at their own initial values (zeros)."""

    def init(key):
        params = init_params(key)
        return {"model": params["model"], "loss": jax.tree_util.tree_map(jnp.asarray, extra)}

    return init


def multitask_objective(model, loss, loss_cfg, data, learned: bool):
    """(predict, loss_on_outputs, output_metrics) of the multitask loss on `data`."""
    heads = losses.multitask_heads(loss_cfg)  # {takes: task loss name}

    def predict(params, batch):
        if learned:
            return {"heads": model.apply(params, batch["x"]), "loss": params["loss"]}
        return {"heads": model.apply(params, batch["x"]), "loss": {}}

    def targets(batch):
        return {takes: batch[TARGET_KEYS[takes]] for takes in heads}

    def loss_on_outputs(outputs, batch):
        extra = outputs["loss"] if learned else None
        return jnp.mean(loss(outputs["heads"], targets(batch), loss_cfg, extra))

    def output_metrics(outputs, batch):
        out, target = outputs["heads"], targets(batch)
        metrics = {}
        for i, (takes, name) in enumerate(heads.items()):
            task = losses.LOSSES[name]
            metrics[f"loss_{name}"] = jnp.mean(task.fn(out[takes], target[takes]))
            if learned:
                metrics[f"log_var_{name}"] = outputs["loss"]["log_var"][i]
        if "logits" in heads:
            metrics["accuracy"] = jnp.mean(jnp.argmax(out["logits"], -1) == target["logits"])
        if "score" in heads:
            metrics["score_accuracy"] = jnp.mean((out["score"][:, 0] > 0) == (target["score"] == 1))
        return metrics

    return predict, loss_on_outputs, output_metrics


@OBJECTIVES.register("multitask", loss="multitask")
def _multitask(data, loss, loss_cfg) -> Objective:
    losses.check_fits(loss.name, "multitask")
    learned = bool(loss.init_extra(loss_cfg))
    make = lambda model: multitask_objective(model, loss, loss_cfg, data, learned)  # noqa: E731
    return Objective(head_dims(loss_cfg, data), make)
