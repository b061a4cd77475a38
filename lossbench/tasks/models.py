"""Networks of the embedding, sequence and multitask tasks (registered in `lossbench.models`).

    embedding_mlp   `lossbench.models.MLP` from the input to a `model.embed_dim` embedding,
                    applied to every member of a pair / triplet / two views
    seq_conv        1-D convolutions over time (kernel 3, `model.widths` channels), then a
                    per-frame dense layer to the vocab + 1 CTC classes (blank = 0)
    multihead_mlp   an MLP trunk (`model.widths`) with one dense head per task loss

Builders have the `lossbench.models.NETWORKS` signature `(cfg, dataset, out_dim, rngs)`; the
input width is `dataset.info["features"]`.
"""

from __future__ import annotations

from flax import nnx

from lossbench.errors import ConfigError
from lossbench.models import ACTIVATIONS, MLP, _check_activation


class SeqConv(nnx.Module):
    """Per-frame logits from 1-D 'same' convolutions over time: (B, T, F) -> (B, T, out)."""

    def __init__(self, in_features, widths, out_features, activation, *, rngs):
        sizes = [in_features, *widths]
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3,), padding="SAME", rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs)
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x):
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x)


class MultiHeadMLP(nnx.Module):
    """A shared MLP trunk and one dense head per entry of `heads` ({name: width})."""

    def __init__(self, in_features, widths, heads, activation, bias, *, rngs):
        sizes = [in_features, *widths]
        self.trunk = nnx.List(
            [
                nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.heads = nnx.Dict(
            {name: nnx.Linear(sizes[-1], d, use_bias=bias, rngs=rngs) for name, d in heads.items()}
        )
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x):
        for layer in self.trunk:
            x = self.activation(layer(x))
        return {name: head(x) for name, head in self.heads.items()}


def _features(dataset, model_name: str) -> int:
    features = dataset.info.get("features")
    if features is None:
        raise ConfigError("model.name", model_name, f"data of its task; {dataset.name!r} is not")
    return int(features)


def _widths(cfg, allow_empty: bool = True):
    _check_activation(cfg)
    widths = list(cfg.widths)
    if any(w <= 0 for w in widths) or (not allow_empty and not widths):
        raise ConfigError("model.widths", widths, "a list of positive integers")
    return widths


def _embedding_mlp(cfg, dataset, out_dim, rngs):
    if cfg.embed_dim <= 0:
        raise ConfigError("model.embed_dim", cfg.embed_dim, "a positive integer")
    features = _features(dataset, "embedding_mlp")
    return MLP(features, _widths(cfg), cfg.embed_dim, cfg.activation, cfg.bias, rngs=rngs)


def _seq_conv(cfg, dataset, out_dim, rngs):
    features = _features(dataset, "seq_conv")
    return SeqConv(features, _widths(cfg), out_dim, cfg.activation, rngs=rngs)


def _multihead_mlp(cfg, dataset, out_dim, rngs):
    features = _features(dataset, "multihead_mlp")
    heads = dict(out_dim)  # {head kind: width}, from the multitask loss's tasks
    return MultiHeadMLP(features, _widths(cfg), heads, cfg.activation, cfg.bias, rngs=rngs)


TASK_NETWORKS = {
    "embedding_mlp": _embedding_mlp,
    "seq_conv": _seq_conv,
    "multihead_mlp": _multihead_mlp,
}

# The networks each task accepts (the classification / regression ones are in lossbench.models).
TASK_MODELS = {
    "embedding": ("embedding_mlp",),
    "sequence": ("seq_conv",),
    "multitask": ("multihead_mlp",),
}
