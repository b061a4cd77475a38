"""One curvature probe as a pure function, for use inside the compiled training loop.

`make_probe(cfg, loss_fn)` returns `probe(params, batch, key, v0) -> (record, v_next)`: no host
sync and no Python branching on traced values, so it runs under `jax.jit(jax.vmap(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lossbench.curvature.density import spectral_density_of
from lossbench.curvature.eigen import block_top_eigenvalues_of, eigenvalues_of
from lossbench.curvature.operators import (
    ggn_matvec,
    loss_grad_and_hessian_matvec,
    parameter_blocks,
    safe_divide,
)
from lossbench.curvature.trace import TRACE_METHODS, trace_of
from lossbench.errors import ConfigError

PyTree = Any
CURVATURES = ("hessian", "ggn")
# Norm of the random unit vector mixed into a warm start: with the full step budget, 1 (the
# random half keeps the bottom of the spectrum in view); with a short warm budget
# (`warm_steps`), 0.01: the start stays on the last top eigenvector, which moves little
# between probes (benchmarks/sharpness_warm_start.md).
WARM_START_NOISE = 1.0
SHORT_WARM_START_NOISE = 0.01
WARM_STEPS_ALLOWED = "null or an integer >= 1 (a warm probe runs min(warm_steps, lanczos_steps))"
WARM_TOLERANCE_ALLOWED = "null or a number in [0, 1)"
COLD_STARTS = ("random", "gradient")


def record_keys(cfg: Any, params_like: PyTree = None) -> list[str]:
    """The keys of a probe record for `cfg` (they become parquet columns); the per-layer keys
    need `params_like` (any pytree shaped like the parameters). A jitted record's dict comes
    back with its keys sorted; `jax.eval_shape(probe, ...)` gives keys, shapes and dtypes."""
    block_names = [name for name, _, _ in parameter_blocks(params_like)] if cfg.per_layer else []
    keys = ["loss", "grad_norm", "grad_curvature", "lambda_max", "lambda_min", "eig_ratio"]
    keys += ["lanczos_steps_run"]
    keys += [f"eig_top_{i}" for i in range(1, cfg.top_k + 1)]
    keys += [f"res_top_{i}" for i in range(1, cfg.top_k + 1)]
    keys += [f"grad_overlap_{i}" for i in range(1, cfg.top_k + 1)]
    keys += [f"eig_bottom_{i}" for i in range(1, cfg.bottom_k + 1)]
    keys += [f"res_bottom_{i}" for i in range(1, cfg.bottom_k + 1)]
    if cfg.trace_samples > 0:
        keys += ["trace", "trace_sem"]
    if cfg.density_samples > 0:
        keys += ["neg_mass", "density_nodes", "density_weights"]
    keys += [f"layer_lambda_max/{name}" for name in block_names]
    return keys


def warm_steps_of(cfg: Any) -> int | None:
    """Lanczos steps of a warm-started probe, `min(cfg.warm_steps, cfg.lanczos_steps)`; None
    when warm starts are off or `warm_steps` is null: then warm probes run `lanczos_steps`
    like cold ones."""
    warm_steps = getattr(cfg, "warm_steps", None)
    if not cfg.warm_start or warm_steps is None:
        return None
    return min(warm_steps, cfg.lanczos_steps)


def check_probe_config(cfg: Any, has_ggn_parts: bool) -> None:
    """Raise `ConfigError` naming the key, the value and what is allowed."""

    def fail(key, value, allowed):
        raise ConfigError(f"probe.{key}", value, allowed)

    if cfg.curvature not in CURVATURES:
        fail("curvature", cfg.curvature, f"one of {CURVATURES}")
    if cfg.curvature == "ggn" and not has_ggn_parts:
        fail("curvature", cfg.curvature, "'ggn' needs predict and loss_on_outputs")
    if cfg.trace_method not in TRACE_METHODS:
        fail("trace_method", cfg.trace_method, f"one of {TRACE_METHODS}")
    if cfg.lanczos_steps < 1:
        fail("lanczos_steps", cfg.lanczos_steps, ">= 1")
    for key in ("top_k", "bottom_k", "density_samples"):
        if getattr(cfg, key) < 0:
            fail(key, getattr(cfg, key), ">= 0")
    if cfg.trace_samples != 0 and cfg.trace_samples < 2:
        fail("trace_samples", cfg.trace_samples, "0 (off) or >= 2")
    if cfg.density_samples > 0 and cfg.density_steps < 1:
        fail("density_steps", cfg.density_steps, ">= 1")
    warm_steps = getattr(cfg, "warm_steps", None)
    if warm_steps is not None and (
        isinstance(warm_steps, bool) or not isinstance(warm_steps, int) or warm_steps < 1
    ):
        fail("warm_steps", warm_steps, WARM_STEPS_ALLOWED)
    for key in ("warm_tolerance", "ritz_tolerance"):
        tolerance = getattr(cfg, key, None)
        if tolerance is not None and (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, int | float)
            or not 0 <= tolerance < 1
        ):
            fail(key, tolerance, WARM_TOLERANCE_ALLOWED)
    if getattr(cfg, "cold_start", "random") not in COLD_STARTS:
        fail("cold_start", cfg.cold_start, f"one of {COLD_STARTS}")


def make_probe(
    cfg: Any,
    loss_fn: Callable[[PyTree, Any], jax.Array],
    predict: Callable[[PyTree, Any], PyTree] | None = None,
    loss_on_outputs: Callable[[PyTree, Any], jax.Array] | None = None,
) -> Callable:
    """Build `probe(params, batch, key, v0=None) -> (record, v_next)`.

    `cfg` has the fields of `lossbench.schema.ProbeConfig`. `loss_fn(params, batch)` is the
    training loss; for `cfg.curvature == "ggn"` the curvature is the Gauss-Newton matrix of
    `loss_on_outputs(predict(params, batch), batch)` (Schraudolph, 2002). `v0` warm-starts
    Lanczos when `cfg.warm_start` (a zero pytree means a cold start, so a scan carry can start
    at zeros); `v_next` is this probe's top eigenvector. With `cfg.warm_steps` set, a warm
    start runs at most that many steps (a cold one still `lanczos_steps`), from `v0` plus a
    small random part, and with `cfg.warm_tolerance` it stops sooner, once a step raised the
    top Ritz value by at most that fraction of it: sharpness tracking at a fraction of the
    cost; the bottom of the spectrum is then not resolved (read `lambda_min` as an upper
    bound only). `cfg.ritz_tolerance` stops any probe's run (cold or warm) once the top Ritz
    pair's error estimate `r² / (θ₁ - θ₂)` is at most that fraction of λmax (see
    `lanczos`), deciding on the step itself rather than on the next one's change; with
    `cfg.cold_start == "gradient"` a cold probe starts from the gradient, which lies mostly
    in the top eigenspace during training (Gur-Ari, Roberts & Dyer, 2018), instead of a
    random vector. `lanczos_steps_run` records the Lanczos steps (matvecs) taken. The
    record is a
    flat dict of arrays, keys as in `record_keys`: all scalars except `density_nodes` /
    `density_weights` (density_samples, density_steps). Ritz values and residuals are described in
    `eigenvalues_of` (residuals by the free Lanczos formula; an `eig_*_k` that the Krylov space
    cannot supply, e.g. k > number of parameters, is NaN); `grad_curvature` is uᵀMu and
    `grad_overlap_i` is |⟨u, v_i⟩| for u = g/‖g‖ (0 when g = 0); `eig_ratio` is λmin/λmax
    (0 when λmax = 0); `neg_mass` counts nodes below -1e-3 · max|node|.
    """
    check_probe_config(cfg, predict is not None and loss_on_outputs is not None)
    use_ggn = cfg.curvature == "ggn"
    warm_steps = warm_steps_of(cfg)
    warm_tolerance = getattr(cfg, "warm_tolerance", None) if cfg.warm_start else None
    ritz_tolerance = getattr(cfg, "ritz_tolerance", None)
    from_gradient = getattr(cfg, "cold_start", "random") == "gradient"
    short_warm = warm_steps is not None or warm_tolerance is not None
    noise = (
        SHORT_WARM_START_NOISE
        if short_warm or (cfg.warm_start and ritz_tolerance is not None)
        else WARM_START_NOISE
    )

    def probe(params, batch, key, v0=None):
        loss_at = lambda p: loss_fn(p, batch)
        if use_ggn:
            loss, grad = jax.value_and_grad(loss_at)(params)
            matvec = ggn_matvec(
                lambda p: predict(p, batch), lambda out: loss_on_outputs(out, batch), params
            )
        else:
            loss, grad, matvec = loss_grad_and_hessian_matvec(loss_at, params)
        eig_key, trace_key, density_key, block_key = jax.random.split(key, 4)

        grad_flat, unravel = ravel_pytree(grad)
        grad_norm = jnp.linalg.norm(grad_flat)
        direction = safe_divide(grad_flat, grad_norm)
        v0 = v0 if cfg.warm_start else None
        max_steps = top_tolerance = None
        if v0 is not None and short_warm:
            is_warm = jnp.any(ravel_pytree(v0)[0] != 0)  # traced: no branch, a shorter loop
            max_steps = jnp.where(is_warm, warm_steps or cfg.lanczos_steps, cfg.lanczos_steps)
            if warm_tolerance is not None:
                top_tolerance = jnp.where(is_warm, warm_tolerance, -1.0)
        if from_gradient and v0 is None:
            v0 = unravel(direction)
        elif from_gradient:  # a cold start (a zero v0) from the gradient
            warm = ravel_pytree(v0)[0]
            v0 = unravel(jnp.where(jnp.any(warm != 0), warm, direction))
        eig = eigenvalues_of(
            matvec,
            params,
            key=eig_key,
            lanczos_steps=cfg.lanczos_steps,
            top_k=max(cfg.top_k, 1),
            bottom_k=cfg.bottom_k,
            v0=v0,
            warm_start_noise=noise,
            max_steps=max_steps,
            top_tolerance=top_tolerance,
            ritz_tolerance=ritz_tolerance,
        )
        if use_ggn:
            grad_curvature = jnp.vdot(direction, ravel_pytree(matvec(unravel(direction)))[0])
        else:  # uᵀHu as a second directional derivative: forward over forward, no HVP

            def slope(p):
                return jax.jvp(loss_at, (p,), (unravel(direction),))[1]

            grad_curvature = jax.jvp(slope, (params,), (unravel(direction),))[1]
        top_flat = jax.vmap(lambda v: ravel_pytree(v)[0])(eig.top_vectors)

        record = {
            "loss": loss,
            "grad_norm": grad_norm,
            "grad_curvature": grad_curvature,
            "lambda_max": eig.lambda_max,
            "lambda_min": eig.lambda_min,
            "eig_ratio": safe_divide(eig.lambda_min, eig.lambda_max),
            "lanczos_steps_run": eig.steps.astype(eig.lambda_max.dtype),
        }
        for i in range(cfg.top_k):
            record[f"eig_top_{i + 1}"] = eig.top[i]
            record[f"res_top_{i + 1}"] = eig.residuals_top[i]
            record[f"grad_overlap_{i + 1}"] = jnp.abs(jnp.vdot(direction, top_flat[i]))
        for i in range(cfg.bottom_k):
            record[f"eig_bottom_{i + 1}"] = eig.bottom[i]
            record[f"res_bottom_{i + 1}"] = eig.residuals_bottom[i]
        if cfg.trace_samples > 0:
            trace = trace_of(
                matvec,
                params,
                key=trace_key,
                samples=cfg.trace_samples,
                method=cfg.trace_method,
            )
            record["trace"], record["trace_sem"] = trace.estimate, trace.sem
        if cfg.density_samples > 0:
            density = spectral_density_of(
                matvec,
                params,
                key=density_key,
                lanczos_steps=cfg.density_steps,
                samples=cfg.density_samples,
            )
            record["neg_mass"] = density.negative_mass()
            record["density_nodes"] = density.nodes
            record["density_weights"] = density.weights
        if cfg.per_layer:
            blocks = block_top_eigenvalues_of(
                matvec, params, key=block_key, lanczos_steps=cfg.lanczos_steps
            )
            record.update({f"layer_lambda_max/{name}": value for name, value in blocks.items()})
        v_next = jax.tree_util.tree_map(lambda leaf: leaf[0], eig.top_vectors)
        return record, v_next

    return probe
