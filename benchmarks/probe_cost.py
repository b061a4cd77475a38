"""What curvature probes cost: kernel ratios and training throughput with probes on vs off.

Part 1 (`probe_cost_kernels.py`): HVP / gradient, Lanczos, trace and SLQ against their
matvec floor on the digits-sized MLP.
Part 2 (here): training throughput of lossbench's compiled loop with the sharpness probe
(top-1, whole training set) every 100 steps vs `probe=off`, on the default digits MLP (26k
parameters) and the CNN, in one process, alternating: cold 20-step Lanczos at every probe
(before) and warm-started from the last probe's top eigenvector with `warm_steps` steps
(`benchmarks/sharpness_warm_start.md` measures how many keep λmax within 1e-3), on the whole
training set. Writes `benchmarks/probe_cost.md`.

    python benchmarks/probe_cost.py [--rounds 9] [--steps 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import probe_cost_kernels  # noqa: E402
from sharpness_warm_start import with_warm_steps  # noqa: E402

from lossbench import compose  # noqa: E402
from lossbench.curvature import make_probe  # noqa: E402
from lossbench.probing import probe_batch  # noqa: E402
from lossbench.problem import build_problem  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402

WARM_STEPS = 6  # the smallest budget within 1e-3 at every probe (sharpness_warm_start.md)
VARIANTS = {
    "off": ["probe=off"],
    "cold 20 steps (before)": ["probe=sharpness"],
    f"warm {WARM_STEPS} steps": ["probe=sharpness"],
}


def training_call(overrides, steps, warm_steps=None):
    """A closure running `steps` steps in chunks of probe.every (or trainer.chunk)."""
    cfg = freeze(compose("trainer.progress=false", *overrides))
    problem = build_problem(cfg)
    probe_fn = None
    if cfg.probe.every:
        probe_cfg = with_warm_steps(cfg.probe, warm_steps)
        probe_fn = make_probe(probe_cfg, problem.loss, problem.predict, problem.loss_on_outputs)
    trainer = make_train(problem, cfg.trainer, probe_fn)
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    batch = jax.device_put(probe_batch(cfg, problem))
    length = cfg.probe.every or cfg.trainer.chunk

    def go():
        state = trainer.init(seed_keys(0, 1))
        out = None
        for _ in range(steps // length):
            state, out = trainer.chunk(state, train, test, batch, length)
        return out

    return go, problem.param_count


def throughput_rows(steps, rounds, models=("mlp", "cnn")):
    """(model, params, {variant: median over rounds of steps/s with it / steps/s off})."""
    rows = []
    for model in models:
        base = [f"model={model}", "trainer.batch_size=128", "trainer.chunk=100", "probe.every=100"]
        calls = {}
        for name, overrides in VARIANTS.items():
            warm = WARM_STEPS if name.startswith("warm") else None
            calls[name], params = training_call([*base, *overrides], steps, warm)
        jax.block_until_ready([call() for call in calls.values()])
        times = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                tic = time.perf_counter()
                jax.block_until_ready(call())
                times[name].append(time.perf_counter() - tic)
        off = np.asarray(times["off"])
        ratios = {name: float(np.median(off / np.asarray(t))) for name, t in times.items()}
        rows.append((model, params, ratios))
    return rows


def main(rounds: int, steps: int, kernels: bool = True, models=("mlp", "cnn")) -> str:
    if kernels:
        kernels = probe_cost_kernels.main(rounds=rounds, output=HERE / "probe_cost_kernels.md")
    else:
        kernels = (HERE / "probe_cost_kernels.md").read_text()
    rows = throughput_rows(steps, max(3, rounds // 2), models)
    names = [name for name in VARIANTS if name != "off"]
    lines = [
        "# Probe cost",
        "",
        f"Device: {jax.devices()[0].device_kind}. Ratios in one process; absolute times on a "
        "shared CPU are noise.",
        "",
        "## Training throughput: sharpness probe every 100 steps, steps/s with it / without",
        "",
        f"{steps} steps per call, batch 128; the probe's data is the whole training set (1437 "
        "samples) unless a `probe.batch_size` is given. Target for the default run (mlp): "
        ">= 0.85.",
        "",
        "| model | params | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
        *[
            f"| {model} on digits | {params} | "
            + " | ".join(f"{ratios[name]:.3f}" for name in names)
            + " |"
            for model, params, ratios in rows
        ],
        "",
        kernels.replace("# Probe cost against its floor", "## Kernels against their floor"),
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "probe_cost.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--no-kernels", action="store_true", help="reuse probe_cost_kernels.md")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    args = parser.parse_args()
    main(args.rounds, args.steps, not args.no_kernels, tuple(args.models))
