"""The model record and the `model` registry.

A model option builds a flax nnx module from its keyword arguments and, by name, what the
data gives: `in_features`, `out_features` (decided by the task and the loss: classes,
target width, or `{head: width}` for multi-head models), `image_shape`, `data` and `rngs`.
`make_model` builds it abstractly (no weights drawn), splits it with `nnx.split` and returns
a `Model`: the graphdef, the parameter shapes as a plain nested dict, and `apply(params, x)`
that merges them back (`nnx.merge`) inside traced code. Weights are drawn later by
`lossbench.initializers`, so one model serves every init and seed.

Metadata: `tasks` (the data tasks the model fits; any when absent, as for user models),
`implies` (options of other groups it selects) and `step_metrics(params) -> dict` (extra
per-step metrics, e.g. a surface's coordinates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lossbench.errors import ConfigError
from lossbench.registry import Registry

MODELS = Registry("model")

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ConfigError("model.activation", name, f"one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def positive_ints(key: str, values, allow_empty: bool = True) -> list[int]:
    values = list(values)
    if any(v <= 0 for v in values) or (not allow_empty and not values):
        raise ConfigError(f"model.{key}", values, "a list of positive integers")
    return values


def _no_metrics(params) -> dict:
    return {}


@dataclass(frozen=True)
class Model:
    name: str
    graphdef: Any
    shapes: Any  # nested dict of jax.ShapeDtypeStruct, the params' structure
    step_metrics: Callable[[Any], dict] = _no_metrics  # params -> extra per-step metrics

    def apply(self, params, x=None):
        return nnx.merge(self.graphdef, params)(x)

    @property
    def param_count(self) -> int:
        return sum(int(jnp.size(s)) for s in jax.tree_util.tree_leaves(self.shapes))


def make_model(cfg, data, out_features) -> Model:
    """Build the model `cfg` selects for `data` with `out_features` outputs (abstractly)."""
    option = MODELS.resolve(cfg)
    tasks = option.meta.get("tasks")
    if tasks is not None and data.task not in tasks:
        fitting = MODELS.names(tasks=data.task)
        raise ConfigError(
            "model.name", option.name, f"a model for {data.task} data {data.name!r}: {fitting}"
        )
    context = {
        "in_features": data.in_features,
        "out_features": out_features,
        "image_shape": data.image_shape,
        "data": data,
    }

    def build():
        module = MODELS.build(cfg, rngs=nnx.Rngs(0), **context)[1]
        if not isinstance(module, nnx.Module):
            raise ConfigError("model.name", option.name, "a builder returning a flax nnx Module")
        return module

    graphdef, state = nnx.split(nnx.eval_shape(build))
    metrics = option.meta.get("step_metrics", _no_metrics)
    return Model(option.name, graphdef, state.to_pure_dict(), metrics)
