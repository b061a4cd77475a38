"""Cost of curvature probes against their matvec floor, in one process, as ratios.

A probe's floor is its matvecs: Lanczos with m steps costs m Hessian-vector products. On the
digits-sized MLP (64 -> 128 -> 128 -> 10, tanh, 26,122 parameters, 1,437 random samples,
cross-entropy), jitted, `block_until_ready`, this measures:

- HVP / gradient, one jitted call each (`jax.jvp(jax.grad(f))`, Pearlmutter 1994, and
  `jax.linearize(jax.grad(f))` then apply), and the HVP's cost inside a chain of m products
  from one linearization (the *floor unit*: `floor(m)` = linearize once + m chained products,
  each normalised, in a `fori_loop`);
- Lanczos at m = 20, 40, 80 against `floor(m)`: lossbench's kernel (one Gram-Schmidt pass,
  a second only when needed) and, as "before", matfree's full-reorthogonalisation Arnoldi
  (two passes, always); `make_probe` with the sharpness preset (top-1) at the same m; the
  same kernel vmapped over 2 seeds against 2 seeds of the floor;
- Hutchinson trace with 600 samples against 600 x the floor unit (m = 80): matfree's
  estimator (one vmap over all samples, "before") and `lax.map` over batches (lossbench now),
  for several batch sizes;
- SLQ (4 samples x 30 steps) on matfree's engine and on lossbench's kernel, against its floor.

Kernels are timed round-robin so that a shared machine's changing load hits all of them alike;
a ratio is min / min over the rounds (the least disturbed repeats).
Run: `python benchmarks/probe_cost_kernels.py` (writes benchmarks/probe_cost_kernels.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matfree import stochtrace

from lossbench import curvature as cv
from lossbench.curvature.density import matfree_lanczos
from lossbench.curvature.lanczos import lanczos, ritz_values_and_vectors
from lossbench.curvature.operators import flat_matvec, probe_batch_size, rademacher_probe
from lossbench.schema import ProbeConfig, freeze

SIZES = (64, 128, 128, 10)
SAMPLES = 1437
STEPS = (20, 40, 80)
TRACE_SAMPLES = 600
TRACE_BATCHES = (1, 2, 4, 10, 40)
SLQ_SAMPLES, SLQ_STEPS = 4, 30
TARGETS = {"hvp": 2.0, "lanczos": 1.10, "trace": 1.05}


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


def seconds(function, args):
    """(wall seconds, process CPU seconds) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved_times(kernels: dict, rounds: int):
    """Time every kernel once per round, round-robin, after one warm-up (compile) call each:
    `({name: wall seconds per round}, {name: CPU seconds per round})`."""
    for function, args in kernels.values():
        jax.block_until_ready(function(*args))
    wall = {name: [] for name in kernels}
    cpu = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, (function, args) in kernels.items():
            w, c = seconds(function, args)
            wall[name].append(w)
            cpu[name].append(c)
    as_arrays = lambda d: {name: np.asarray(values) for name, values in d.items()}  # noqa: E731
    return as_arrays(wall), as_arrays(cpu)


def flat_hessian(p, b):
    """`(x -> H x, flat params)` from one linearization of the gradient."""
    matvec, flat, _ = flat_matvec(cv.hessian_matvec(lambda q: loss_fn(q, b), p), p)
    return matvec, flat


