"""How many warm-started Lanczos steps track the sharpness across a training run.

Trains the default study (digits MLP, Adam, batch 128, 2000 steps) with probes off, keeping
the parameters every 100 steps. At each of those points the reference is a cold 40-step
Lanczos λmax on the probe batch (the whole training set). Then the in-loop probe
(`make_probe`) is replayed along the same points in order, each probe starting from the
previous one's top eigenvector (the first one cold, with the preset's `lanczos_steps`, as in
a run): for each fixed warm budget (`probe.warm_steps`, no tolerance) and warm-start noise,
and for a budget of 8 with a stopping tolerance (`probe.warm_tolerance`: stop once a step
raises λmax by at most that fraction), and with the top Ritz pair's error estimate
(`probe.ritz_tolerance`, the preset's rule, its cold probe from the gradient) over several
training seeds. The tables give, over the run, the largest relative
and absolute error of λmax against the reference, how many probes were within 1e-3
(relative), and the mean number of warm Lanczos steps. Also: λmax on random subsets of the
training set against the full set, the error a `probe.batch_size` costs.
Run: `python benchmarks/sharpness_warm_start.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent

import lossbench.curvature.probe as probe_module  # noqa: E402
from lossbench import compose  # noqa: E402
from lossbench import curvature as cv  # noqa: E402
from lossbench.probing import probe_batch  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402

BUDGETS = (1, 2, 3, 4, 5, 6, 8, 10)
NOISES = (0.01, 1.0)
TOLERANCES = (1e-3, 3e-4, 1e-4, 3e-5)
TOLERANCE_BUDGET = 8
TOLERANCE = 1e-3
RITZ_TOLERANCES = (1e-3, 3e-4, 1e-4)
SEEDS = (0, 1, 2, 3)
# the rows before `ritz_tolerance`: a random cold start, increments or fixed budgets
BEFORE_RITZ = {"ritz_tolerance": None, "cold_start": "random", "warm_tolerance": None}
RITZ_RULE = {"warm_steps": None, "warm_tolerance": None, "cold_start": "gradient"}
SUBSETS = (128, 256, 512, 1024)


def with_warm_steps(probe_cfg, warm_steps):
    """The frozen probe config with `warm_steps` replaced (null: warm probes run
    `lanczos_steps`, like cold ones)."""
    return dataclasses.replace(probe_cfg, warm_steps=warm_steps)


def trajectory(overrides, steps, every, seed=0):
    """Parameters (one seed) every `every` steps of the run, the problem and its probe batch."""
    cfg = freeze(compose("trainer.progress=false", "probe=off", f"trainer.seed={seed}", *overrides))
    problem = build_problem(cfg)
    trainer = make_train(problem, cfg.trainer, None)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    state = trainer.init(seed_keys(seed, 1))
    points = [jax.tree_util.tree_map(lambda a: a[0], state.params)]
    for _ in range(steps // every):
        state, _ = trainer.chunk(state, train, test, {}, every)
        points.append(jax.tree_util.tree_map(lambda a: a[0], state.params))
    return cfg, problem, points


def cold_lambda_max(problem, params, batch, seed, steps=40):
    """The reference: λmax of a cold `steps`-step Lanczos run on `batch`."""
    result = cv.hessian_eigenvalues(
        problem.loss, params, batch, key=jax.random.PRNGKey(seed), lanczos_steps=steps,
        top_k=1, bottom_k=0,
    )  # fmt: skip
    return float(result.lambda_max)


def zeros_like(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def probe(probe_cfg, problem):
    return jax.jit(cv.make_probe(probe_cfg, problem.loss))


def replay(probe_cfg, problem, points, batch, reference, with_steps=False):
    """λmax of the in-loop probe along `points`: (max relative error, max absolute error,
    within-tolerance flags), and with `with_steps` the Lanczos steps of each probe."""
    run = probe(probe_cfg, problem)
    vector = zeros_like(points[0])
    found, steps = [], []
    for i, p in enumerate(points):
        record, vector = run(p, batch, jax.random.PRNGKey(100 + i), vector)
        found.append(float(record["lambda_max"]))
        steps.append(int(record["lanczos_steps_run"]))
    error = np.abs(np.asarray(found) - reference)
    relative = error / np.abs(reference)
    result = (relative.max(), error.max(), relative <= TOLERANCE)
    return (*result, steps) if with_steps else result


def ritz_rows(preset, steps, every):
    """(tolerance, max relative error, within flags, cold steps per seed, warm steps) of the
    preset's rule at each tolerance, over `SEEDS`: training seeds, each its own run."""
    runs = []
    for seed in SEEDS:
        _, problem, points = trajectory([], steps, every, seed)
        batch = jax.device_put(probe_batch(freeze(compose()), problem))
        reference = np.array([cold_lambda_max(problem, p, batch, i) for i, p in enumerate(points)])
        runs.append((problem, points, batch, reference))
    rows = []
    for tolerance in RITZ_TOLERANCES:
        cfg = dataclasses.replace(preset, ritz_tolerance=tolerance)
        worst, within, cold, warm = 0.0, [], [], []
        for problem, points, batch, reference in runs:
            relative, _, ok, taken = replay(cfg, problem, points, batch, reference, True)
            worst, cold, warm = max(worst, relative), [*cold, taken[0]], [*warm, *taken[1:]]
            within.extend(ok)
        rows.append((tolerance, worst, np.asarray(within), cold, warm))
    return rows


