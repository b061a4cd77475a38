"""How many warm-started Lanczos steps track the sharpness across a training run.

Trains the default study (digits MLP, Adam, batch 128, 2000 steps) with probes off, keeping
the parameters every 100 steps. At each of those points the reference is a cold 40-step
Lanczos λmax on the probe batch (the whole training set). Then the in-loop probe
(`make_probe`) is replayed along the same points in order, each probe starting from the
previous one's top eigenvector (the first one cold, with the preset's `lanczos_steps`, as in
a run): for each fixed warm budget (`probe.warm_steps`, no tolerance) and warm-start noise,
and for a budget of 8 with a stopping tolerance (`probe.warm_tolerance`: stop once a step
raises λmax by at most that fraction). The tables give, over the run, the largest relative
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
from lossbench.curvature.operators import loss_grad_and_hessian_matvec  # noqa: E402
from lossbench.probing import probe_batch  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402

BUDGETS = (1, 2, 3, 4, 5, 6, 8, 10)
NOISES = (0.01, 1.0)
TOLERANCES = (1e-3, 3e-4, 1e-4, 3e-5)
TOLERANCE_BUDGET = 8
TOLERANCE = 1e-3
SUBSETS = (128, 256, 512, 1024)


def with_warm_steps(probe_cfg, warm_steps):
    """The frozen probe config with `warm_steps` replaced (null: warm probes run
    `lanczos_steps`, like cold ones)."""
    return dataclasses.replace(probe_cfg, warm_steps=warm_steps)


def trajectory(overrides, steps, every):
    """Parameters (one seed) every `every` steps of the run, the problem and its probe batch."""
    cfg = freeze(compose("trainer.progress=false", "probe=off", *overrides))
    problem = build_problem(cfg)
    trainer = make_train(problem, cfg.trainer, None)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    state = trainer.init(seed_keys(0, 1))
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


def warm_steps_taken(problem, probe_cfg, points, batch) -> list[int]:
    """Lanczos steps of each warm probe along `points`: the probe's eigen-solve as
    `make_probe` runs it (same start vectors, budget and tolerance), reporting its steps."""
    noise = probe_module.SHORT_WARM_START_NOISE

    @jax.jit
    def solve(params, key, v0):
        _, _, matvec = loss_grad_and_hessian_matvec(lambda q: problem.loss(q, batch), params)
        eig_key = jax.random.split(key, 4)[0]  # as make_probe splits its key
        result = cv.eigenvalues_of(
            matvec, params, key=eig_key, lanczos_steps=probe_cfg.lanczos_steps, top_k=1,
            bottom_k=0, v0=v0, warm_start_noise=noise, max_steps=probe_cfg.warm_steps,
            top_tolerance=probe_cfg.warm_tolerance,
        )  # fmt: skip
        return result.steps, jax.tree_util.tree_map(lambda leaf: leaf[0], result.top_vectors)

    taken, vector = [], None
    for i, params in enumerate(points):
        if vector is None:  # the cold first probe
            _, vector = probe(probe_cfg, problem)(
                params, batch, jax.random.PRNGKey(100), zeros_like(params)
            )
            continue
        steps, vector = solve(params, jax.random.PRNGKey(100 + i), vector)
        taken.append(int(steps))
    return taken


def zeros_like(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def probe(probe_cfg, problem):
    return jax.jit(cv.make_probe(probe_cfg, problem.loss))


def replay(probe_cfg, problem, points, batch, reference):
    """λmax of the in-loop probe along `points`: (max relative error, max absolute error,
    within-tolerance flags)."""
    run = probe(probe_cfg, problem)
    vector = zeros_like(points[0])
    found = []
    for i, p in enumerate(points):
        record, vector = run(p, batch, jax.random.PRNGKey(100 + i), vector)
        found.append(float(record["lambda_max"]))
    error = np.abs(np.asarray(found) - reference)
    relative = error / np.abs(reference)
    return relative.max(), error.max(), relative <= TOLERANCE


def main(output: Path | None, steps: int = 2000, every: int = 100) -> str:
    cfg, problem, points = trajectory([], steps, every)
    batch = jax.device_put(probe_batch(cfg, problem))
    reference = np.array([cold_lambda_max(problem, p, batch, i) for i, p in enumerate(points)])
    preset = freeze(compose("probe=sharpness")).probe  # as shipped: its cold lanczos_steps
    sharpness = dataclasses.replace(preset, top_k=1, bottom_k=0, warm_tolerance=None)
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
        taken = warm_steps_taken(problem, adaptive, points, batch)
        result = replay(adaptive, problem, points, batch, reference)
        tolerance_rows.append((tolerance, *result, float(np.mean(taken)), max(taken)))

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
