"""Cost of curvature probes against their floor, in one process, as ratios.

A probe's floor is its matvecs: Lanczos with m steps costs m Hessian-vector products, and one
HVP (forward-over-reverse, Pearlmutter 1994) costs about 2-3 gradients. On the digits-sized
MLP (64 -> 128 -> 128 -> 10, tanh, 26,122 parameters, 1,437 random samples, cross-entropy)
this measures, jitted, median of repeats, `block_until_ready`:

- HVP / gradient, for `jax.jvp(jax.grad(f))` and for a pre-linearized gradient
  (`jax.linearize(jax.grad(f))`, which reuses the forward pass across products);
- probe / (m x one jitted HVP) for `make_probe` with the default probe config (m = 20) and
  m = 80, and for the bare Lanczos eigen-solve with both kinds of HVP.

Run: `python benchmarks/probe_cost_kernels.py` (writes benchmarks/probe_cost_kernels.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lossbench import curvature as cv
from lossbench.schema import ProbeConfig, freeze

SIZES = (64, 128, 128, 10)
SAMPLES = 1437
HVP_TARGET = 2.5
PROBE_TARGET = 1.15


def init_mlp(key, sizes=SIZES):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        key, sub = jax.random.split(key)
        kernel = jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in)
        layers.append({"kernel": kernel, "bias": jnp.zeros(fan_out)})
    return {"layers": layers}


def predict(params, x):
    for index, layer in enumerate(params["layers"]):
        x = x @ layer["kernel"] + layer["bias"]
        if index < len(params["layers"]) - 1:
            x = jnp.tanh(x)
    return x


def loss_fn(params, batch):
    x, labels = batch
    log_probs = jax.nn.log_softmax(predict(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def median_seconds(function, *args, repeats):
    """Median wall time of `function(*args)` after one warm-up (compile) call."""
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 11, output: Path | None = None) -> str:
    key = jax.random.PRNGKey(0)
    params = init_mlp(key)
    x = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, SIZES[0]))
    labels = jax.random.randint(jax.random.PRNGKey(2), (SAMPLES,), 0, SIZES[-1])
    batch = (x, labels)
    v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(3), a.shape), params)
    n = sum(a.size for a in jax.tree_util.tree_leaves(params))

    grad = jax.jit(jax.grad(loss_fn))
    hvp = jax.jit(lambda p, b, v: cv.hvp(lambda q: loss_fn(q, b), p, v))
    linearized = jax.jit(lambda p, b, v: cv.hessian_matvec(lambda q: loss_fn(q, b), p)(v))

    def repeated_hvps(linearize, m):
        """m chained HVPs at fixed params, as inside Lanczos (forward pass hoisted or not)."""

        def run(p, b, v):
            matvec = cv.hessian_matvec(lambda q: loss_fn(q, b), p, linearize=linearize)

            def step(_, u):
                w = matvec(u)
                norm = jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree_util.tree_leaves(w)))
                return jax.tree_util.tree_map(lambda a: a / norm, w)

            return jax.lax.fori_loop(0, m, step, v)

        return jax.jit(run)

    def eigen_solve(linearize, m):
        def run(p, b, k):
            matvec = cv.hessian_matvec(lambda q: loss_fn(q, b), p, linearize=linearize)
            return cv.eigenvalues_of(matvec, p, key=k, lanczos_steps=m, top_k=1, bottom_k=0)

        return jax.jit(run)

    t_grad = median_seconds(grad, params, batch, repeats=repeats)
    t_hvp = median_seconds(hvp, params, batch, v, repeats=repeats)
    t_lin_single = median_seconds(linearized, params, batch, v, repeats=repeats)
    rows = [
        ("gradient (jit)", t_grad, "1.00", ""),
        ("HVP, jvp of grad (jit)", t_hvp, f"{t_hvp / t_grad:.2f}", f"HVP/grad <= {HVP_TARGET}"),
        ("HVP, linearize + apply, one product (jit)", t_lin_single, f"{t_lin_single / t_grad:.2f}", ""),
    ]
    for m in (20, 80):
        for linearize in (False, True):
            t = median_seconds(repeated_hvps(linearize, m), params, batch, v, repeats=repeats)
            label = "linearized once" if linearize else "jvp of grad each"
            rows.append(
                (f"{m} chained HVPs in fori_loop, {label}", t, f"{t / (m * t_hvp):.2f}", "/ (m x HVP)")
            )
    default = ProbeConfig()
    for m in (default.lanczos_steps, 80):
        for linearize in (False, True):
            t = median_seconds(eigen_solve(linearize, m), params, batch, key, repeats=repeats)
            label = "linearized HVP" if linearize else "jvp-of-grad HVP"
            rows.append(
                (f"Lanczos eigen-solve m={m}, {label}", t, f"{t / (m * t_hvp):.2f}", "/ (m x HVP)")
            )
        cfg = freeze(dataclasses.replace(default, lanczos_steps=m))
        probe = jax.jit(cv.make_probe(cfg, loss_fn))
        t = median_seconds(probe, params, batch, key, None, repeats=repeats)
        rows.append(
            (
                f"make_probe, default config, m={m}",
                t,
                f"{t / (m * t_hvp):.2f}",
                f"probe/(m x HVP) <= {PROBE_TARGET}",
            )
        )

    lines = [
        "# Probe cost against its floor",
        "",
        f"MLP {' -> '.join(map(str, SIZES))} (tanh), {n:,} parameters, {SAMPLES} random samples,"
        f" cross-entropy, float32. Device: {jax.devices()[0].device_kind}"
        f" ({platform.machine()}, {jax.device_count()} device). Median of {repeats} runs after"
        " compilation. Ratios are the figures; absolute times on a shared 2-core CPU are noise.",
        "",
        "| kernel | median ms | ratio | ratio of / target |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {name} | {1e3 * t:.2f} | {ratio} | {note} |" for name, t, ratio, note in rows]
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("probe_cost_kernels.md")
    )
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.output)
