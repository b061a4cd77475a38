"""Sequence labelling with CTC: per-frame logits (B, T, K + 1) against unaligned label sequences.

Metrics from greedy (best-path) decoding — the most likely class per frame, repeats merged,
blanks (class 0) dropped (Graves et al., 2006):
  accuracy          fraction of sequences decoded exactly;
  label_error_rate  total edit distance (Levenshtein) to the labels / total label length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lossbench import losses
from lossbench.losses.sequence import BLANK
from lossbench.tasks.base import OBJECTIVES, Objective


def greedy_decode(logits):
    """Best-path decoding: (B, T, K + 1) -> (decoded (B, T) right-padded with 0, lengths (B,))."""
    best = jnp.argmax(logits, axis=-1)
    b, t = best.shape
    previous = jnp.concatenate([jnp.full((b, 1), -1, best.dtype), best[:, :-1]], axis=1)
    keep = (best != BLANK) & (best != previous)
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, t)  # dropped frames go to slot t
    decoded = jnp.zeros((b, t + 1), best.dtype).at[jnp.arange(b)[:, None], slot].set(best)
    return decoded[:, :t], keep.sum(axis=1)


def edit_distance(hyp, hyp_len, ref, ref_len):
    """Levenshtein distance between hyp[:hyp_len] and ref[:ref_len] (1-D int arrays).

    Row by row over hyp; within a row the insertion chain is a running minimum:
    d[i, j] = j + min_{k <= j} (e[k] - k), e the deletion / substitution candidates.
    """
    cols = jnp.arange(ref.shape[0] + 1)

    def row(previous, inputs):
        i, token = inputs
        substitute = previous[:-1] + (token != ref)
        e = jnp.concatenate([previous[:1] + 1, jnp.minimum(previous[1:] + 1, substitute)])
        current = cols + jax.lax.cummin(e - cols)
        return jnp.where(i < hyp_len, current, previous), None

    final, _ = jax.lax.scan(row, cols, (jnp.arange(hyp.shape[0]), hyp))
    return final[ref_len]


def sequence_objective(model, loss, loss_cfg, data):
    """(predict, loss_on_outputs, output_metrics) of CTC on frames `x`, `labels`."""

    def predict(params, batch):
        return model.apply(params, batch["x"])

    def targets(batch):
        return {"labels": batch["labels"], "label_paddings": batch["label_paddings"]}

    def loss_on_outputs(outputs, batch):
        return jnp.mean(loss(outputs, targets(batch), loss_cfg))

    def output_metrics(outputs, batch):
        decoded, lengths = greedy_decode(outputs)
        mask = batch["label_paddings"] < 0.5
        labels = jnp.where(mask, batch["labels"], 0)
        label_lengths = mask.sum(axis=1)
        width = labels.shape[1]
        exact = (lengths == label_lengths) & jnp.all(decoded[:, :width] == labels, axis=1)
        distances = jax.vmap(edit_distance)(decoded, lengths, labels, label_lengths)
        return {
            "accuracy": jnp.mean(exact),
            "label_error_rate": jnp.sum(distances) / jnp.maximum(jnp.sum(label_lengths), 1),
        }

    return predict, loss_on_outputs, output_metrics


@OBJECTIVES.register("sequence", loss="ctc")
def _sequence(data, loss, loss_cfg) -> Objective:
    losses.check_fits(loss.name, "sequence")
    make = lambda model: sequence_objective(model, loss, loss_cfg, data)  # noqa: E731
    return Objective(data.info["vocab"] + 1, make)
