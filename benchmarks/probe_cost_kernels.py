"""Cost of curvature probes against their floor, in one process, as ratios.

A probe's floor is its matvecs: Lanczos with m steps costs m Hessian-vector products, and one
HVP (forward-over-reverse, Pearlmutter 1994) costs about 2-3 gradients. On the digits-sized
MLP (64 -> 128 -> 128 -> 10, tanh, 26,122 parameters, 1,437 random samples, cross-entropy)
this measures, jitted, median of repeats, `block_until_ready`:

- HVP / gradient, for `jax.jvp(jax.grad(f))` and for a pre-linearized gradient
  (`jax.linearize(jax.grad(f))`, which reuses the forward pass across products);
- probe / (m x one jitted HVP) for `make_probe` with the default probe config (m = 20) and
  m = 80, and for the bare Lanczos eigen-solve with both kinds of HVP;
- what the Lanczos loop costs besides its matvecs (matfree's full-reorthogonalisation
  Arnoldi with a nearly free matvec), and, for comparison only, a hand-written row-major
  Lanczos with the same HVP.

Kernels are timed round-robin so that a shared machine's changing load hits all of them alike.
Run: `python benchmarks/probe_cost_kernels.py` (writes benchmarks/probe_cost_kernels.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lossbench import curvature as cv
from lossbench.curvature.operators import flat_matvec
from lossbench.schema import ProbeConfig, freeze

SIZES = (64, 128, 128, 10)
SAMPLES = 1437
HVP_TARGET = 2.5
PROBE_TARGET = 1.15
STEPS = (20, 80)  # the default probe's lanczos_steps, and the tests'


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
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def interleaved_medians(kernels: dict, rounds: int) -> dict[str, list[float]]:
    """Time every kernel once per round, round-robin, after one warm-up (compile) call each.

    On a shared machine, load changes over seconds; interleaving exposes every kernel to the
    same load, and ratios are taken within a round before the median over rounds.
    """
    for function, args in kernels.values():
        jax.block_until_ready(function(*args))
    times = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, (function, args) in kernels.items():
            times[name].append(seconds(function, args))
    return {name: np.asarray(values) for name, values in times.items()}


def build_kernels(params, batch, key, v):
    """{name: (jitted function, args)} for every measured kernel; `m` in the name's suffix."""
    loss_at = lambda b: lambda q: loss_fn(q, b)

    def chained_hvps(linearize, m):
        """m chained HVPs at fixed params, as inside Lanczos."""

        def run(p, b, v):
            matvec = cv.hessian_matvec(loss_at(b), p, linearize=linearize)

            def step(_, u):
                w = matvec(u)
                norm = jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree_util.tree_leaves(w)))
                return jax.tree_util.tree_map(lambda a: a / norm, w)

            return jax.lax.fori_loop(0, m, step, v)

        return jax.jit(run), (params, batch, v)

    def eigen_solve(linearize, m):
        def run(p, b, k):
            matvec = cv.hessian_matvec(loss_at(b), p, linearize=linearize)
            return cv.eigenvalues_of(matvec, p, key=k, lanczos_steps=m, top_k=1, bottom_k=0)

        return jax.jit(run), (params, batch, key)

    def probe(m):
        cfg = freeze(dataclasses.replace(ProbeConfig(), lanczos_steps=m))
        return jax.jit(cv.make_probe(cfg, loss_fn)), (params, batch, key, None)

    def lanczos_alone(m):
        """matfree's full-reorthogonalisation loop with a nearly free matvec (a scaling)."""
        scale = ravel_pytree(v)[0]
        return jax.jit(lambda d: cv.lanczos(lambda w: d * w, d, m)), (scale,)

    def row_major_lanczos(m):
        """Reference only (not lossbench's engine): the same HVP in a hand-written Lanczos that
        keeps the basis row-major (m, n) and reorthogonalises with one full classical
        Gram-Schmidt pass after the three-term recurrence (Paige 1972; Parlett 1998)."""

        def run(p, b, start):
            matvec, flat, _ = flat_matvec(cv.hessian_matvec(loss_at(b), p), p)
            basis = jnp.zeros((m, flat.size), flat.dtype)

            def step(i, carry):
                basis, alphas, betas, q, previous, beta = carry
                basis = basis.at[i].set(q)
                w = matvec(q)
                alpha = jnp.vdot(q, w)
                w = w - alpha * q - beta * previous
                w = w - basis.T @ (basis @ w)
                norm = jnp.linalg.norm(w)
                carry = (basis, alphas.at[i].set(alpha), betas.at[i].set(norm), w / norm, q, norm)
                return carry

            zeros = jnp.zeros(m, flat.dtype)
            q0 = start / jnp.linalg.norm(start)
            init = (basis, zeros, zeros, q0, jnp.zeros_like(q0), jnp.zeros((), flat.dtype))
            return jax.lax.fori_loop(0, m, step, init)[1:3]

        return jax.jit(run), (params, batch, ravel_pytree(v)[0])

    kernels = {
        "gradient": (jax.jit(jax.grad(loss_fn)), (params, batch)),
        "HVP, jvp of grad": (jax.jit(lambda p, b, v: cv.hvp(loss_at(b), p, v)), (params, batch, v)),
        "HVP, linearize + apply": (
            jax.jit(lambda p, b, v: cv.hessian_matvec(loss_at(b), p)(v)),
            (params, batch, v),
        ),
    }
    for m in STEPS:
        kernels[f"{m} chained HVPs in a fori_loop, jvp of grad each|{m}"] = chained_hvps(False, m)
        kernels[f"{m} chained HVPs in a fori_loop, gradient linearized once|{m}"] = chained_hvps(
            True, m
        )
        kernels[f"Lanczos top eigenpair, jvp of grad each|{m}"] = eigen_solve(False, m)
        kernels[f"Lanczos top eigenpair, gradient linearized once|{m}"] = eigen_solve(True, m)
        kernels[f"make_probe, default config but lanczos_steps|{m}"] = probe(m)
        kernels[f"Lanczos loop alone (matvec ~ free), per step|{m}"] = lanczos_alone(m)
        kernels[f"reference: row-major Lanczos sketch, one CGS pass|{m}"] = row_major_lanczos(m)
    return kernels