def main(output: Path | None, steps: int = 2000, every: int = 100) -> str:
    cfg, problem, points = trajectory([], steps, every)
    batch = jax.device_put(probe_batch(cfg, problem))
    reference = np.array([cold_lambda_max(problem, p, batch, i) for i, p in enumerate(points)])
    preset = freeze(compose("probe=sharpness")).probe  # as shipped: its cold lanczos_steps
    sharpness = dataclasses.replace(preset, top_k=1, bottom_k=0, **BEFORE_RITZ)
    rows = []
    for noise in NOISES:
        probe_module.SHORT_WARM_START_NOISE = noise
        for budget in BUDGETS:
            fixed = with_warm_steps(sharpness, budget)
            rows.append((noise, budget, *replay(fixed, problem, points, batch, reference)))
    probe_module.SHORT_WARM_START_NOISE = 0.01
    tolerance_rows = []
    for tolerance in TOLERANCES:
        adaptive = dataclasses.replace(
            sharpness, warm_steps=TOLERANCE_BUDGET, warm_tolerance=tolerance
        )
        *result, taken = replay(adaptive, problem, points, batch, reference, True)
        tolerance_rows.append((tolerance, *result, float(np.mean(taken[1:])), max(taken[1:])))
    ritz = ritz_rows(dataclasses.replace(preset, top_k=1, bottom_k=0, **RITZ_RULE), steps, every)

    train = problem.data.train
    n_train = next(iter(train.values())).shape[0]
    subset_rows = []
    for size in SUBSETS:
        errors = []
        for i, p in enumerate(points[1:]):
            rng = np.random.default_rng(i)
            idx = rng.choice(n_train, size, replace=False)
            subset = {k: v[idx] for k, v in train.items()}
            value = cold_lambda_max(problem, p, subset, i)
            errors.append(abs(value - reference[i + 1]) / abs(reference[i + 1]))
        subset_rows.append((size, float(np.median(errors)), float(np.max(errors))))

    lines = [
        "# Sharpness tracking with warm-started Lanczos",
        "",
        f"Default study (digits MLP, {problem.param_count:,} parameters, Adam, batch 128), "
        f"{steps} steps, a probe every {every} ({len(points)} probes, the first cold with "
        f"{sharpness.lanczos_steps} steps). Reference: cold 40-step Lanczos λmax on the whole "
        f"training set ({reference.min():.3g} to {reference.max():.3g} over the run). Written "
        "by `benchmarks/sharpness_warm_start.py`.",
        "",
        f"## `probe.ritz_tolerance`: stop once the top Ritz pair's error estimate r² / (θ₁ - θ₂) "
        "is at most the tolerance times λmax (`probe.ritz_tolerance`), cold probe from the "
        f"gradient, at most {preset.lanczos_steps} steps",
        "",
        f"Training seeds {SEEDS}, each its own run and reference, warm-start noise "
        f"{probe_module.SHORT_WARM_START_NOISE:g}.",
        "",
        f"| tolerance | max relative error | probes within {TOLERANCE:g} | cold steps (per "
        "seed) | mean warm steps | most warm steps |",
        "|---:|---:|---:|---|---:|---:|",
        *[
            f"| {tol:g} | {rel:.1e} | {ok.sum()}/{ok.size} | {', '.join(map(str, cold))} "
            f"| {np.mean(warm):.2f} | {max(warm)} |"
            for tol, rel, ok, cold, warm in ritz
        ],
        "",
        "The tables below: seed 0, the rules before `ritz_tolerance` (a random cold start).",
        "",
        f"## A warm budget of at most {TOLERANCE_BUDGET} steps, stopping once a step raises "
        "λmax by at most the tolerance (`probe.warm_tolerance`; warm-start noise 0.01)",
        "",
        "| tolerance | max relative error | max absolute error "
        f"| probes within {TOLERANCE:g} | mean warm steps | most warm steps |",
        "|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {tol:g} | {rel:.1e} | {ab:.1e} | {ok.sum()}/{ok.size} | {mean:.2f} | {most} |"
            for tol, rel, ab, ok, mean, most in tolerance_rows
        ],
        "",
        "## A fixed warm budget (`probe.warm_steps`, no tolerance)",
        "",
        "| warm-start noise | warm steps | max relative error | max absolute error "
        f"| probes within {TOLERANCE:g} |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {noise:g} | {budget} | {rel:.1e} | {ab:.1e} | {ok.sum()}/{ok.size} |"
        for noise, budget, rel, ab, ok in rows
    ]
    lines += [
        "",
        "## λmax on a random subset of the training set against the whole set (cold, 40 steps)",
        "",
        f"Over the {len(points) - 1} probes after the first; the whole set has {n_train} samples.",
        "",
        "| probe.batch_size | median relative error | max relative error |",
        "|---:|---:|---:|",
        *[f"| {size} | {median:.3f} | {worst:.3f} |" for size, median, worst in subset_rows],
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "sharpness_warm_start.md")
    parser.add_argument("--steps", type=int, default=2000)
    arguments = parser.parse_args()
    main(arguments.output, arguments.steps)
