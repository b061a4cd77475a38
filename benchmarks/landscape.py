"""A 51×51 filter-normalised loss surface, compiled, against a Python loop over grid points.

The default MLP on digits (26k parameters), train loss and accuracy on the whole training set
(1438 examples) at every point. The loop is what loss-landscape (Li et al. 2018) does without
MPI: for each point, call one jitted function (the same metrics, the point's parameters formed
inside it) and read the result back. A subset of the loop is timed and extrapolated to the
whole grid, in the same process. Also the floor: one point's FLOPs (XLA's cost analysis of the
loop's jitted call) over this device's achieved rate on a large f32 GEMM, times the points; and
the compiled grid with the first layer's products made once (`landscape.first_layer`: exact,
fewer FLOPs per point). And the cost of `trainer.snapshot_every`: one snapshot of these
parameters. Writes `benchmarks/landscape.md`.

    python benchmarks/landscape.py [--grid 51] [--loop-points 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent

from lossbench import compose  # noqa: E402
from lossbench.landscape import (  # noqa: E402
    evaluate_grid,
    first_layer_split,
    grid_coords,
    random_directions,
)
from lossbench.landscape.directions import tree_combine  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.snapshots import save_snapshot  # noqa: E402


def setup():
    problem = build_problem(freeze(compose("trainer.progress=false")))
    params = problem.init_params(jax.random.key(0))
    directions = random_directions(jax.random.key(1), params, 2)
    data = jax.device_put(problem.data.train)

    def metrics(params, batch):  # train loss and accuracy on the whole training set
        return problem.metrics(params, batch)

    return problem, params, directions, data, metrics


@partial(jax.jit, static_argnames="metrics")
def metrics_at(metrics, origin, directions, coefficients, batch):
    """One grid point: the loop's jitted call."""
    return metrics(tree_combine(origin, directions, coefficients), batch)


def loop(metrics, params, directions, data, coords):
    """One jitted call per point, the point's parameters formed inside it."""
    out = np.empty((len(coords), 2))
    for i, c in enumerate(coords):
        values = metrics_at(metrics, params, directions, jnp.asarray(c, jnp.float32), data)
        out[i] = float(values["loss"]), float(values["accuracy"])
    return out


def host_loop(jitted_metrics, params, directions, data, coords):
    """loss-landscape's way: set the weights on the host, then call the jitted metrics."""
    origin = jax.tree_util.tree_map(np.asarray, params)
    d1, d2 = (jax.tree_util.tree_map(np.asarray, d) for d in directions)
    out = np.empty((len(coords), 2))
    for i, (a, b) in enumerate(coords):
        point = jax.tree_util.tree_map(lambda o, x, y, a=a, b=b: o + a * x + b * y, origin, d1, d2)
        values = jitted_metrics(point, data)
        out[i] = float(values["loss"]), float(values["accuracy"])
    return out


def cost(jitted, *args) -> tuple[float, float]:
    """XLA's count of the floating-point operations and transcendentals of one call."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
    return float(analysis["flops"]), float(analysis.get("transcendentals", 0.0))


def flops(jitted, *args) -> float:
    return cost(jitted, *args)[0]


def gemm_seconds(n: int = 2048):
    """A timer of one n×n×n f32 GEMM (compiled and warmed up): `time() -> seconds`."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()

    def timed() -> float:
        tic = time.perf_counter()
        matmul(a, b).block_until_ready()
        return time.perf_counter() - tic

    return timed, 2.0 * n**3


def tanh_seconds(shape=(1438, 256), times: int = 64):
    """A timer of `times` chained f32 tanh over an array of one point's hidden activations
    (in cache, one dispatch): `time() -> seconds`, and the elements it computes."""
    x = jax.random.normal(jax.random.key(2), shape, jnp.float32)
    chained = jax.jit(lambda x: jax.lax.fori_loop(0, times, lambda i, y: jnp.tanh(y), x))
    chained(x).block_until_ready()

    def timed() -> float:
        tic = time.perf_counter()
        chained(x).block_until_ready()
        return time.perf_counter() - tic

    return timed, float(times * np.prod(shape))


