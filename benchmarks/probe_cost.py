"""What curvature probes cost: kernel ratios and training throughput with probes on vs off.

Part 1 (`probe_cost_kernels.py`): HVP / gradient, Lanczos, trace and SLQ against their
matvec floor on the digits-sized MLP.
Part 2 (here): the default run as `lossbench` runs it (digits, Adam, batch 128, its
`trainer.steps` and `probe.every`, each chunk the runner's one program): a probe at step 0,
then chunks of `probe.every` steps each followed by a probe, against the same chunks with
`probe=off`, in one process, alternating. Variants of the sharpness probe (top-1, whole
training set): 20 Lanczos steps at every probe (before issue 14), the preset (30 cold
steps, then warm starts of at most 8 steps stopping once λmax moves by <= 1e-4), and the
`probe.ritz_tolerance` rule (a cold probe from the gradient, every run stopping on the top
Ritz pair's error estimate). All compute grad_curvature by forward over forward. Each
variant's λmax at every probe of the timed run is checked against a cold 40-step Lanczos
run on the same parameters.
Part 3: the pieces of a probe, each timed alone in one process (the cost model).
Writes `benchmarks/probe_cost.md`.

    python benchmarks/probe_cost.py [--rounds 5] [--models mlp cnn] [--no-kernels]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import probe_cost_kernels  # noqa: E402

from lossbench import compose  # noqa: E402
from lossbench import curvature as cv  # noqa: E402
from lossbench.curvature.operators import loss_grad_and_hessian_matvec  # noqa: E402
from lossbench.probing import fit_probe, probe_batch  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.runner import chunk_layout  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402

TOLERANCE = 1e-3  # λmax against a cold 40-step Lanczos run
PRESET = "gradient cold start, ritz_tolerance 1e-4"
RITZ = {
    "warm_steps": None,
    "warm_tolerance": None,
    "ritz_tolerance": 1e-4,
    "cold_start": "gradient",
}
# name: probe config changes from the shipped preset (None: probes off)
VARIANTS = {
    "off": None,
    "20 steps every probe (before issue 14)": {"lanczos_steps": 20, "warm_steps": None,
                                               "warm_tolerance": None},
    "preset: 30 cold, warm <= 8 steps, increment 1e-4": {},
    "ritz_tolerance 3e-4, gradient cold start": {**RITZ, "ritz_tolerance": 3e-4},
    PRESET: RITZ,
}  # fmt: skip


def default_cfg(model: str, probe: str = "sharpness"):
    return freeze(compose(f"model={model}", "trainer.progress=false", f"probe={probe}"))


def default_run(model: str, changes: dict | None):
    """`go(collect=False)`: the default run's steps and probes; with `collect`, the
    parameters and the probe record at every probe. Returns `(go, problem, probe batch)`."""
    cfg = default_cfg(model, "off" if changes is None else "sharpness")
    every = default_cfg(model).probe.every
    problem = build_problem(cfg)
    probe_fn = None
    if changes is not None:
        probe_cfg = fit_probe(dataclasses.replace(cfg.probe, **changes), problem)
        probe_fn = cv.make_probe(probe_cfg, problem.loss, problem.predict, problem.loss_on_outputs)
        cfg = dataclasses.replace(cfg, probe=probe_cfg)  # its batch: probe.batch_size
    trainer = make_train(problem, cfg.trainer, probe_fn)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    batch = jax.device_put(probe_batch(cfg, problem))
    layout = chunk_layout(every, cfg.trainer.log_every, last=True)  # the runner's one program

    def go(collect=False):
        state = trainer.init(seed_keys(0, 1))
        seen, out = [], None
        if probe_fn is not None:
            state, out = trainer.probe(state, batch)
            seen.append((state.params, out))
        for _ in range(cfg.trainer.steps // every):
            state, out = trainer.chunk(state, train, test, batch, layout)
            if collect and probe_fn is not None:
                seen.append((state.params, out["probe"]))
        return seen if collect else out

    return go, problem, batch


def probes_within(go, problem, batch) -> tuple[int, int, float, float, float]:
    """(probes with λmax within TOLERANCE of a cold 40-step run, probes, largest error,
    Lanczos steps of the first probe, mean Lanczos steps of the others)."""
    errors, steps = [], []
    for index, (params, record) in enumerate(go(collect=True)):
        params = jax.tree_util.tree_map(lambda a: a[0], params)
        reference = cv.hessian_eigenvalues(
            problem.loss, params, batch, key=jax.random.PRNGKey(1000 + index),
            lanczos_steps=40, top_k=1, bottom_k=0,
        ).lambda_max  # fmt: skip
        found = float(np.asarray(record["lambda_max"]).reshape(-1)[0])
        errors.append(abs(found - float(reference)) / abs(float(reference)))
        steps.append(float(np.asarray(record["lanczos_steps_run"]).reshape(-1)[0]))
    errors = np.asarray(errors)
    within = int((errors <= TOLERANCE).sum())
    return within, errors.size, float(errors.max()), steps[0], float(np.mean(steps[1:]))


def timed_rounds(calls: dict, rounds: int) -> tuple[dict, dict]:
    """{name: [wall s]}, {name: [CPU s]}: every call once per round, in turn."""
    jax.block_until_ready([call() for call in calls.values()])
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            tic, cpu_tic = time.perf_counter(), time.process_time()
            jax.block_until_ready(call())
            wall[name].append(time.perf_counter() - tic)
            cpu[name].append(time.process_time() - cpu_tic)
    return wall, cpu


def throughput_rows(rounds, models=("mlp",)):
    """(model, params, {variant: (wall ratio, CPU ratio, within, probes, max error, cold
    steps, mean warm steps)}): a ratio is the median over rounds of (time off / time with
    the variant) in the same round."""
    rows = []
    for model in models:
        calls, checks, params = {}, {}, 0
        for name, changes in VARIANTS.items():
            go, problem, batch = default_run(model, changes)
            calls[name], params = go, problem.param_count
            if changes is not None:
                checks[name] = (go, problem, batch)
        wall, cpu = timed_rounds(calls, rounds)
        results = {}
        for name in checks:
            wall_ratio = float(np.median(np.asarray(wall["off"]) / np.asarray(wall[name])))
            cpu_ratio = float(np.median(np.asarray(cpu["off"]) / np.asarray(cpu[name])))
            results[name] = (wall_ratio, cpu_ratio, *probes_within(*checks[name]))
        rows.append((model, params, results))
    return rows


def piece_rows(rounds: int, model: str = "mlp") -> list[tuple[str, float, float]]:
    """(piece, fastest wall ms, fastest CPU ms), each program alone, at the parameters after
    the first chunk: a chunk with probes off, the probe programs, and their parts."""
    cfg = default_cfg(model, "off")
    preset = default_cfg(model).probe
    problem = build_problem(cfg)
    trainer = make_train(problem, cfg.trainer, None)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    batch = jax.device_put(probe_batch(cfg, problem))
    layout = chunk_layout(preset.every, cfg.trainer.log_every, last=True)
    state, _ = trainer.chunk(trainer.init(seed_keys(0, 1)), train, test, batch, layout)
    params = jax.tree_util.tree_map(lambda a: a[0], state.params)
    unravel = ravel_pytree(params)[1]
    loss_at = lambda p: problem.loss(p, batch)  # noqa: E731
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def probe_of(**changes):
        return jax.jit(cv.make_probe(fit_probe(dataclasses.replace(preset, **changes), problem),
                                     problem.loss))  # fmt: skip

    warm = probe_of()(params, batch, jax.random.PRNGKey(0), zeros)[1]  # a converged vector

    @jax.jit
    def linearize_and_grad(p):
        loss, grad, _ = loss_grad_and_hessian_matvec(loss_at, p)
        return loss, grad

    @jax.jit
    def linearized_hvps(p, vectors):
        """Linearize, then one HVP per row of `vectors`, chained (each from the last)."""
        _, _, matvec = loss_grad_and_hessian_matvec(loss_at, p)
        step = lambda x, _: (ravel_pytree(matvec(unravel(x)))[0] * 1e-2,) * 2  # noqa: E731
        return jax.lax.scan(step, vectors[0], None, length=vectors.shape[0])[0]

    @jax.jit
    def linearized_pairs(p, vectors):
        """The same number of HVPs as `linearized_hvps`, two tangents per vmapped call."""
        _, _, matvec = loss_grad_and_hessian_matvec(loss_at, p)
        pair = jax.vmap(lambda x: ravel_pytree(matvec(unravel(x)))[0] * 1e-2)
        step = lambda x, _: (pair(x),) * 2  # noqa: E731
        return jax.lax.scan(step, vectors[:2], None, length=vectors.shape[0] // 2)[0]

    @jax.jit
    def curvature_by_hvp(p, u):
        _, _, matvec = loss_grad_and_hessian_matvec(loss_at, p)
        return jnp.vdot(ravel_pytree(u)[0], ravel_pytree(matvec(u))[0])

    @jax.jit
    def curvature_forward_over_forward(p, u):
        return jax.jvp(lambda q: jax.jvp(loss_at, (q,), (u,))[1], (p,), (u,))[1]

    n_hvp = 20
    vectors = jax.random.normal(jax.random.PRNGKey(1), (n_hvp, ravel_pytree(params)[0].size))
    cold_preset, cold_before = probe_of(**RITZ), probe_of()
    warm_fixed = {k: probe_of(warm_steps=k, warm_tolerance=None)
                  for k in (2, 4)}  # fmt: skip
    key = jax.random.PRNGKey(0)
    calls = {
        f"chunk of {preset.every} steps, probes off": lambda: trainer.chunk(
            state, train, test, batch, layout
        ),
        "linearize + loss + gradient (whole set)": lambda: linearize_and_grad(params),
        f"linearize + {n_hvp} chained HVPs": lambda: linearized_hvps(params, vectors),
        f"linearize + {n_hvp} HVPs as {n_hvp // 2} vmapped pairs": lambda: linearized_pairs(
            params, vectors
        ),
        "grad_curvature from the parameters: linearize + one HVP": lambda: curvature_by_hvp(
            params, warm
        ),
        "grad_curvature from the parameters: forward over forward": lambda: (
            curvature_forward_over_forward(params, warm)
        ),
        "probe: cold, 30 random steps (preset)": lambda: cold_before(params, batch, key, zeros),
        "probe: cold from the gradient, ritz 1e-4": lambda: cold_preset(params, batch, key, zeros),
        "probe: warm, 2 steps": lambda: warm_fixed[2](params, batch, key, warm),
        "probe: warm, 4 steps": lambda: warm_fixed[4](params, batch, key, warm),
        "probe: warm, ritz 1e-4": lambda: cold_preset(params, batch, key, warm),
    }
    wall, cpu = timed_rounds(calls, rounds)
    steps = {
        name: float(np.asarray(probe(params, batch, key, v)[0]["lanczos_steps_run"]))
        for name, probe, v in (("cold", cold_preset, zeros), ("warm", cold_preset, warm))
    }
    return [(name, min(wall[name]) * 1e3, min(cpu[name]) * 1e3) for name in calls], steps


def cost_model(pieces, results, chunks: int, every: int) -> list[str]:
    """Lines: the default run's ratio predicted from the pieces' CPU times, the ratio if
    every warm probe ran the fewest steps the ritz rule can stop at (2), and what 0.85
    would allow."""
    cpu = {name: ms for name, _, ms in pieces}
    pick = lambda start: next(ms for name, ms in cpu.items() if name.startswith(start))  # noqa: E731
    chunk, linearize = pick("chunk of"), pick("linearize + loss")
    hvp = (pick("linearize + 20 chained") - linearize) / 20
    curvature = pick("grad_curvature from the parameters: forward")
    *_, cold_steps, warm_steps = results[PRESET]
    training = chunks * chunk
    cold = linearize + cold_steps * hvp + curvature

    def ratio(warm_steps):
        return training / (training + cold + chunks * (linearize + warm_steps * hvp + curvature))

    allowed = training * (1 / 0.85 - 1) - cold
    per_probe = (allowed / chunks - linearize - curvature) / hvp
    return [
        "## Cost model (CPU ms from the pieces above)",
        "",
        f"{chunks} chunks of {every} steps: {training:.0f} ms of training. One linearized HVP "
        f"(a Lanczos step) {hvp:.2f} ms = {hvp / chunk:.3f} of a chunk; linearize + loss + "
        f"gradient {linearize:.2f} ms; grad_curvature by forward over forward {curvature:.2f} "
        f"ms. The ritz rule's cold probe ({cold_steps:.0f} steps) ~{cold:.0f} ms; a warm probe "
        f"({warm_steps:.2f} steps on average) ~{linearize + warm_steps * hvp + curvature:.1f} "
        f"ms. Predicted ratio {ratio(warm_steps):.3f}; with every warm probe at the rule's "
        f"fewest steps (2: a top Ritz pair and a gap) {ratio(2):.3f}; with warm probes of no "
        f"Lanczos step at all {ratio(0):.3f}. Ratio 0.85 allows {allowed / chunks:.1f} ms a "
        f"warm probe after this cold one: {per_probe:.2f} HVPs beside the gradient and "
        "grad_curvature.",
        "",
    ]


def main(rounds: int, kernels: bool = True, models=("mlp",)) -> str:
    load_before = os.getloadavg()
    if kernels:
        probe_cost_kernels.main(rounds=rounds, output=HERE / "probe_cost_kernels.md")
    load_start = os.getloadavg()
    rows = throughput_rows(rounds, models)
    load_mid = os.getloadavg()
    pieces, piece_steps = piece_rows(3 * rounds)
    load_end = os.getloadavg()
    cfg = default_cfg("mlp")
    steps, every = cfg.trainer.steps, cfg.probe.every
    names = [name for name in VARIANTS if name != "off"]
    lines = [
        "# Probe cost",
        "",
        f"Device: {jax.devices()[0].device_kind}. Ratios in one process; absolute times on a "
        "shared CPU are noise.",
        "",
        "## Training throughput of the default run: steps/s with the sharpness probe / without",
        "",
        f"The default run: `trainer.steps={steps}`, batch {cfg.trainer.batch_size}, a probe at "
        f"step 0 and every {every} steps ({steps // every + 1} probes, the first cold) on the "
        "whole training set (1437 samples), each chunk the runner's one program, against the "
        f"same run with `probe=off`; {rounds} alternating rounds, a ratio is the median of the "
        "within-round ratios of wall time (and of the process's CPU time, the steadier figure "
        "on a loaded machine). Accuracy: probes of the timed run whose λmax is within "
        f"{TOLERANCE:g} (relative) of a cold 40-step Lanczos run on the same parameters, and "
        "the largest error; Lanczos steps (HVPs) of the cold first probe and the mean of the "
        "warm ones (`lanczos_steps_run`). Target (mlp, the default run): ratio >= 0.85 with every "
        f"probe within {TOLERANCE:g}. Load average (1 min) on the 2 cores: {load_start[0]:.1f} "
        f"at the start of this part, {load_mid[0]:.1f} at its end.",
        "",
        "Before: issue 14's 0.49 (a quiet machine, a cold 20-step probe every 100 steps); the "
        "first row is that probe in this process. The rule's tolerance is a measured one: 3e-4 "
        "also keeps 1e-3 here but misses it against the dense Hessian of a small model "
        "(`tests/test_probes_in_loop.py`, top gap 5%), hence 1e-4. Not the preset: a warm probe "
        "of ~3 steps leaves `lambda_min` unresolved, and the README's stuck deep-linear run "
        "then reads `flat`, not `strict_saddle` (tests/test_regimes.py).",
        "",
        "| model | variant | wall ratio | CPU ratio | probes within 1e-3 | max error "
        "| cold steps | mean warm steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, params, results in rows:
        for name in names:
            wall, cpu, within, probes, worst, cold, warm = results[name]
            lines.append(
                f"| {model} ({params:,} params) | {name} | {wall:.3f} | {cpu:.3f} "
                f"| {within}/{probes} | {worst:.1e} | {cold:.0f} | {warm:.2f} |"
            )
    lines += [
        "",
        "## The pieces, each program alone (the cost model)",
        "",
        f"mlp, after the first {every} steps; fastest of {3 * rounds} interleaved rounds. The "
        f"ritz rule's probe took {piece_steps['cold']:.0f} Lanczos steps cold and "
        f"{piece_steps['warm']:.0f} warm here (its warm start: the converged top eigenvector). "
        f"Load average (1 min): {load_mid[0]:.1f} at the start, {load_end[0]:.1f} at the end.",
        "",
        "| program | fastest wall ms | fastest CPU ms |",
        "|---|---:|---:|",
        *[f"| {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in pieces],
        "",
        *cost_model(pieces, rows[0][2], steps // every, every),
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-kernels", action="store_true", help="skip probe_cost_kernels.py")
    parser.add_argument("--models", nargs="+", default=["mlp"])
    args = parser.parse_args()
    main(args.rounds, not args.no_kernels, tuple(args.models))
