"""What curvature probes cost: kernel ratios and training throughput with probes on vs off.

Part 1 (`probe_cost_kernels.py`): HVP / gradient, Lanczos, trace and SLQ against their
matvec floor on the digits-sized MLP.
Part 2 (here): the default run as `lossbench` runs it (digits, Adam, batch 128,
`trainer.steps=1000`): a probe at step 0, then ten chunks of 100 steps each followed by a
probe, against the same ten chunks with `probe=off`, in one process, alternating, on the MLP
(26k parameters, the default) and the CNN. Variants of the sharpness probe (top-1, whole
training set): 20 Lanczos steps at every probe (before issue 14), a fixed warm budget
(`probe.warm_steps`, no tolerance) and the preset as shipped (cold first probe, then warm
starts that stop once λmax settles, `probe.warm_tolerance`). Each variant's λmax at every
probe of the timed run is checked against a cold 40-step Lanczos run on the same
parameters. Writes `benchmarks/probe_cost.md`.

    python benchmarks/probe_cost.py [--rounds 7] [--models mlp cnn] [--no-kernels]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import probe_cost_kernels  # noqa: E402

from lossbench import compose  # noqa: E402
from lossbench import curvature as cv  # noqa: E402
from lossbench.probing import fit_probe, probe_batch  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402

STEPS, EVERY = 1000, 100  # the default run: trainer.steps, probe.every
TOLERANCE = 1e-3  # λmax against a cold 40-step Lanczos run
# name: probe config changes from the shipped preset (None: probes off)
VARIANTS = {
    "off": None,
    "20 steps every probe (before)": {"lanczos_steps": 20, "warm_steps": None,
                                      "warm_tolerance": None},
    "warm 6 steps, fixed": {"warm_steps": 6, "warm_tolerance": None},
    "warm 3 steps, fixed": {"warm_steps": 3, "warm_tolerance": None},
    "preset (warm <= 8 steps, tolerance 1e-4)": {},
}  # fmt: skip


def default_run(model: str, changes: dict | None):
    """`go(collect=False)`: the default run's steps and probes; with `collect`, the
    parameters and λmax at every probe. Returns `(go, problem, probe batch)`."""
    overrides = [f"model={model}", "trainer.progress=false"]
    cfg = freeze(compose(*overrides, "probe=off" if changes is None else "probe=sharpness"))
    problem = build_problem(cfg)
    probe_fn = None
    if changes is not None:
        probe_cfg = fit_probe(dataclasses.replace(cfg.probe, **changes), problem)
        probe_fn = cv.make_probe(probe_cfg, problem.loss, problem.predict, problem.loss_on_outputs)
    trainer = make_train(problem, cfg.trainer, probe_fn)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    batch = jax.device_put(probe_batch(cfg, problem))

    def go(collect=False):
        state = trainer.init(seed_keys(0, 1))
        seen, out = [], None
        if probe_fn is not None:
            state, out = trainer.probe(state, batch)
            seen.append((state.params, out))
        for _ in range(STEPS // EVERY):
            state, out = trainer.chunk(state, train, test, batch, EVERY)
            if collect and probe_fn is not None:
                seen.append((state.params, out["probe"]))
        return seen if collect else out

    return go, problem, batch


def probes_within(go, problem, batch) -> tuple[int, int, float]:
    """(probes with λmax within TOLERANCE of a cold 40-step run, probes, largest error)."""
    errors = []
    for index, (params, record) in enumerate(go(collect=True)):
        params = jax.tree_util.tree_map(lambda a: a[0], params)
        reference = cv.hessian_eigenvalues(
            problem.loss, params, batch, key=jax.random.PRNGKey(1000 + index),
            lanczos_steps=40, top_k=1, bottom_k=0,
        ).lambda_max  # fmt: skip
        found = float(np.asarray(record["lambda_max"]).reshape(-1)[0])
        errors.append(abs(found - float(reference)) / abs(float(reference)))
    errors = np.asarray(errors)
    return int((errors <= TOLERANCE).sum()), errors.size, float(errors.max())


def throughput_rows(rounds, models=("mlp", "cnn")):
    """(model, params, {variant: (wall ratio, CPU ratio, within, probes, max error)}): a ratio
    is the median over rounds of (time off / time with the variant) in the same round."""
    rows = []
    for model in models:
        calls, checks, params = {}, {}, 0
        for name, changes in VARIANTS.items():
            go, problem, batch = default_run(model, changes)
            calls[name], params = go, problem.param_count
            if changes is not None:
                checks[name] = (go, problem, batch)
        jax.block_until_ready([call() for call in calls.values()])
        wall = {name: [] for name in calls}
        cpu = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                tic, cpu_tic = time.perf_counter(), time.process_time()
                jax.block_until_ready(call())
                wall[name].append(time.perf_counter() - tic)
                cpu[name].append(time.process_time() - cpu_tic)
        results = {}
        for name in checks:
            wall_ratio = float(np.median(np.asarray(wall["off"]) / np.asarray(wall[name])))
            cpu_ratio = float(np.median(np.asarray(cpu["off"]) / np.asarray(cpu[name])))
            results[name] = (wall_ratio, cpu_ratio, *probes_within(*checks[name]))
        rows.append((model, params, results))
    return rows


def main(rounds: int, kernels: bool = True, models=("mlp", "cnn")) -> str:
    load_before = os.getloadavg()
    if kernels:
        probe_cost_kernels.main(rounds=rounds, output=HERE / "probe_cost_kernels.md")
    load_start = os.getloadavg()
    rows = throughput_rows(rounds, models)
    load_end = os.getloadavg()
    names = [name for name in VARIANTS if name != "off"]
    lines = [
        "# Probe cost",
        "",
        f"Device: {jax.devices()[0].device_kind}. Ratios in one process; absolute times on a "
        "shared CPU are noise.",
        "",
        "## Training throughput of the default run: steps/s with the sharpness probe / without",
        "",
        f"`trainer.steps={STEPS}`, batch 128, a probe at step 0 and every {EVERY} steps (11 "
        "probes, the first cold) on the whole training set (1437 samples), against the same "
        f"run with `probe=off`; {rounds} alternating rounds, a ratio is the median of the "
        "within-round ratios of wall time (and of the process's CPU time, the steadier figure "
        "on a loaded machine). Accuracy: probes of the timed run whose λmax is within "
        f"{TOLERANCE:g} (relative) of a cold 40-step Lanczos run on the same parameters, and "
        "the largest error. Target for the default run (mlp, the preset): ratio >= 0.85 with "
        f"every probe within {TOLERANCE:g}. Load average (1 min) on the 2 cores: "
        f"{load_start[0]:.1f} at the start of this part, {load_end[0]:.1f} at its end.",
        "",
        "| model | params | variant | wall ratio | CPU ratio | probes within 1e-3 | max error |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for model, params, results in rows:
        for name in names:
            wall, cpu, within, probes, worst = results[name]
            lines.append(
                f"| {model} on digits | {params} | {name} | {wall:.3f} | {cpu:.3f} "
                f"| {within}/{probes} | {worst:.1e} |"
            )
    lines += [
        "",
        "## Kernels against their floor",
        "",
        "See `probe_cost_kernels.md` (`python benchmarks/probe_cost_kernels.py`, or this script"
        " without `--no-kernels`).",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "probe_cost.md").write_text(text)
    print(text, f"load before the kernels: {load_before}")
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-kernels", action="store_true", help="skip probe_cost_kernels.py")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    args = parser.parse_args()
    main(args.rounds, not args.no_kernels, tuple(args.models))