def main(rounds: int = 15, output: Path | None = None) -> str:
    key = jax.random.PRNGKey(0)
    params = init_mlp(key)
    x = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, SIZES[0]))
    labels = jax.random.randint(jax.random.PRNGKey(2), (SAMPLES,), 0, SIZES[-1])
    batch = (x, labels)
    v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(3), a.shape), params)
    n = ravel_pytree(params)[0].size

    times = interleaved_medians(build_kernels(params, batch, key, v), rounds)
    grad, hvp = times["gradient"], times["HVP, jvp of grad"]
    rows = []
    for name, t in times.items():
        label, _, m = name.partition("|")
        if not m:
            ratio, unit = np.median(t / grad), "/ gradient"
            target = f"<= {HVP_TARGET}" if label == "HVP, jvp of grad" else ""
            limit = HVP_TARGET
            per = t
        elif label.startswith("Lanczos loop alone"):
            per = t / int(m)
            ratio, unit, target, limit = np.median(per / hvp), "/ HVP", "", None
            label = f"{label}, m={m}"
        else:
            per = t
            ratio, unit = np.median(t / (int(m) * hvp)), "/ (m x HVP)"
            target = f"<= {PROBE_TARGET}" if label.startswith("make_probe") else ""
            limit = PROBE_TARGET
            label = f"{label}={m}" if label.startswith("make_probe") else f"{label}, m={m}"
        if target:
            target += ": yes" if ratio <= limit else ": **no**"
        rows.append((label, float(np.median(per)), float(ratio), unit, target))

    lines = [
        "# Probe cost against its floor",
        "",
        f"MLP {' -> '.join(map(str, SIZES))} (tanh), {n:,} parameters, {SAMPLES} random samples,"
        f" cross-entropy, float32, jitted. Device: {jax.devices()[0].device_kind}"
        f" ({platform.machine()}). {rounds} interleaved rounds after compilation; a ratio is the"
        " median over rounds of the within-round ratio. Ratios are the figures; absolute times"
        " on a shared 2-core CPU are noise. Written by `benchmarks/probe_cost_kernels.py`.",
        "",
        "| kernel | median ms | ratio | ratio of | target |",
        "|---|---:|---:|---|---|",
    ]
    lines += [
        f"| {name} | {1e3 * t:.2f} | {ratio:.2f} | {unit} | {target} |"
        for name, t, ratio, unit, target in rows
    ]
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("probe_cost_kernels.md")
    )
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.output)
