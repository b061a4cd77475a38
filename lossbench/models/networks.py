"""Networks for classification and regression data: MLP, linear, deep linear, CNN."""

from __future__ import annotations

from flax import nnx

from lossbench.errors import ConfigError
from lossbench.models.base import MODELS, positive_ints
from lossbench.models.base import activation as activation_fn

SUPERVISED = ("classification", "regression")


@MODELS.register("mlp", tasks=SUPERVISED)
class MLP(nnx.Module):
    """Fully connected network; `widths=()` is a linear model."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        widths: tuple[int, ...] = (128, 128),
        activation: str = "tanh",
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *positive_ints("widths", widths), out_features]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                for a, b in zip(sizes, sizes[1:], strict=False)
            ]
        )
        self.activation = activation_fn(activation)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


@MODELS.register("linear", tasks=SUPERVISED)
def linear(in_features: int, out_features: int, bias: bool = True, *, rngs: nnx.Rngs) -> MLP:
    """A linear model (an MLP without hidden layers)."""
    return MLP(in_features, out_features, (), "identity", bias, rngs=rngs)


@MODELS.register("deep_linear", tasks=SUPERVISED)
class DeepLinear(nnx.Module):
    """Product of `depth` weight matrices, no biases (Saxe, McClelland & Ganguli 2014)."""

    def __init__(
        self, in_features: int, out_features: int, depth: int = 3, width: int = 16, *, rngs
    ):
        if depth < 1:
            raise ConfigError("model.depth", depth, "an integer >= 1")
        if width <= 0:
            raise ConfigError("model.width", width, "a positive integer")
        sizes = [in_features, *([width] * (depth - 1)), out_features]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=False, rngs=rngs)
                for a, b in zip(sizes, sizes[1:], strict=False)
            ]
        )

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@MODELS.register("cnn", tasks=SUPERVISED)
class CNN(nnx.Module):
    """Small conv net for small images: 3x3 convs (stride 1, then 2), global mean, dense."""

    def __init__(
        self,
        image_shape,
        out_features: int,
        channels: tuple[int, ...] = (8, 16),
        activation: str = "relu",
        *,
        rngs: nnx.Rngs,
    ):
        if image_shape is None:
            raise ConfigError("model.name", "cnn", "image data (digits)")
        self.image_shape = tuple(image_shape)
        sizes = [image_shape[-1], *positive_ints("channels", channels, allow_empty=False)]
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3, 3), strides=(1 if i == 0 else 2), rngs=rngs)
                for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False))
            ]
        )
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs)
        self.activation = activation_fn(activation)

    def __call__(self, x):
        x = x.reshape((x.shape[0], *self.image_shape))
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x.mean(axis=(1, 2)))
