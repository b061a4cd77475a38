"""Weight penalties added to any loss: l2 / 2 |W|^2 + l1 |W|_1 over the weight matrices."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lossbench.errors import is_traced

WEIGHT_NAME = "kernel"


def _key_name(key) -> str | None:
    for attr in ("key", "name"):
        value = getattr(key, attr, None)
        if isinstance(value, str):
            return value
    return None


def weight_leaves(params) -> list[jax.Array]:
    """The leaves of `params` under a key named "kernel" (flax Linear / Conv weights).

    Works on nested dicts and on flax nnx `State` (whose paths end in .value); biases,
    norm scales and anything else are left out.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [leaf for path, leaf in flat if WEIGHT_NAME in map(_key_name, path)]


def penalty(params, cfg) -> jax.Array:
    """cfg.l2 * 1/2 sum |W|^2 + cfg.l1 * sum |W| over the weight matrices ("kernel" leaves).

    The L1 term (Tibshirani, 1996) is not differentiable at W = 0: plain gradient descent
    oscillates around zero weights instead of reaching them.
    """
    total = jnp.zeros(())
    l1, l2 = (_present(cfg.l1), _present(cfg.l2))
    for w in weight_leaves(params) if l1 or l2 else ():
        if l2:
            total = total + 0.5 * cfg.l2 * jnp.sum(w**2)
        if l1:
            total = total + cfg.l1 * jnp.sum(jnp.abs(w))
    return total


def _present(weight) -> bool:
    """A penalty weight to apply: non-zero, or traced (a fused sweep's input, zero or not)."""
    return is_traced(weight) or bool(weight)