def build_kernels(params, batch, key):
    """{name: (jitted function, args)}."""
    n = ravel_pytree(params)[0].size
    start = jax.random.normal(jax.random.PRNGKey(3), (n,))
    loss_at = lambda b: lambda q: loss_fn(q, b)  # noqa: E731
    v = ravel_pytree(params)[1](start)

    def floor(m, seeds=1):
        """Linearize once, then m chained HVPs (normalised), as inside Lanczos."""

        def run(p, b, x):
            matvec, _ = flat_hessian(p, b)
            step = lambda _, u: (lambda w: w / jnp.linalg.norm(w))(matvec(u))  # noqa: E731
            return jax.lax.fori_loop(0, m, step, x)

        if seeds > 1:
            run = jax.vmap(run, in_axes=(0, None, 0))
            return jax.jit(run), (stack(params, seeds), batch, jnp.stack([start] * seeds))
        return jax.jit(run), (params, batch, start)

    def eigen(engine, m, seeds=1):
        def run(p, b, x):
            matvec, _ = flat_hessian(p, b)
            values, _, _ = ritz_values_and_vectors(engine(matvec, x, m))
            return values[-1]

        if seeds > 1:
            run = jax.vmap(run, in_axes=(0, None, 0))
            return jax.jit(run), (stack(params, seeds), batch, jnp.stack([start] * seeds))
        return jax.jit(run), (params, batch, start)

    def reorthogonalise_only(m):
        """m classical Gram-Schmidt passes against an orthonormal (m + 1, n) basis: what
        the kernel adds to the matvecs at every step (one pass; a second only when needed)."""
        basis = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(4), (n, m + 1)))[0].T

        def run(q, x):
            step = lambda _, w: (lambda u: u / jnp.linalg.norm(u))(w - (q @ w) @ q + x)  # noqa: E731
            return jax.lax.fori_loop(0, m, step, x)

        return jax.jit(run), (basis, start)

    def probe(m):
        cfg = freeze(dataclasses.replace(ProbeConfig(), lanczos_steps=m, top_k=1, bottom_k=0))
        return jax.jit(cv.make_probe(cfg, loss_fn)), (params, batch, key, None)

    def trace_before():
        def run(p, b, k):
            matvec, flat = flat_hessian(p, b)
            sampler = stochtrace.sampler_signs(flat, num=TRACE_SAMPLES)
            estimator = stochtrace.estimator_monte_carlo_mean_and_sem(
                stochtrace.monte_carlo_trace(), sampler
            )
            return estimator(matvec, k)

        return jax.jit(run), (params, batch, key)

    def trace_batched(batch_size):
        def run(p, b, k):
            matvec, flat = flat_hessian(p, b)

            def form(key):
                z = rademacher_probe(key, n, flat.dtype)
                return z @ matvec(z)

            keys = jax.random.split(k, TRACE_SAMPLES)
            return jnp.mean(jax.lax.map(form, keys, batch_size=batch_size))

        return jax.jit(run), (params, batch, key)

    def signs(packed):
        """The 600 probes of a trace alone: a word per sign (`jax.random.rademacher`, as
        matfree's sampler) or 32 signs per word (`rademacher_probe`)."""
        if packed:
            draw = lambda k: jax.vmap(lambda q: rademacher_probe(q, n))(  # noqa: E731
                jax.random.split(k, TRACE_SAMPLES)
            )
        else:
            draw = lambda k: jax.random.rademacher(k, (TRACE_SAMPLES, n))  # noqa: E731
        return jax.jit(lambda k: jnp.sum(draw(k), axis=1)), (key,)

    def trace_now():
        run = lambda p, b, k: cv.trace_of(  # noqa: E731
            cv.hessian_matvec(loss_at(b), p), p, key=k, samples=TRACE_SAMPLES
        )
        return jax.jit(run), (params, batch, key)

    def slq(engine):
        def run(p, b, k):
            matvec, flat = flat_hessian(p, b)
            probes = jax.vmap(lambda q: rademacher_probe(q, n, flat.dtype))(
                jax.random.split(k, SLQ_SAMPLES)
            )
            if engine is None:
                return cv.spectral_density_of(
                    cv.hessian_matvec(loss_at(b), p), p, key=k, lanczos_steps=SLQ_STEPS,
                    samples=SLQ_SAMPLES,
                )  # fmt: skip

            def one(z):
                decomposition = engine(matvec, z, SLQ_STEPS)
                return jnp.linalg.eigh(decomposition.tridiagonal)[0]

            return jax.lax.map(one, probes, batch_size=probe_batch_size(n, SLQ_SAMPLES, kind="slq"))

        return jax.jit(run), (params, batch, key)

    kernels = {
        "gradient": (jax.jit(jax.grad(loss_fn)), (params, batch)),
        "hvp_jvp": (jax.jit(lambda p, b, v: cv.hvp(loss_at(b), p, v)), (params, batch, v)),
        "hvp_linearized": (
            jax.jit(lambda p, b, v: cv.hessian_matvec(loss_at(b), p)(v)),
            (params, batch, v),
        ),
    }
    for m in STEPS:
        kernels[f"floor|{m}"] = floor(m)
        kernels[f"matfree|{m}"] = eigen(matfree_lanczos, m)
        kernels[f"lanczos|{m}"] = eigen(lanczos, m)
        kernels[f"probe|{m}"] = probe(m)
    kernels["reorth|80"] = reorthogonalise_only(80)
    kernels["floor2|40"] = floor(40, seeds=2)
    kernels["lanczos2|40"] = eigen(lanczos, 40, seeds=2)
    kernels["trace_before"] = trace_before()
    kernels["trace_now"] = trace_now()
    kernels["signs_word"] = signs(packed=False)
    kernels["signs_packed"] = signs(packed=True)
    for size in TRACE_BATCHES:
        kernels[f"trace_batch|{size}"] = trace_batched(size)
    kernels[f"floor|{SLQ_STEPS}"] = floor(SLQ_STEPS)
    kernels["slq_matfree"] = slq(matfree_lanczos)
    kernels["slq_lanczos"] = slq(lanczos)
    kernels["slq_now"] = slq(None)
    return kernels


def stack(tree, copies):
    return jax.tree_util.tree_map(lambda a: jnp.stack([a] * copies), tree)


