"""Parallel local jobs with and without thread limits: `hydra/launcher=joblib` against
`hydra/launcher=joblib_jax` (each worker's XLA / OpenMP held to cores // jobs).

The same sweep (4 jobs, 2 at a time, the default digits MLP without probes) through both
launchers, alternating, wall time of the whole `lossbench -m` command. Writes
`benchmarks/joblib_threads.md`.

    python benchmarks/joblib_threads.py [--steps 3000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sweep(launcher: str, steps: int, out: Path) -> float:
    exe = Path(sys.executable).parent / "lossbench"
    args = [
        "-m",
        "trainer.seed=0,1,2,3",
        "probe=off",
        f"trainer.steps={steps}",
        "trainer.progress=false",
        "trainer.save_params=false",
        f"hydra/launcher={launcher}",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={out}",
    ]
    env = {**os.environ, "LOSSBENCH_NO_CACHE": "1"}
    tic = time.perf_counter()
    subprocess.run([str(exe), *args], env=env, capture_output=True, check=False)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"joblib": [], "joblib_jax": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for launcher in times:
                times[launcher].append(sweep(launcher, args.steps, Path(tmp) / f"{launcher}{r}"))
    best = {k: min(v) for k, v in times.items()}
    lines = [
        "# Parallel local jobs: thread limits (joblib_jax) against none (joblib)",
        "",
        f"4 jobs, n_jobs=2, default MLP on digits, {args.steps} steps, probes off, "
        f"{os.cpu_count()} cores, compile cache off; wall time of the whole sweep command "
        f"(process start, compile, train, files), best of {args.repeats} alternating runs.",
        "",
        "| launcher | wall s (best) | all runs s |",
        "|---|---|---|",
        *(
            f"| {k} | {best[k]:.1f} | {', '.join(f'{t:.1f}' for t in v)} |"
            for k, v in times.items()
        ),
        "",
        f"**joblib / joblib_jax wall time: {best['joblib'] / best['joblib_jax']:.2f}x**",
        "",
    ]
    text = "\n".join(lines)
    (HERE / "joblib_threads.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
