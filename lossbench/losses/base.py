"""The loss record: a per-example function plus the design properties it declares.

A loss maps model outputs and targets to one value per example, `fn(outputs, targets, cfg)`,
where `cfg` is the (frozen) `loss` config carrying its hyper-parameters (delta, margin, ...).
The training objective is the mean over the batch (plus any weight penalty,
`lossbench.losses.penalty`). Call a loss through the record, `loss(outputs, targets, cfg,
extra)`: it passes `extra` on only to losses that have extra trainable parameters.

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

TAKES_TASK = {
    "logits": "classification",
    "score": "classification",
    "values": "regression",
    "pairs": "embedding",
    "triplets": "embedding",
    "views": "embedding",
    "sequence": "sequence",
    "heads": "multitask",
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
    """

    purpose: str
    takes: str
    convex: bool
    differentiable: bool
    twice_differentiable: bool
    bounded: bool
    min_zero: bool
    robust: bool
    source: str  # "optax.losses.<name>" or "lossbench" (written here)
    reference: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Loss:
    """A registered loss.

    fn: (outputs, targets, cfg) -> per-example losses, shape (batch,); losses with
        `extra_params` take a fourth argument, the extra parameters.
    hyper: the `LossConfig` fields the loss reads (checked by `check_loss_config`).
    extra_params: cfg -> pytree of extra trainable parameters (e.g. the learned task
        log-variances of `multitask`), trained with the model's; None for most losses.
    derive: cfg -> LossProperties, where the properties depend on the config (multitask).
    """

    name: str
    fn: Callable[..., jax.Array]
    properties: LossProperties
    trainable: bool = True  # the 0-1 loss is a metric only
    hyper: tuple[str, ...] = ()
    extra_params: Callable[[Any], Any] | None = None
    derive: Callable[[Any], LossProperties] | None = None

    @property
    def task(self) -> str:
        return TAKES_TASK.get(self.properties.takes, self.properties.purpose)

    def init_extra(self, cfg) -> Any:
        """The extra trainable parameters this loss adds ({} for most losses)."""
        return {} if self.extra_params is None else self.extra_params(cfg)

    def properties_for(self, cfg) -> LossProperties:
        """The properties under this config (the declared ones unless they depend on it)."""
        return self.properties if self.derive is None else self.derive(cfg)

    def __call__(self, outputs, targets, cfg, extra: Any = None) -> jax.Array:
        if self.extra_params is None:
            return self.fn(outputs, targets, cfg)
        return self.fn(outputs, targets, cfg, extra)


LOSSES: dict[str, Loss] = {}


def register(loss: Loss) -> Loss:
    LOSSES[loss.name] = loss
    return loss


def signed_margin(score, labels) -> jax.Array:
    """The margin y * s of a score (B, 1) or (B,) against labels in {0, 1} (y = 2 label - 1)."""
    score = jnp.asarray(score)
    if score.ndim > 1:
        score = score[..., 0]
    y = 2.0 * jnp.asarray(labels, score.dtype) - 1.0
    return y * score


def declare(name, fn, *, purpose, takes, hyper=(), trainable=True, **props) -> Loss:
    """Register a loss with its declared properties (the one place losses are built)."""
    properties = LossProperties(purpose=purpose, takes=takes, **props)
    return register(Loss(name, fn, properties, trainable=trainable, hyper=hyper))