def main(rounds: int = 9, output: Path | None = None) -> str:
    key = jax.random.PRNGKey(0)
    params = init_mlp(key)
    x = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, SIZES[0]))
    labels = jax.random.randint(jax.random.PRNGKey(2), (SAMPLES,), 0, SIZES[-1])
    n = ravel_pytree(params)[0].size
    load_start = os.getloadavg()
    t, c = interleaved_times(build_kernels(params, (x, labels), key), rounds)
    load_end = os.getloadavg()

    def ratios(numerator, denominator, scale=1.0):
        """(wall, CPU) min / min: on a loaded machine the fastest repeat is the least
        disturbed one; `scale` multiplies the denominator (m x a unit)."""
        return tuple(float(np.min(d[numerator]) / (scale * np.min(d[denominator]))) for d in (t, c))

    rows = []

    def row(label, name, value, of, target=None):
        """`value`: (wall ratio, CPU ratio); the verdict is on the wall ratio."""
        verdict = ""
        if target is not None:
            verdict = f"<= {target:.2f}: " + ("yes" if value[0] <= target else "**no**")
        rows.append((label, 1e3 * float(np.min(t[name])), *value, of, verdict))

    row("gradient", "gradient", (1.0, 1.0), "gradient")
    row("HVP, jvp of grad, one call", "hvp_jvp", ratios("hvp_jvp", "gradient"), "gradient")
    row("HVP, linearize + apply, one call", "hvp_linearized",
        ratios("hvp_linearized", "gradient"), "gradient")  # fmt: skip
    row("one linearized HVP in a chain of 80 (the floor unit)", "floor|80",
        ratios("floor|80", "gradient", 80), "gradient", TARGETS["hvp"])  # fmt: skip
    rows[-1] = (rows[-1][0], rows[-1][1] / 80, *rows[-1][2:])
    for m in STEPS:
        floor = f"floor|{m}"
        row(f"floor: linearize + {m} chained HVPs", floor, (1.0, 1.0), f"floor({m})")
        row(f"before: matfree Arnoldi (2 passes), m={m}", f"matfree|{m}",
            ratios(f"matfree|{m}", floor), f"floor({m})")  # fmt: skip
        row(f"lossbench Lanczos, m={m}", f"lanczos|{m}", ratios(f"lanczos|{m}", floor),
            f"floor({m})", TARGETS["lanczos"])  # fmt: skip
        row(f"make_probe (top-1, grad, loss), m={m}", f"probe|{m}",
            ratios(f"probe|{m}", floor), f"floor({m})", TARGETS["lanczos"])  # fmt: skip
        row(f"lossbench Lanczos, m={m}, by the issue's unit", f"lanczos|{m}",
            ratios(f"lanczos|{m}", "hvp_linearized", m),
            f"({m} x one-call linearized HVP)", TARGETS["lanczos"])  # fmt: skip
    row("its reorthogonalisation alone: 80 one-pass Gram-Schmidt against 81 rows",
        "reorth|80", ratios("reorth|80", "floor|80"), "floor(80)")  # fmt: skip
    row("lossbench Lanczos vmapped over 2 seeds, m=40", "lanczos2|40",
        ratios("lanczos2|40", "floor2|40"), "floor(40), 2 seeds", TARGETS["lanczos"])  # fmt: skip
    for label, name, target in (
        ("before: trace, matfree (one vmap of 600)", "trace_before", None),
        ("trace_of now (hutchinson, 600, batched)", "trace_now", TARGETS["trace"]),
        *[(f"trace, lax.map, batches of {s}", f"trace_batch|{s}", None) for s in TRACE_BATCHES],
        ("its 600 probes alone, a word per sign (jax.random.rademacher)", "signs_word", None),
        ("its 600 probes alone, 32 signs per word (rademacher_probe)", "signs_packed", None),
    ):
        row(label, name, ratios(name, "floor|80", TRACE_SAMPLES / 80), "600 x floor unit",
            target)  # fmt: skip
    slq_floor = f"floor|{SLQ_STEPS}"
    for label, name in (
        ("SLQ 4 x 30, matfree engine, batched", "slq_matfree"),
        ("SLQ 4 x 30, lossbench kernel, batched", "slq_lanczos"),
        ("spectral_density_of now (4 x 30)", "slq_now"),
    ):
        row(label, name, ratios(name, slq_floor, SLQ_SAMPLES), "4 x floor(30)")

    lines = [
        "# Probe cost against its floor",
        "",
        f"MLP {' -> '.join(map(str, SIZES))} (tanh), {n:,} parameters, {SAMPLES} random samples,"
        f" cross-entropy, float32, jitted. Device: {jax.devices()[0].device_kind}"
        f" ({platform.machine()}, {os.cpu_count()} cores). {rounds} interleaved rounds after"
        " compilation; a ratio is the ratio of the fastest repeats (min / min), of wall time"
        " and of the process's CPU time (all threads; the steadier figure when the machine is"
        " shared). floor(m) = linearize the gradient once + m chained HVPs in a `fori_loop`;"
        " the floor unit is floor(80)/80. Lanczos rows compute the top Ritz value."
        f" `probe_batch_size` for the 600-sample trace here: {probe_batch_size(n, TRACE_SAMPLES)}."
        f" Load average (1 min) on the machine: {load_start[0]:.1f} at the start,"
        f" {load_end[0]:.1f} at the end. Written by `benchmarks/probe_cost_kernels.py`.",
        "",
        "| kernel | fastest ms | wall ratio | CPU ratio | ratio of | target (wall) |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {name} | {ms:.2f} | {wall:.2f} | {cpu:.2f} | / {of} | {verdict} |"
        for name, ms, wall, cpu, of, verdict in rows
    ]
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("probe_cost_kernels.md")
    )
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.output)
