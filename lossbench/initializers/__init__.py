"""Initializations, one registry (`INITIALIZERS`): `jax.nn.initializers` families applied to
every weight matrix, times `init.scale`, and `point` (every parameter at a given value).

An init option returns an `Init`, a pure `(key, shapes) -> params` (vmappable over seeds).
Weights are the leaves named `kernel` (dense and conv); biases are zero unless `init.bias`
gives a value. A builder given by `_target_` that returns a plain `jax.nn.initializers`
initializer is applied to the weights the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lossbench.errors import ConfigError, is_traced
from lossbench.registry import Registry, arguments

INITIALIZERS = Registry("init")
register = INITIALIZERS.register
_inits = jax.nn.initializers


@dataclass(frozen=True)
class Init:
    """A pure `init(key, shapes) -> params` for parameters of these shapes."""

    fn: Callable[[jax.Array, Any], Any]

    def __call__(self, key, shapes):
        return self.fn(key, shapes)


@dataclass(frozen=True)
class Weights:
    """How weight matrices are drawn: the initializer times `scale`; biases at `bias` (0)."""

    scale: float = 1.0  # multiplies every weight after drawing it
    bias: float | None = None  # biases: zero unless a value is given


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "idx", last)))


def draw(initializer: Callable, weights: Weights = Weights()) -> Init:
    """`initializer(key, shape, dtype)` on every `kernel` leaf, times `scale`; biases constant."""
    bias = 0.0 if weights.bias is None else weights.bias

    def init(key, shapes):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        if not any(_leaf_name(path) == "kernel" for path, _ in leaves):
            raise ConfigError(
                "init.name",
                "a weight init",
                "a model with weight matrices; for surfaces init=point",
            )
        keys = jax.random.split(key, len(leaves))
        drawn = []
        for k, (path, shape) in zip(keys, leaves, strict=True):
            if _leaf_name(path) == "kernel":
                drawn.append(weights.scale * initializer(k, shape.shape, shape.dtype))
            else:
                drawn.append(jnp.full(shape.shape, bias, shape.dtype))
        return jax.tree_util.tree_unflatten(treedef, drawn)

    return Init(init)


def _library(factory: Callable) -> Callable:
    def build(*, weights: Weights) -> Init:
        return draw(factory(), weights)

    build.__doc__ = f"`jax.nn.initializers.{factory.__name__}` on the weights."
    return build


for _name, _factory in {
    "glorot_normal": _inits.glorot_normal,
    "glorot_uniform": _inits.glorot_uniform,
    "xavier_normal": _inits.glorot_normal,
    "xavier_uniform": _inits.glorot_uniform,
    "he_normal": _inits.he_normal,
    "he_uniform": _inits.he_uniform,
    "kaiming_normal": _inits.he_normal,
    "kaiming_uniform": _inits.he_uniform,
    "lecun_normal": _inits.lecun_normal,
    "lecun_uniform": _inits.lecun_uniform,
    "orthogonal": _inits.orthogonal,
}.items():
    register(_name)(_library(_factory))


@register("normal")
def normal(std: float = 1.0, *, weights: Weights) -> Init:
    """Weights from N(0, std^2)."""
    return draw(_inits.normal(std), weights)


@register("uniform")
def uniform(low: float = -1.0, high: float = 1.0, *, weights: Weights) -> Init:
    """Weights from U(low, high)."""
    if not low < high:
        raise ConfigError("init.low", low, f"less than init.high={high}")
    return draw(lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, low, high), weights)


@register("zeros")
def zeros(*, weights: Weights) -> Init:
    """All weights 0 (a symmetric start: every hidden unit stays the same)."""
    return draw(_inits.zeros, weights)


@register("constant")
def constant(value: float = 0.1, *, weights: Weights) -> Init:
    """All weights `value`."""
    return draw(_inits.constant(float(value)), weights)


@register("point")
def point(value: Any = 0.0, radius: float = 0.0) -> Init:
    """Every parameter at `value` (a number, or one per parameter in flattened order: the
    coordinates of a surface), moved by a uniform draw from the ball of `radius`."""
    if radius < 0:
        raise ConfigError("init.radius", radius, "a number >= 0")

    def init(key, shapes):
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        flat, unravel = ravel_pytree(zeros)
        n = flat.size
        start = np.full(n, float(value)) if np.isscalar(value) else np.asarray(value, float)
        if start.shape != (n,):
            shown = [float(v) for v in np.atleast_1d(value)]
            raise ConfigError("init.value", shown, f"a number or a list of {n} (the parameters)")
        k_dir, k_rad = jax.random.split(key)
        direction = jax.random.normal(k_dir, (n,))
        direction = direction / jnp.linalg.norm(direction)
        distance = radius * jax.random.uniform(k_rad) ** (1.0 / n)
        return unravel(jnp.asarray(start, flat.dtype) + distance * direction)

    return Init(init)


def make_init(cfg, model) -> Callable:
    """A pure `init_params(key) -> params` for `model` as the `init` config says."""
    option = INITIALIZERS.resolve(cfg)
    kwargs = arguments(option, cfg, {}, skip=("scale", "bias"))
    built = option.builder(**kwargs)
    if not isinstance(built, Init):  # a user's jax.nn.initializers-style initializer
        scaling = {k: getattr(cfg, k, None) for k in ("scale", "bias") if k not in kwargs}
        built = draw(built, Weights(**{k: v for k, v in scaling.items() if v is not None}))
    init_params = lambda key: built(key, model.shapes)  # noqa: E731
    if not any(is_traced(getattr(cfg, k, None)) for k in ("scale", "bias")):
        jax.eval_shape(init_params, jax.random.key(0))  # config errors now, not inside a trace
    return init_params


__all__ = ["INITIALIZERS", "Init", "Weights", "draw", "make_init", "register"]