def split_point_flops(split, params, directions, data) -> float:
    """FLOPs of one point with the first layer's products given (the adds included)."""
    x = data["x"]
    base = x @ params["layers"][0]["kernel"]
    parts = tuple(x @ d["layers"][0]["kernel"] for d in directions)

    def point(c, origin, directions, base, parts, batch):
        point_params = tree_combine(origin, directions, c)
        pre = base + c[0] * parts[0] + c[1] * parts[1] + point_params["layers"][0]["bias"]
        return split.metrics_from_pre(point_params, pre, batch)

    c = jnp.zeros(2, jnp.float32)
    return flops(jax.jit(point), c, params, directions, base, parts, data)


def snapshot_cost(params, count: int = 50) -> tuple[float, int]:
    """Seconds per `save_snapshot` of `params` (one seed) and its file size in bytes."""
    with tempfile.TemporaryDirectory() as folder:
        tic = time.perf_counter()
        for step in range(count):
            path = save_snapshot(folder, step, params)
        return (time.perf_counter() - tic) / count, path.stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=51)
    parser.add_argument("--loop-points", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--out", type=Path, default=HERE / "landscape.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    problem, params, directions, data, metrics = setup()
    axes = (np.linspace(-1, 1, args.grid), np.linspace(-1, 1, args.grid))
    coords = grid_coords(*axes)
    n = len(coords)
    subset = coords[np.random.default_rng(0).choice(n, args.loop_points, replace=False)]
    jitted_metrics = jax.jit(metrics)

    def compiled(chunk):
        return lambda: evaluate_grid(metrics, params, directions, axes, data, chunk=chunk)

    split = first_layer_split(problem, params)
    methods = {f"compiled grid, chunk {c}": compiled(c) for c in args.chunks}
    for c in args.chunks:
        methods[f"compiled grid, first layer once, chunk {c}"] = lambda c=c: evaluate_grid(
            split, params, directions, axes, data, chunk=c
        )
    methods["Python loop, jitted call per point"] = lambda: loop(
        metrics, params, directions, data, subset
    )
    methods["Python loop, weights set on the host (loss-landscape)"] = lambda: host_loop(
        jitted_metrics, params, directions, data, subset
    )
    scale = {name: (n / args.loop_points if "loop" in name else 1.0) for name in methods}
    gemm_timer, gemm_flops = gemm_seconds()
    tanh_timer, tanh_count = tanh_seconds()
    rates = {"gemm": [], "tanh": []}
    first, times = {}, {name: [] for name in methods}
    for name, method in methods.items():  # compile (and, for the grid, the first call)
        tic = time.perf_counter()
        result = method()
        first[name] = (time.perf_counter() - tic) * scale[name]
        if name.startswith("compiled") and "reference" not in first:
            reference = result
            first["reference"] = 0.0
    for _ in range(args.repeats):  # alternate, so load on the machine hits all alike
        rates["gemm"].append(gemm_flops / gemm_timer())
        rates["tanh"].append(tanh_count / tanh_timer())
        for name, method in methods.items():
            tic = time.perf_counter()
            result = method()
            times[name].append((time.perf_counter() - tic) * scale[name])
    looped = loop(metrics, params, directions, data, subset)
    index = {tuple(c): i for i, c in enumerate(coords)}
    picked = [index[tuple(c)] for c in subset]
    np.testing.assert_allclose(looped[:, 0], reference["loss"].ravel()[picked], rtol=1e-4)
    fast = evaluate_grid(split, params, directions, axes, data)
    split_error = float(np.max(np.abs(fast["loss"] / reference["loss"] - 1)))
    np.testing.assert_allclose(fast["loss"], reference["loss"], rtol=1e-5)

    c0 = jnp.zeros(2, jnp.float32)
    point_flops, point_transcendentals = cost(metrics_at, metrics, params, directions, c0, data)
    cut_flops = split_point_flops(split, params, directions, data)
    rate, transcendental_rate = max(rates["gemm"]), max(rates["tanh"])  # a floor: the best
    floor = n * point_flops / rate
    transcendental_s = n * point_transcendentals / transcendental_rate
    snapshot_s, snapshot_bytes = snapshot_cost(params)

    warm = {name: float(np.median(t)) for name, t in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    loop_time = warm["Python loop, jitted call per point"]
    lines = [
        f"# Landscape: {args.grid}×{args.grid} filter-normalised surface vs a Python loop",
        "",
        f"Default MLP on digits ({problem.param_count} parameters), train loss and accuracy on "
        f"the whole training set ({problem.data.n_train} examples) at each of {n} points; "
        f"device: {jax.devices()[0].device_kind}. Compiled: `evaluate_grid` (lax.map over "
        "vmapped chunks of points). Loops: one jitted call per point, reading the result back; "
        f"{args.loop_points} random points timed and extrapolated to {n}. Median of "
        f"{args.repeats} alternating repeats in one process; 'first call' includes compiling. "
        "The loop's values match the grid's (rtol 1e-4); the first-layer-once grid matches the "
        f"plain grid to rtol 1e-5 (largest relative difference {split_error:.1e}). Targets: "
        ">= 10x faster than the loop, whole surface <= 10 s. Load average at the start "
        f"{load_start:.1f}, at the end {load:.1f} ({os.cpu_count()} CPUs).",
        "",
        f"**Floor.** One point's metrics: {point_flops / 1e6:.1f} MFLOP (XLA cost analysis of "
        f"the loop's jitted call; {cut_flops / 1e6:.1f} MFLOP with the first layer's products "
        f"made once). This device's f32 GEMM (2048³, best of one per repeat, in this process): "
        f"{rate / 1e9:.1f} GFLOP/s (median {np.median(rates['gemm']) / 1e9:.1f}). "
        f"Floor for {n} points: {n} × {point_flops / 1e6:.1f} MFLOP / {rate / 1e9:.1f} GFLOP/s "
        f"= **{floor:.2f} s** ({1e3 * floor / n:.2f} ms / point); with the first layer once "
        f"{n * cut_flops / rate:.2f} s. The loop takes {loop_time / floor:.2f}x the floor, so "
        f"10x the loop would need {10 * floor / loop_time:.1f}x the floor's speed "
        f"({10 * point_flops * n / loop_time / 1e9:.0f} GFLOP/s of this work); with the "
        f"first layer once, {10 * cut_flops * n / rate / loop_time:.1f}x the GEMM rate. "
        f"Besides the FLOPs, each point has {point_transcendentals / 1e3:.0f}k "
        "transcendentals (the tanh of both hidden layers, the softmax): at this device's "
        f"{transcendental_rate / 1e9:.2f} G tanh/s (a 1438×256 array, in cache, best of one "
        "per repeat) they add "
        f"{transcendental_s:.2f} s to the floor ({1e3 * transcendental_s / n:.2f} ms / point).",
        "",
        "| method | first call (s) | warm (s) | ms / point | this / floor "
        "| jitted-loop time / this |",
        "|---|---|---|---|---|---|",
        f"| floor: {n} points × FLOPs / GEMM rate | - | {floor:.3g} | {1e3 * floor / n:.3g} "
        f"| 1 | {loop_time / floor:.3g} |",
        f"| floor + transcendentals at the tanh rate | - | {floor + transcendental_s:.3g} "
        f"| {1e3 * (floor + transcendental_s) / n:.3g} | {(floor + transcendental_s) / floor:.3g} "
        f"| {loop_time / (floor + transcendental_s):.3g} |",
    ]
    for name in methods:
        is_loop = "loop" in name
        extrapolated = " (extrapolated)" if is_loop else ""
        cold = "-" if is_loop else f"{first[name]:.3g}"
        lines.append(
            f"| {name}{extrapolated} | {cold} | {warm[name]:.3g} | "
            f"{1e3 * warm[name] / n:.3g} | {warm[name] / floor:.3g} | "
            f"{loop_time / warm[name]:.3g} |"
        )
    best = min((name for name in methods if name.startswith("compiled")), key=warm.get)
    lines += [
        "",
        f"Best compiled: {best}, {loop_time / warm[best]:.3g}x the jitted loop, "
        f"{warm[best]:.3g} s for the surface.",
        "",
        f"Snapshots (`trainer.snapshot_every`): one of these parameters (one seed) takes "
        f"{1e3 * snapshot_s:.2f} ms to write and {snapshot_bytes / 1024:.0f} KiB; 300 "
        f"snapshots: {300 * snapshot_s:.2f} s and {300 * snapshot_bytes / 2**20:.1f} MiB.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
