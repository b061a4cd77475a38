"""What `probe.batch_size` buys and costs: the sharpness probe on a fixed subset of the data.

The default run of `probe_cost.py` (digits, Adam, batch 128, the sharpness preset every 100
steps), with the probe on the whole training set and on fixed subsets of it
(`probe.batch_size`, drawn once from the run's seed). Throughput: steps/s with the probe / with
`probe=off`, alternating in one process (median of within-round ratios). Accuracy two ways at
every probe of the run: against a cold 40-step Lanczos on the same subset (what the probe
estimates) and against a cold 40-step Lanczos on the whole training set (what a researcher
means by the sharpness). The second is biased upward: λmax is convex in the matrix, so the
mean over subsets of λmax(H_S) is at least λmax(H) (Jensen), and the gap grows as the subset
shrinks. Writes `benchmarks/probe_subset.md`.

    python benchmarks/probe_subset.py [--rounds 5] [--sizes 1024 512 256 128]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from probe_cost import TOLERANCE, default_cfg, default_run, timed_rounds  # noqa: E402

from lossbench import curvature as cv  # noqa: E402


def cold_lambda_max(problem, params, batch, seed: int) -> float:
    return float(
        cv.hessian_eigenvalues(
            problem.loss, params, batch, key=jax.random.PRNGKey(seed),
            lanczos_steps=40, top_k=1, bottom_k=0,
        ).lambda_max
    )  # fmt: skip


def accuracy(go, problem, batch) -> dict:
    """Relative errors at every probe: against its own batch, and against the whole set."""
    whole = jax.device_put(problem.data.train)
    own, bias = [], []
    for index, (params, record) in enumerate(go(collect=True)):
        params = jax.tree_util.tree_map(lambda a: a[0], params)
        found = float(np.asarray(record["lambda_max"]).reshape(-1)[0])
        on_batch = cold_lambda_max(problem, params, batch, 1000 + index)
        on_whole = cold_lambda_max(problem, params, whole, 2000 + index)
        own.append(abs(found - on_batch) / abs(on_batch))
        bias.append((found - on_whole) / abs(on_whole))
    return {"own": np.asarray(own), "bias": np.asarray(bias)}


def main(rounds: int, sizes: tuple[int, ...]) -> str:
    variants = {"off": None, "whole set": {}, **{f"{n}": {"batch_size": n} for n in sizes}}
    runs = {name: default_run("mlp", changes) for name, changes in variants.items()}
    load_start = os.getloadavg()
    wall, cpu = timed_rounds({name: run[0] for name, run in runs.items()}, rounds)
    load_end = os.getloadavg()
    cfg = default_cfg("mlp")
    n_train = runs["off"][1].data.n_train
    lines = [
        "# Probe cost against probe batch size",
        "",
        f"Device: {jax.devices()[0].device_kind}. The default run (`trainer.steps="
        f"{cfg.trainer.steps}`, batch {cfg.trainer.batch_size}, the sharpness preset every "
        f"{cfg.probe.every} steps, {n_train} training samples); {rounds} alternating rounds "
        "against `probe=off` in one process; a ratio is the median of the within-round ratios. "
        f"Load average (1 min) on the 2 cores: {load_start[0]:.1f} at the start, "
        f"{load_end[0]:.1f} at the end. 'own' is λmax against a cold 40-step Lanczos on the "
        "probe's own batch (the probe's target: within "
        f"{TOLERANCE:g}); 'vs whole set' is λmax against the same on the whole training set, "
        "signed (found - whole) / whole, over the run's probes.",
        "",
        "| probe.batch_size | wall ratio | CPU ratio | own: within 1e-3 | own: max error "
        "| vs whole set: mean | vs whole set: max abs | vs whole set: last probe |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in variants:
        if name == "off":
            continue
        errors = accuracy(*runs[name])
        own, bias = errors["own"], errors["bias"]
        wall_ratio = np.median(np.asarray(wall["off"]) / np.asarray(wall[name]))
        cpu_ratio = np.median(np.asarray(cpu["off"]) / np.asarray(cpu[name]))
        label = f"null ({n_train}, the default)" if name == "whole set" else name
        lines.append(
            f"| {label} | {wall_ratio:.3f} | {cpu_ratio:.3f} | {(own <= TOLERANCE).sum()}/"
            f"{own.size} | {own.max():.1e} | {bias.mean():+.3f} | {np.abs(bias).max():.3f} "
            f"| {bias[-1]:+.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (HERE / "probe_subset.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512, 256, 128])
    args = parser.parse_args()
    main(args.rounds, tuple(args.sizes))
