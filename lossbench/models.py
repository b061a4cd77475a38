"""Models as flax nnx modules, handed to training as `(graphdef, params)` and a pure `apply`.

`make_model(cfg, dataset, out_dim)` builds the module abstractly (no weights drawn), splits it
with `nnx.split`, and returns a `Model`: the graphdef, the parameter shapes as a plain nested
dict, and `apply(params, x)` that merges them back (`nnx.merge`) inside traced code. Weights
are drawn later by `lossbench.initializers`, so one model serves every init and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lossbench.errors import ConfigError

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
}


class MLP(nnx.Module):
    """Fully connected network; `widths=[]` is a linear model."""

    def __init__(self, in_features, widths, out_features, activation, bias, *, rngs):
        sizes = [in_features, *widths, out_features]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                for a, b in zip(sizes, sizes[1:], strict=False)
            ]
        )
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class DeepLinear(nnx.Module):
    """Product of `depth` weight matrices, no biases (Saxe, McClelland & Ganguli 2014)."""

    def __init__(self, in_features, depth, width, out_features, *, rngs):
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


class CNN(nnx.Module):
    """Small conv net for small images: 3x3 convs (stride 1, then 2), global mean, dense."""

    def __init__(self, image_shape, channels, out_features, activation, *, rngs):
        self.image_shape = tuple(image_shape)
        sizes = [image_shape[-1], *channels]
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3, 3), strides=(1 if i == 0 else 2), rngs=rngs)
                for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False))
            ]
        )
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs)
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x):
        x = x.reshape((x.shape[0], *self.image_shape))
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x.mean(axis=(1, 2)))


class Point(nnx.Module):
    """The parameters of an analytic surface: one point `x` of shape (dim,)."""

    def __init__(self, dim, surface_fn, *, rngs):
        self.x = nnx.Param(jnp.zeros((dim,)))
        self.surface_fn = surface_fn

    def __call__(self, x=None):
        return self.surface_fn(self.x[...])


@dataclass(frozen=True)
class Model:
    name: str
    graphdef: Any
    shapes: Any  # nested dict of jax.ShapeDtypeStruct, the params' structure
    kind: str  # "network" or "surface"

    def apply(self, params, x=None):
        return nnx.merge(self.graphdef, params)(x)

    @property
    def param_count(self) -> int:
        return sum(int(jnp.size(s)) for s in jax.tree_util.tree_leaves(self.shapes))


def _check_activation(cfg):
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError("model.activation", cfg.activation, f"one of {sorted(ACTIVATIONS)}")


def _positive_list(key, values):
    if len(values) == 0 or any(v <= 0 for v in values):
        raise ConfigError(key, list(values), "a non-empty list of positive integers")


def _mlp(cfg, dataset, out_dim, rngs):
    _check_activation(cfg)
    if any(w <= 0 for w in cfg.widths):
        raise ConfigError("model.widths", list(cfg.widths), "positive integers")
    return MLP(dataset.in_features, list(cfg.widths), out_dim, cfg.activation, cfg.bias, rngs=rngs)


def _linear(cfg, dataset, out_dim, rngs):
    return MLP(dataset.in_features, [], out_dim, "identity", cfg.bias, rngs=rngs)


def _deep_linear(cfg, dataset, out_dim, rngs):
    if cfg.depth < 1:
        raise ConfigError("model.depth", cfg.depth, "an integer >= 1")
    if cfg.width <= 0:
        raise ConfigError("model.width", cfg.width, "a positive integer")
    return DeepLinear(dataset.in_features, cfg.depth, cfg.width, out_dim, rngs=rngs)


def _cnn(cfg, dataset, out_dim, rngs):
    _check_activation(cfg)
    _positive_list("model.channels", cfg.channels)
    if dataset.image_shape is None:
        raise ConfigError("model.name", "cnn", f"image data (digits); data {dataset.name!r} is not")
    return CNN(dataset.image_shape, list(cfg.channels), out_dim, cfg.activation, rngs=rngs)


def _task_network(name: str) -> Callable:
    """A builder from `lossbench.tasks.models` (embedding, sequence, multitask), imported late."""

    def build(cfg, dataset, out_dim, rngs):
        from lossbench.tasks.models import TASK_NETWORKS

        return TASK_NETWORKS[name](cfg, dataset, out_dim, rngs)

    return build


NETWORKS: dict[str, Callable] = {
    "linear": _linear,
    "mlp": _mlp,
    "deep_linear": _deep_linear,
    "cnn": _cnn,
    **{name: _task_network(name) for name in ("embedding_mlp", "seq_conv", "multihead_mlp")},
}


def surface_names() -> list[str]:
    from lossbench.surfaces import SURFACES

    return sorted(SURFACES)


def model_names() -> list[str]:
    return sorted(NETWORKS) + surface_names()


def make_model(cfg, dataset, out_dim: int) -> Model:
    """Build the model named `cfg.name` for `dataset` with `out_dim` outputs (abstractly)."""
    if cfg.name in NETWORKS:
        if dataset.task == "surface":
            raise ConfigError(
                "model.name", cfg.name, f"a surface model with data=none: {surface_names()}"
            )
        build = lambda: NETWORKS[cfg.name](cfg, dataset, out_dim, nnx.Rngs(0))
        kind = "network"
    elif cfg.name in surface_names():
        from lossbench.surfaces import SURFACES

        surface = SURFACES[cfg.name]
        surface.check(cfg.dim, cfg.a, cfg.b)
        fn = lambda x: surface.fn(x, cfg.a, cfg.b)
        build = lambda: Point(cfg.dim, fn, rngs=nnx.Rngs(0))
        kind = "surface"
    else:
        raise ConfigError("model.name", cfg.name, f"one of {model_names()}")
    graphdef, state = nnx.split(nnx.eval_shape(build))
    return Model(cfg.name, graphdef, state.to_pure_dict(), kind)
