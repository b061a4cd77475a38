"""Sequence losses: per-frame logits (B, T, K + 1) against unaligned label sequences."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from lossbench.losses.base import declare

BLANK = 0  # class 0 of the frame logits is the CTC blank; labels are 1..K


def _ctc(logits, targets):
    """CTC (Graves et al., 2006): -log of the total probability of the alignments.

    targets: {"labels": (B, L) int in 1..K, "label_paddings": (B, L),
    "logit_paddings": (B, T) (optional, default no padding)}; paddings 1.0 where padded.
    """
    logit_paddings = targets.get("logit_paddings")
    if logit_paddings is None:
        logit_paddings = jnp.zeros(logits.shape[:2], logits.dtype)
    return optax.losses.ctc_loss(
        logits,
        jnp.asarray(logit_paddings, logits.dtype),
        targets["labels"],
        jnp.asarray(targets["label_paddings"], logits.dtype),
        blank_id=BLANK,
    )


CTC = declare(
    "ctc",
    _ctc,
    purpose="sequence",
    takes="sequence",
    convex=False,
    differentiable=True,
    twice_differentiable=True,
    bounded=False,
    min_zero=False,
    robust=True,
    source="optax.losses.ctc_loss",
    reference="Graves, Fernandez, Gomez & Schmidhuber (2006)",
    notes="blank is class 0; a sum over alignments makes it non-convex in the logits "
    "(log-sum-exp of convex terms subtracted); infimum 0 not attained; a label "
    "sequence that cannot fit the frames costs about 1e5",
)
