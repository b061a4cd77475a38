"""Networks of the embedding, sequence and multitask tasks.

embedding_mlp   an MLP from the input to a `model.embed_dim` embedding, applied to every
                member of a pair / triplet / two views
seq_conv        1-D convolutions over time (kernel 3, `model.widths` channels), then a
                per-frame dense layer to the vocab + 1 CTC classes (blank = 0)
multihead_mlp   an MLP trunk (`model.widths`) with one dense head per task loss
"""

from __future__ import annotations

from flax import nnx

from lossbench.errors import ConfigError
from lossbench.models.base import MODELS, positive_ints
from lossbench.models.base import activation as activation_fn
from lossbench.models.networks import MLP


@MODELS.register("embedding_mlp", tasks=("embedding",))
def embedding_mlp(
    in_features: int,
    widths: tuple[int, ...] = (64,),
    embed_dim: int = 16,
    activation: str = "tanh",
    bias: bool = True,
    *,
    rngs: nnx.Rngs,
) -> MLP:
    """One MLP applied to every member of a pair / triplet / view pair."""
    if embed_dim <= 0:
        raise ConfigError("model.embed_dim", embed_dim, "a positive integer")
    return MLP(in_features, embed_dim, widths, activation, bias, rngs=rngs)


@MODELS.register("seq_conv", tasks=("sequence",))
class SeqConv(nnx.Module):
    """Per-frame logits from 1-D 'same' convolutions over time: (B, T, F) -> (B, T, out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        widths: tuple[int, ...] = (32, 32),
        activation: str = "relu",
        *,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *positive_ints("widths", widths)]
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3,), padding="SAME", rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs)
        self.activation = activation_fn(activation)

    def __call__(self, x):
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x)


@MODELS.register("multihead_mlp", tasks=("multitask",))
class MultiHeadMLP(nnx.Module):
    """A shared MLP trunk and one dense head per entry of `out_features` ({name: width})."""

    def __init__(
        self,
        in_features: int,
        out_features: dict,
        widths: tuple[int, ...] = (64,),
        activation: str = "tanh",
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *positive_ints("widths", widths)]
        self.trunk = nnx.List(
            [
                nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.heads = nnx.Dict(
            {
                name: nnx.Linear(sizes[-1], d, use_bias=bias, rngs=rngs)
                for name, d in dict(out_features).items()
            }
        )
        self.activation = activation_fn(activation)

    def __call__(self, x):
        for layer in self.trunk:
            x = self.activation(layer(x))
        return {name: head(x) for name, head in self.heads.items()}
