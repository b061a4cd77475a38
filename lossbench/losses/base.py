"""The loss record: a per-example function plus the design properties it declares.

A loss maps model outputs and targets to one value per example, `fn(outputs, targets,
**hyper)`, its hyper-parameters (delta, margin, ...) keyword arguments with defaults: they are
the loss option's config fields (`loss=huber` has `delta`), beside the shared `l1`, `l2`
weight penalty of `LossBase`. The training objective is the mean over the batch (plus the
penalty, `lossbench.losses.penalty`). Call a loss through the record, `loss(outputs, targets,
cfg, extra)`: it reads its hyper-parameters from the config and passes `extra` on only to
losses that have extra trainable parameters.

What a loss `takes` decides the task it fits and the structure of outputs and targets (B is the
batch, every loss returns shape (B,)):

    takes       task            outputs                          targets
    "logits"    classification  (B, C) class logits              (B,) int labels in [0, C)
    "score"     classification  (B, 1) one real score           (B,) labels in {0, 1}
    "values"    regression      (B, d) predictions               (B, d) real targets
    "pairs"     embedding       {"left": (B, D),                 (B,) flag in {0, 1}:
                                 "right": (B, D)}                1 similar, 0 dissimilar
    "triplets"  embedding       {"anchor": (B, D),               ignored (pass e.g. zeros (B,))
                                 "positive": (B, D),
                                 "negative": (B, D)}
    "views"     embedding       {"view1": (B, D),                ignored (pass e.g. zeros (B,));
                                 "view2": (B, D)}                view1[i], view2[i] are two
                                                                 augmentations of input i
    "sequence"  sequence        (B, T, K + 1) per-frame logits,  {"labels": (B, L) int in 1..K,
                                class 0 is the CTC blank          "label_paddings": (B, L),
                                                                  "logit_paddings": (B, T)};
                                                                 paddings are 1.0 where padded,
                                                                 labels right-padded
    "heads"     multitask       {takes_i: head output_i} for     {takes_i: target_i}
                                the task losses in cfg.tasks,
                                e.g. {"logits": (B, C),          e.g. {"logits": (B,),
                                      "values": (B, d)}                "values": (B, d)}

"score" losses map labels {0, 1} to y = 2 * label - 1 inside and use the margin y * score.
For "views" the value of example i depends on the whole batch (the other 2B - 2 embeddings
are its negatives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from lossbench.registry import Option, Registry, builder_fields

TAKES_TASK = {
    "logits": "classification",
    "score": "classification",
    "values": "regression",
    "pairs": "embedding",
    "triplets": "embedding",
    "views": "embedding",
    "sequence": "sequence",
    "heads": "multitask",
    "value": "surface",  # loss=none: the model's output is the objective
}

PROPERTY_NAMES = (
    "convex",
    "differentiable",
    "twice_differentiable",
    "bounded",
    "min_zero",
    "robust",
)


@dataclass(frozen=True)
class LossProperties:
    """Design properties of a loss, stated beside it and checked numerically by the tests.

    convex: in the prediction (regression), the logits / score (classification), the
    embeddings (embedding), the frame logits (sequence).
    differentiable: once, everywhere.  twice_differentiable: twice, everywhere.
    bounded: the loss value is bounded above.  min_zero: minimum 0, attained at the target.
    robust: bounded derivative in the prediction, so one outlier has bounded pull.
    A user's loss may leave them out (then nothing is claimed: all False).
    """

    purpose: str
    takes: str
    convex: bool = False
    differentiable: bool = False
    twice_differentiable: bool = False
    bounded: bool = False
    min_zero: bool = False
    robust: bool = False
    source: str = "user"  # "optax.losses.<name>", "lossbench" (written here) or "user"
    reference: str = ""
    notes: str = ""


@dataclass
class LossBase:
    """Fields every loss has: a weight penalty l2 / 2 |W|^2 + l1 |W|_1 added to it."""

    l1: float = 0.0
    l2: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Loss(Option):
    """A registered loss (its `builder` is the per-example function).

    properties: the declared design properties.
    trainable: False for metrics only (the 0-1 loss).
    extra_params: cfg -> pytree of extra trainable parameters (e.g. the learned task
        log-variances of `multitask`), trained with the model's; None for most losses. Such a
        loss takes them as the keyword `extra`.
    derive: cfg -> LossProperties, where the properties depend on the config (multitask).
    """

    properties: LossProperties
    trainable: bool = True
    extra_params: Callable[[Any], Any] | None = None
    derive: Callable[[Any], LossProperties] | None = None

    @property
    def fn(self) -> Callable[..., jax.Array]:
        return self.builder

    @property
    def hyper(self) -> tuple[str, ...]:
        """The loss's own config fields (its keyword arguments)."""
        return tuple(name for name, _, _ in builder_fields(self.builder))

    @property
    def task(self) -> str:
        return TAKES_TASK.get(self.properties.takes, self.properties.purpose)

    def init_extra(self, cfg) -> Any:
        """The extra trainable parameters this loss adds ({} for most losses)."""
        return {} if self.extra_params is None else self.extra_params(cfg)

    def properties_for(self, cfg) -> LossProperties:
        """The properties under this config (the declared ones unless they depend on it)."""
        return self.properties if self.derive is None else self.derive(cfg)

    def __call__(self, outputs, targets, cfg=None, extra: Any = None) -> jax.Array:
        hyper = {k: getattr(cfg, k) for k in self.hyper if hasattr(cfg, k)}
        if self.extra_params is None:
            return self.fn(outputs, targets, **hyper)
        return self.fn(outputs, targets, extra=extra, **hyper)


LOSSES = Registry("loss", base=LossBase)


def register(loss: Loss) -> Loss:
    LOSSES.options[loss.name] = loss
    return loss


def signed_margin(score, labels) -> jax.Array:
    """The margin y * s of a score (B, 1) or (B,) against labels in {0, 1} (y = 2 label - 1)."""
    score = jnp.asarray(score)
    if score.ndim > 1:
        score = score[..., 0]
    y = 2.0 * jnp.asarray(labels, score.dtype) - 1.0
    return y * score


def declare(name, fn, *, takes, purpose=None, trainable=True, **props) -> Loss:
    """Register `fn(outputs, targets, **hyper) -> per-example losses` as the loss option `name`
    with its declared properties (the one place losses are built; users call it too)."""
    purpose = purpose or TAKES_TASK[takes]
    properties = LossProperties(purpose=purpose, takes=takes, **props)
    meta = {"task": TAKES_TASK.get(takes, purpose)}
    return register(Loss("loss", name, fn, meta, properties=properties, trainable=trainable))
