"""Initializations: `jax.nn.initializers` families applied to every weight, times `init.scale`.

`make_init(cfg, model)` returns a pure `init_params(key) -> params` (vmappable over seeds).
Weights are the leaves named `kernel` (dense and conv); biases are zero unless `init.bias`
gives a value. For analytic surfaces, `init=point` starts at `init.value`, optionally moved
by a uniform draw from the ball of radius `init.radius`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.errors import ConfigError

_inits = jax.nn.initializers

# Every family takes the config and returns a `jax.nn.initializers` initializer.
INITIALIZERS: dict[str, Callable] = {
    "glorot_normal": lambda c: _inits.glorot_normal(),
    "glorot_uniform": lambda c: _inits.glorot_uniform(),
    "xavier_normal": lambda c: _inits.glorot_normal(),
    "xavier_uniform": lambda c: _inits.glorot_uniform(),
    "he_normal": lambda c: _inits.he_normal(),
    "he_uniform": lambda c: _inits.he_uniform(),
    "kaiming_normal": lambda c: _inits.he_normal(),
    "kaiming_uniform": lambda c: _inits.he_uniform(),
    "lecun_normal": lambda c: _inits.lecun_normal(),
    "lecun_uniform": lambda c: _inits.lecun_uniform(),
    "normal": lambda c: _inits.normal(c.std),
    "uniform": lambda c: _uniform(c.low, c.high),
    "orthogonal": lambda c: _inits.orthogonal(),
    "zeros": lambda c: _inits.zeros,
    "constant": lambda c: _inits.constant(float(c.value)),
}


def _uniform(low: float, high: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "idx", last)))


def _network_init(cfg, model):
    if cfg.name not in INITIALIZERS:
        allowed = sorted([*INITIALIZERS, "point"])
        raise ConfigError("init.name", cfg.name, f"one of {allowed}")
    if cfg.name == "uniform" and not cfg.low < cfg.high:
        raise ConfigError("init.low", cfg.low, f"less than init.high={cfg.high}")
    weight_init = INITIALIZERS[cfg.name](cfg)
    bias = 0.0 if cfg.bias is None else float(cfg.bias)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(model.shapes)

    def init_params(key):
        keys = jax.random.split(key, len(leaves))
        drawn = []
        for k, (path, shape) in zip(keys, leaves, strict=True):
            if _leaf_name(path) == "kernel":
                drawn.append(cfg.scale * weight_init(k, shape.shape, shape.dtype))
            else:
                drawn.append(jnp.full(shape.shape, bias, shape.dtype))
        return jax.tree_util.tree_unflatten(treedef, drawn)

    return init_params


def _point_init(cfg, model):
    dim = model.shapes["x"].shape[0]
    value = cfg.value
    point = np.full(dim, float(value)) if np.isscalar(value) else np.asarray(value, float)
    if point.shape != (dim,):
        shown = [float(v) for v in np.atleast_1d(value)]
        raise ConfigError("init.value", shown, f"a list of {dim} numbers (model.dim={dim})")
    if cfg.radius < 0:
        raise ConfigError("init.radius", cfg.radius, "a number >= 0")
    point = jnp.asarray(point, jnp.float32)

    def init_params(key):
        k_dir, k_rad = jax.random.split(key)
        direction = jax.random.normal(k_dir, (dim,))
        direction = direction / jnp.linalg.norm(direction)
        radius = cfg.radius * jax.random.uniform(k_rad) ** (1.0 / dim)
        return {"x": point + radius * direction}

    return init_params


def make_init(cfg, model) -> Callable:
    """A pure `init_params(key) -> params` for `model` as the `init` config says."""
    if model.kind == "surface":
        if cfg.name != "point":
            raise ConfigError("init.name", cfg.name, "'point' for analytic surface models")
        return _point_init(cfg, model)
    if cfg.name == "point":
        raise ConfigError(
            "init.name", "point", f"surface models only; for networks one of {sorted(INITIALIZERS)}"
        )
    return _network_init(cfg, model)
