"""Stochastic trace of curvature matrices with a standard error (matfree `stochtrace`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from matfree import stochtrace

from lossbench.curvature.operators import (
    Matvec,
    batched_map,
    bind_args,
    compiled,
    flat_matvec,
    hessian_matvec,
    rademacher_probe,
)

PyTree = Any
TRACE_METHODS = ("hutchinson", "xtrace")


class TraceResult(NamedTuple):
    """`estimate` of tr(M) and its standard error `sem`."""

    estimate: jax.Array
    sem: jax.Array


def trace_of(
    matvec: Matvec,
    params_like: PyTree,
    *,
    key: jax.Array,
    samples: int,
    method: str = "hutchinson",
) -> TraceResult:
    """Estimate tr(M) and its standard error from `samples` random probes.

    - "hutchinson": Hutchinson (1989), the mean of `zᵀMz` over Rademacher `z`
      (`rademacher_probe`); `samples` matvecs; the SEM is the sample standard deviation
      (ddof=1) over √samples.
    - "xtrace": XTrace of Epperly, Tropp & Webber (2024), exact on a rank-`samples` Nyström-like
      part plus a leave-one-out Hutchinson estimate of the rest; `2·samples` matvecs, Gaussian
      probes; the SEM is that of the leave-one-out estimates (ddof=1). Needs `samples ≤ n`, and
      returns the exact trace (SEM 0) when `2·samples ≥ n`.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method={method!r} is not allowed: one of {TRACE_METHODS}")
    if samples < 2:
        raise ValueError(f"samples={samples!r} is not allowed: at least 2 (for an error bar)")
    matvec_flat, flat, _ = flat_matvec(matvec, params_like)
    if method == "hutchinson":
        # matfree's integrand, mapped over batches of probes (`batched_map`) drawn in the
        # batch from one key each (`rademacher_probe`), instead of matfree's single vmap over
        # all samples drawn at once: 2.1 x the matvec floor at 600 samples on a 26k-parameter
        # MLP (benchmarks/probe_cost_kernels.md), and the probes never all in memory
        integrand = stochtrace.monte_carlo_trace()
        n, dtype = flat.shape[0], flat.dtype
        quadratic_forms = batched_map(
            lambda k: integrand(matvec_flat, rademacher_probe(k, n, dtype)),
            jax.random.split(key, samples),
            n,
        )
        estimate = jnp.mean(quadratic_forms)
        sem = jnp.std(quadratic_forms, ddof=1) / jnp.sqrt(samples)
        return TraceResult(estimate, sem)
    if samples > flat.shape[0]:
        raise ValueError(
            f"samples={samples!r} is not allowed for xtrace: at most {flat.shape[0]} "
            "(the number of parameters)"
        )
    sampler = stochtrace.sampler_normal(flat, num=samples)
    estimator = stochtrace.estimator_leave_one_out_mean_and_sem(
        stochtrace.leave_one_out_xtrace(), sampler
    )
    estimate, sem = estimator(matvec_flat, key)
    # matfree's SEM uses the population std (ddof=0); rescale to the unbiased one.
    return TraceResult(estimate, sem * jnp.sqrt(samples / (samples - 1)))


@compiled("loss_fn", "samples", "method")
def hessian_trace(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    samples: int,
    method: str = "hutchinson",
) -> TraceResult:
    """tr(H) of `loss_fn(params, *args)` in `params` with its standard error (see `trace_of`;
    `args` traced)."""
    return trace_of(
        hessian_matvec(bind_args(loss_fn, args), params),
        params,
        key=key,
        samples=samples,
        method=method,
    )
