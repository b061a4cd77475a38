"""Curvature matrix-vector products on pytrees of parameters: Hessian and Gauss-Newton.

A *matvec* here is a function `v -> M v` on pytrees shaped like the parameters, where `M` is
the Hessian or the generalized Gauss-Newton matrix of a loss at fixed parameters. Everything
else in `lossbench.curvature` (Lanczos, trace, spectral density) takes such a matvec.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lossbench.compile_cache import cache_by_default

PyTree = Any
Matvec = Callable[[PyTree], PyTree]


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product `H v`, forward-over-reverse (`jax.jvp` of `jax.grad`).

    Pearlmutter (1994); forward-over-reverse is the cheapest mode in JAX (about 2-3 gradients).
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def hessian_matvec(
    loss_fn: Callable[[PyTree], jax.Array], params: PyTree, *, linearize: bool = True
) -> Matvec:
    """A reusable `v -> H v` at fixed `params`.

    With `linearize=True` the gradient is linearized once (`jax.linearize(jax.grad(f))`): the
    forward pass and its residuals are computed once and every product afterwards runs only the
    tangent computation. With `linearize=False` each product is a fresh `hvp` (less memory).
    """
    if not linearize:
        return lambda v: hvp(loss_fn, params, v)
    _, matvec = jax.linearize(jax.grad(loss_fn), params)
    return matvec


def loss_grad_and_hessian_matvec(
    loss_fn: Callable[[PyTree], jax.Array], params: PyTree
) -> tuple[jax.Array, PyTree, Matvec]:
    """`(loss, gradient, v -> H v)` from one linearization of `jax.value_and_grad(loss_fn)`."""

    def grad_with_loss(p):
        value, grad = jax.value_and_grad(loss_fn)(p)
        return grad, value

    grad, matvec, value = jax.linearize(grad_with_loss, params, has_aux=True)
    return value, grad, matvec


def ggn_vp(
    predict: Callable[[PyTree], PyTree],
    loss_on_outputs: Callable[[PyTree], jax.Array],
    params: PyTree,
    v: PyTree,
) -> PyTree:
    """Generalized Gauss-Newton product `Jᵀ H_out J v` for `loss = loss_on_outputs(predict(p))`.

    Schraudolph (2002); Martens (2020). `J` is the Jacobian of `predict` at `params` and `H_out`
    the Hessian of `loss_on_outputs` at the outputs. The GGN drops the second-order term of
    `predict`; it is positive semi-definite whenever the outer loss is convex in the outputs.
    """
    outputs, vjp = jax.vjp(predict, params)
    jv = jax.jvp(predict, (params,), (v,))[1]
    h_jv = jax.jvp(jax.grad(loss_on_outputs), (outputs,), (jv,))[1]
    return vjp(h_jv)[0]


def ggn_matvec(
    predict: Callable[[PyTree], PyTree],
    loss_on_outputs: Callable[[PyTree], jax.Array],
    params: PyTree,
) -> Matvec:
    """A reusable `v -> Jᵀ H_out J v` (see `ggn_vp`): `predict` is linearized once, and its
    transpose (the VJP) reuses the same residuals."""
    outputs, jvp = jax.linearize(predict, params)
    vjp = jax.linear_transpose(jvp, params)
    _, output_hvp = jax.linearize(jax.grad(loss_on_outputs), outputs)
    return lambda v: vjp(output_hvp(jvp(v)))[0]


def compiled(*static_argnames: str) -> Callable[[Callable], Callable]:
    """Decorator: compile the whole call with `jax.jit`, the named arguments (functions, step
    counts) static, everything else (parameters, data, keys) traced.

    A call with the same functions and new arrays of the same shapes reuses the compiled code,
    so pass a module-level loss and give its data as extra arguments
    (`hessian_eigenvalues(loss, params, x, y, key=...)`), not a fresh lambda per call. An
    unhashable static argument raises a `TypeError` (it is never run uncompiled).
    """

    def decorate(function):
        jitted = jax.jit(function, static_argnames=static_argnames)
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            for name in static_argnames:
                try:
                    hash(bound.get(name))
                except TypeError:
                    raise TypeError(
                        f"{function.__name__}: {name}={bound[name]!r} is not hashable, so "
                        "jax.jit cannot take it as a static argument; pass a module-level "
                        "function (or a functools.partial of one) and give arrays as extra "
                        "positional arguments"
                    ) from None
            cache_by_default()
            return jitted(*args, **kwargs)

        wrapper.jitted = jitted
        return wrapper

    return decorate


# Probe vectors per batch of `lax.map` in trace and SLQ, as vector elements per batch. All at
# once (one vmap) keeps every sample's intermediates alive and runs out of cache; one at a
# time loses the batched matmuls of small models. On a 2-core CPU a 600-sample trace of the
# 26k-parameter MLP on 1437 samples ran at 1.32 / 1.38 / 1.50 x its matvec floor in batches of
# 10 / 40 / 150, and best at 1-4 vectors; a 1.4k-parameter MLP on 200 samples ran best at
# 4-64 (benchmarks/probe_cost_kernels.md). At 26k parameters a trace (one HVP a probe) ran
# faster one vector at a time than in pairs in 15 of 17 fresh processes (median ~8%;
# benchmarks/probe_cost_spread.md), while SLQ (a Lanczos run a probe, whose
# reorthogonalisation batches well) ran 12-48% slower one at a time than in pairs in 5 of 5:
# 2**15 and 2**16 elements. Accelerators keep 2**20 (40 vectors at 26k parameters; not
# measured against other sizes).
BATCH_ELEMENTS = {"cpu": {"trace": 2**15, "slq": 2**16}}
BATCH_ELEMENTS_DEFAULT = 2**20
PROBE_KINDS = ("trace", "slq")


def probe_batch_size(
    num_parameters: int, samples: int, backend: str | None = None, kind: str = "trace"
) -> int:
    """Probe vectors per `lax.map` batch for `num_parameters` on `backend` (default: JAX's
    default backend) for a `kind` of work: "trace" (a matvec a probe) or "slq" (a Lanczos
    run a probe); see `BATCH_ELEMENTS`."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: one of {PROBE_KINDS}")
    backend = backend or jax.default_backend()
    elements = BATCH_ELEMENTS.get(backend, {}).get(kind, BATCH_ELEMENTS_DEFAULT)
    return int(max(1, min(samples, elements // max(num_parameters, 1))))


def batched_map(
    function: Callable, inputs: jax.Array, num_parameters: int, kind: str = "trace"
) -> Any:
    """`function` over the rows of `inputs` (probe vectors, or one PRNG key per probe),
    vmapped within batches of `probe_batch_size(num_parameters, kind=kind)` rows, batches
    one after another (`lax.map`)."""
    size = probe_batch_size(num_parameters, inputs.shape[0], kind=kind)
    return jax.lax.map(function, inputs, batch_size=size)


def rademacher_probe(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """One Rademacher vector (entries ±1 with probability ½ each) of length `n`, 32 signs
    from each random 32-bit word. `jax.random.rademacher` (and matfree's `sampler_signs`)
    draws a word per entry: for 600 probes of 26k entries that took 6x the CPU time, about 7%
    of a 600-sample trace's matvecs on a 2-core CPU (benchmarks/probe_cost_kernels.md)."""
    words = jax.random.bits(key, (-(-n // 32),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return (2 * bits.reshape(-1)[:n].astype(dtype) - 1).astype(dtype)


def bind_args(function: Callable, args: tuple) -> Callable:
    """`x -> function(x, *args)`: a loss or model of the parameters (or outputs) alone."""
    if not args:
        return function
    return lambda x: function(x, *args)


def flat_matvec(matvec: Matvec, params_like: PyTree) -> tuple[Callable, jax.Array, Callable]:
    """Flatten a pytree matvec: `(x -> ravel(M unravel(x)), ravel(params_like), unravel)`."""
    flat, unravel = ravel_pytree(params_like)

    def matvec_flat(x):
        return ravel_pytree(matvec(unravel(x)))[0].astype(flat.dtype)

    return matvec_flat, flat, unravel


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`numerator / denominator`, and 0 where the denominator is 0 (no NaN, no inf)."""
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def block_path(path: tuple) -> str:
    """A readable name for a pytree key path, e.g. `layers/0/kernel`.

    Dict keys, sequence indices and attribute names are joined with "/"; a trailing `value`
    attribute (flax nnx `Variable.value`) is dropped.
    """
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if len(parts) > 1 and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts) if parts else "params"


def parameter_blocks(params: PyTree) -> list[tuple[str, int, jax.Array]]:
    """One block per floating-point leaf of `params`: `(name, leaf_index, leaf)`.

    `leaf_index` is the leaf's position in `jax.tree_util.tree_leaves(params)` (and so in
    `ravel_pytree`'s flat vector); `name` comes from `block_path`.
    """
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return [
        (block_path(path), index, leaf)
        for index, (path, leaf) in enumerate(leaves_with_paths)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and jnp.size(leaf) > 0
    ]
