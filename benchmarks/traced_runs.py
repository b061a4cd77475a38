"""Runs that differ only in a float share their compiled programs (the persistent cache).

A plain run takes the non-zero floats of `optimizer.*`, `init.*` and `loss.*` as inputs of its
compiled program (`lossbench.runner.program_inputs`); before, they were constants closed into
it, so a run at another learning rate compiled again and JAX's persistent compilation cache
could not help. Measured here through the command line, in fresh processes (as the basic,
joblib, submitit and SLURM launchers run jobs), each layout with an empty cache of its own:

- a one-chunk run (`trainer.steps` = `probe.every`: the time to the first chunk's records),
  then the same run at another learning rate, the cache warm from the first;
- a 4-job basic-launcher sweep over the learning rate (`lossbench -m optimizer.lr=...`, the
  jobs one after the other in one process).

"before" is the same code with every value a constant (`program_inputs` patched to none).
The machine's load (`uptime`) is noted with every figure; ratios are the figures.

    python benchmarks/traced_runs.py [--steps 100] [--sweep-steps 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYOUTS = {
    "before (constants)": "from lossbench import runner; runner.program_inputs = lambda job: ()\n",
    "after (inputs)": "",
}
SWEEP_LRS = "0.001,0.002,0.005,0.01"


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def lossbench(patch: str, args: list[str], cache: Path) -> tuple[float, float]:
    """`lossbench ARGS` in a fresh process (with `patch` run first); wall and CPU seconds."""
    code = f"{patch}from lossbench.cli import main\nmain()\n"
    env = {**os.environ, "LOSSBENCH_CACHE_DIR": str(cache)}
    env.pop("LOSSBENCH_NO_CACHE", None)
    before = os.times()
    tic = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - tic
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100, help="the one-chunk run's steps")
    parser.add_argument("--sweep-steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=HERE / "traced_runs.md")
    args = parser.parse_args()
    common = ["trainer.progress=false", "trainer.save_params=false"]
    one_chunk = [*common, f"trainer.steps={args.steps}", f"probe.every={args.steps}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, patch in LAYOUTS.items():
            cache = tmp / name.split()[0] / "cache"
            runs = []
            for i, lr in enumerate(("0.001", "0.003")):
                run_dir = tmp / name.split()[0] / f"run{i}"
                start_load = load()
                wall, cpu = lossbench(
                    patch, [*one_chunk, f"optimizer.lr={lr}", f"hydra.run.dir={run_dir}"], cache
                )
                summary = json.loads((run_dir / "summary.json").read_text())
                runs.append((wall, cpu, summary["wall_time_s"], start_load, load()))
            sweep_dir = tmp / name.split()[0] / "sweep"
            sweep_load = load()
            sweep = lossbench(
                patch,
                [
                    "-m",
                    *common,
                    f"trainer.steps={args.sweep_steps}",
                    f"optimizer.lr={SWEEP_LRS}",
                    f"hydra.sweep.dir={sweep_dir}",
                ],
                tmp / name.split()[0] / "sweep-cache",
            )
            rows.append((name, runs, sweep, sweep_load, load()))
    lines = [
        "# Runs that differ only in a float: one program, loaded from the persistent cache",
        "",
        f"Default digits MLP (Adam), the command line in fresh processes, each layout with an "
        f"empty persistent cache of its own, {os.cpu_count()} CPU cores. One-chunk run: "
        f"`trainer.steps={args.steps} probe.every={args.steps}`, lr 0.001 then lr 0.003 "
        "(the second with the first's cache). "
        f"Sweep: `lossbench -m optimizer.lr={SWEEP_LRS} trainer.steps={args.sweep_steps}`, "
        "basic launcher (jobs one after the other in one process). Wall: the process, start "
        "to exit; run: the summary's wall_time_s (from the run's start: build, compile, "
        "train, files; no interpreter start-up); CPU: the process's user + system time. "
        "Load: 1-minute load average at the start / end of each measurement.",
        "",
        "| layout | 1st run wall s (run s, CPU s) | 2nd run, other lr: wall s (run s, CPU s) "
        "| 2nd / 1st wall | 2nd / 1st run | load | 4-job sweep wall s (CPU s) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs, sweep, sweep_load, end_load in rows:
        (w1, c1, r1, l1, _), (w2, c2, r2, _, l2) = runs
        lines.append(
            f"| {name} | {w1:.1f} ({r1:.1f}, {c1:.1f}) | {w2:.1f} ({r2:.1f}, {c2:.1f}) "
            f"| {w2 / w1:.2f} | {r2 / r1:.2f} | {l1} / {l2} | {sweep[0]:.1f} ({sweep[1]:.1f}) "
            f"| {sweep_load} / {end_load} |"
        )
    (_, before, before_sweep, *_), (_, after, after_sweep, *_) = rows
    lines += [
        "",
        f"Second run at another lr, after / before: wall {after[1][0] / before[1][0]:.2f}x, "
        f"run {after[1][2] / before[1][2]:.2f}x, CPU {after[1][1] / before[1][1]:.2f}x. "
        "4-job sweep, after / before: wall "
        f"{after_sweep[0] / before_sweep[0]:.2f}x, CPU {after_sweep[1] / before_sweep[1]:.2f}x.",
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
