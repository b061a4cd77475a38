"""Metric learning: one embedding network applied to every member of a pair, triplet or view pair.

`predict(params, batch)` returns the structure the loss takes (`lossbench.losses.base`):
{"left", "right"} for pairs, {"anchor", "positive", "negative"} for triplets, {"view1",
"view2"} for views. The members go through the network as one stacked batch.

The `accuracy` metric depends on what the loss takes:
  pairs     the pair is called similar when d(left, right) < margin / 2 (contrastive: similar
            pairs are pulled to 0, dissimilar pushed beyond the margin), or when
            cos(left, right) > (1 + margin) / 2 (cosine: 1 for similar, <= margin dissimilar);
            accuracy = agreement with the `same` flag.
  triplets  d(anchor, positive) < d(anchor, negative).
  views     nearest-neighbour class accuracy within the batch: the view2 most cosine-similar
            to view1[i] shows the same digit class (chance about 1 / 10); and `retrieval`,
            that it is view1[i]'s own partner view2[i] (chance 1 / B, so it falls as the
            batch grows: compare it at one batch size).
"""

from __future__ import annotations

import jax.numpy as jnp

from lossbench import losses
from lossbench.data.tasks import FORMS
from lossbench.errors import ConfigError
from lossbench.tasks.base import OBJECTIVES, Objective

MEMBERS = {
    "pairs": {"left": "x1", "right": "x2"},
    "triplets": {"anchor": "anchor", "positive": "positive", "negative": "negative"},
    "views": {"view1": "view1", "view2": "view2"},
}


def _distance(a, b):
    return jnp.sqrt(jnp.sum((a - b) ** 2, axis=-1) + 1e-12)


def _unit(a):
    return a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _cosine(a, b):
    return jnp.sum(_unit(a) * _unit(b), axis=-1)


def _pair_accuracy(loss_name, margin):
    if loss_name == "cosine":
        return lambda o, same: jnp.mean(
            (_cosine(o["left"], o["right"]) > 0.5 * (1.0 + margin)) == (same == 1)
        )
    return lambda o, same: jnp.mean(
        (_distance(o["left"], o["right"]) < 0.5 * margin) == (same == 1)
    )


def _triplet_accuracy(o, _):
    a = o["anchor"]
    return jnp.mean(_distance(a, o["positive"]) < _distance(a, o["negative"]))


def _view_metrics(o, classes):
    nearest = jnp.argmax(_unit(o["view1"]) @ _unit(o["view2"]).T, axis=1)
    return {
        "accuracy": jnp.mean(classes[nearest] == classes),
        "retrieval": jnp.mean(nearest == jnp.arange(nearest.shape[0])),
    }


def losses_for_data(data) -> list[str]:
    """The embedding losses whose form (pairs / triplets / views) this dataset holds."""
    return [
        name
        for name in losses.losses_for("embedding")
        if all(k in data.train for k in FORMS[losses.LOSSES[name].properties.takes])
    ]


def embedding_objective(model, loss, loss_cfg, data):
    """(predict, loss_on_outputs, output_metrics) of an embedding loss on `data`."""
    takes = loss.properties.takes
    if not all(k in data.train for k in FORMS[takes]):
        raise ConfigError(
            "loss.name",
            loss.name,
            f"a loss for the {', '.join(data.info.get('forms', ()))} of data {data.name!r}: "
            f"{losses_for_data(data)} (data=digit_metric holds pairs, triplets and views, "
            f"so every embedding loss fits it: {losses.losses_for('embedding')})",
        )
    members = MEMBERS[takes]

    def predict(params, batch):
        stacked = jnp.concatenate([batch[key] for key in members.values()], axis=0)
        embedded = jnp.split(model.apply(params, stacked), len(members), axis=0)
        return dict(zip(members, embedded, strict=True))

    def targets(batch):
        if takes == "pairs":
            return batch["same"]
        return jnp.zeros(batch[next(iter(members.values()))].shape[0])

    def loss_on_outputs(outputs, batch):
        return jnp.mean(loss(outputs, targets(batch), loss_cfg))

    if takes == "views":
        return predict, loss_on_outputs, lambda o, batch: _view_metrics(o, batch["view_class"])
    accuracy = _pair_accuracy(loss.name, loss_cfg.margin) if takes == "pairs" else _triplet_accuracy

    def output_metrics(outputs, batch):
        return {"accuracy": accuracy(outputs, targets(batch))}

    return predict, loss_on_outputs, output_metrics


@OBJECTIVES.register("embedding", loss="triplet")
def _embedding(data, loss, loss_cfg) -> Objective:
    losses.check_fits(loss.name, "embedding")
    return Objective(None, lambda model: embedding_objective(model, loss, loss_cfg, data))
