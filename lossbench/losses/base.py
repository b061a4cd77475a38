"""The loss record: a per-example function plus the design properties it declares.

A loss maps model outputs and targets to one value per example, `fn(outputs, targets, cfg)`,
where `cfg` is the (frozen) `loss` config carrying its hyper-parameters (delta, margin, ...).
The training objective is the mean over the batch (plus any weight penalty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax

# What a loss takes, which decides the task it fits and the model's output size.
#   "logits"  - multiclass logits (batch, classes) and integer labels (batch,)
#   "score"   - one real score (batch, 1) and labels in {0, 1} (binary classification)
#   "values"  - real predictions (batch, d) and real targets (batch, d) (regression)
TAKES_TASK = {"logits": "classification", "score": "classification", "values": "regression"}


@dataclass(frozen=True)
class LossProperties:
    """Design properties of a loss, stated beside it and checked numerically by the tests.

    convex: in the prediction (regression) or in the logits / margin (classification).
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
    name: str
    fn: Callable[..., jax.Array]  # (outputs, targets, cfg) -> per-example losses, shape (batch,)
    properties: LossProperties
    trainable: bool = True  # the 0-1 loss is a metric only

    @property
    def task(self) -> str:
        return TAKES_TASK.get(self.properties.takes, self.properties.purpose)


LOSSES: dict[str, Loss] = {}


def register(loss: Loss) -> Loss:
    LOSSES[loss.name] = loss
    return loss
