"""What curvature probes cost: kernel ratios and training throughput with probes on vs off.

Part 1 (`probe_cost_kernels.py`): HVP time / gradient time (target <= 2.5) and probe time /
(Lanczos steps x one jitted HVP) (target <= 1.15) on the digits-sized MLP.
Part 2 (here): training throughput of lossbench's compiled loop with `probe=sharpness` every
100 steps vs `probe=off`, on the default digits MLP (26k parameters) and the CNN, in one
process, alternating. Writes `benchmarks/probe_cost.md`.

    python benchmarks/probe_cost.py [--rounds 15] [--steps 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import probe_cost_kernels  # noqa: E402
from conftest import compose_config  # noqa: E402

from lossbench.problem import build_problem  # noqa: E402
from lossbench.runner import make_probe_fn, probe_batch  # noqa: E402
from lossbench.schema import freeze  # noqa: E402
from lossbench.train import make_train, seed_keys  # noqa: E402


def training_call(overrides, steps):
    """A closure running `steps` steps in chunks of probe.every (or trainer.chunk)."""
    cfg = freeze(compose_config(["trainer.progress=false", *overrides]))
    problem = build_problem(cfg)
    trainer = make_train(problem, cfg.trainer, make_probe_fn(cfg, problem))
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


def throughput_rows(steps, rounds):
    rows = []
    for model in ("mlp", "cnn"):
        base = [f"model={model}", "trainer.batch_size=128", "trainer.chunk=100"]
        with_probes, params = training_call([*base, "probe=sharpness", "probe.every=100"], steps)
        without, _ = training_call([*base, "probe=off"], steps)
        jax.block_until_ready((with_probes(), without()))
        ratios = []
        for _ in range(rounds):
            tic = time.perf_counter()
            jax.block_until_ready(with_probes())
            t_on = time.perf_counter() - tic
            tic = time.perf_counter()
            jax.block_until_ready(without())
            t_off = time.perf_counter() - tic
            ratios.append(t_off / t_on)
        rows.append((model, params, float(np.median(ratios))))
    return rows


def main(rounds: int, steps: int) -> str:
    kernels = probe_cost_kernels.main(rounds=rounds, output=HERE / "probe_cost_kernels.md")
    rows = throughput_rows(steps, max(3, rounds // 3))
    lines = [
        "# Probe cost",
        "",
        f"Device: {jax.devices()[0].device_kind}. Ratios in one process; absolute times on a "
        "shared CPU are noise.",
        "",
        "## Training throughput: probes (sharpness, 20 Lanczos steps, full training set) every "
        "100 steps vs off",
        "",
        "| model | params | steps/s with probes / steps/s without |",
        "|---|---|---|",
        *[f"| {model} on digits | {params} | {ratio:.3f} |" for model, params, ratio in rows],
        "",
        kernels.replace("# Probe cost against its floor", "## Kernels against their floor"),
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "probe_cost.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    main(args.rounds, args.steps)
