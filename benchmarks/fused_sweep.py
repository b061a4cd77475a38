"""A learning-rate x init-scale x seeds grid: the fused launcher against job-by-job runs.

The grid of issue 10: 4 learning rates x 4 init scales, `--seeds` seeds each (trainer.seeds,
vmapped inside a job), the default digits MLP with sharpness probes every 100 steps.
Fused: `lossbench.launchers.fused.run_fused` (what `hydra/launcher=fused` calls): one compiled
program for all jobs x seeds. Job by job: what Hydra's basic launcher does, one
`lossbench.run` per job, each compiling its own program (the persistent compile cache is off:
a fresh machine); `--basic-jobs` of them are timed and the 16-job wall time extrapolated.
Both in one process; a warm-up run first so library start-up is charged to neither. Writes
`benchmarks/fused_sweep.md` (or `--out`).

    python benchmarks/fused_sweep.py [--steps 2000] [--seeds 16] [--basic-jobs 8]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LOSSBENCH_NO_CACHE", "1")

import jax  # noqa: E402
from sweep import compile_seconds  # noqa: E402  (benchmarks/sweep.py: JAX's compile events)

import lossbench  # noqa: E402
from lossbench.launchers.fused import run_fused  # noqa: E402

HERE = Path(__file__).resolve().parent
LRS = (0.0003, 0.001, 0.003, 0.01)
SCALES = (0.5, 1.0, 2.0, 4.0)


def grid(steps: int, seeds: int, probe_every: int) -> list[list[str]]:
    base = [
        f"trainer.steps={steps}",
        f"trainer.seeds={seeds}",
        f"probe.every={probe_every}",
        "trainer.progress=false",
        "trainer.save_params=false",
        "trainer.checkpoint_every=0",
    ]
    return [
        [*base, f"optimizer.lr={lr}", f"init.scale={scale}"]
        for lr, scale in itertools.product(LRS, SCALES)
    ]


def timed(fn) -> tuple[float, float, object]:
    """(wall s, compile s, result) of `fn()`."""
    before, tic = compile_seconds(), time.perf_counter()
    result = fn()
    return time.perf_counter() - tic, compile_seconds() - before, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--basic-jobs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "fused_sweep.md")
    args = parser.parse_args()
    jobs = grid(args.steps, args.seeds, args.probe_every)
    n_runs = len(jobs) * args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = [o for o in jobs[0] if not o.startswith(("trainer.steps=", "trainer.seeds="))]
        lossbench.run(lossbench.compose(*warm, "trainer.steps=20", "trainer.seeds=1"), tmp / "w")
        configs = [lossbench.compose(*job) for job in jobs]
        dirs = [tmp / "fused" / str(i) for i in range(len(jobs))]
        fused_s, fused_compile, summaries = timed(lambda: run_fused(configs, dirs, log=print))
        basic = [
            timed(lambda i=i: lossbench.run(lossbench.compose(*jobs[i]), tmp / "basic" / str(i)))
            for i in range(args.basic_jobs)
        ]
    statuses = [s["status"] if isinstance(s, dict) else "failed" for s in summaries]
    basic_job_s = sum(w for w, _, _ in basic) / len(basic)
    basic_s = basic_job_s * len(jobs)
    fused_train = summaries[0]["train_time_s"] - fused_compile
    basic_train = sum(s["train_time_s"] - c for _, c, s in basic) / len(basic)
    rows = [
        ("fused (one program)", fused_s, fused_compile, args.steps / max(fused_train, 1e-9)),
        (
            f"job by job (mean of {len(basic)}, x{len(jobs)})",
            basic_s,
            sum(c for _, c, _ in basic) / len(basic),
            args.steps / max(basic_train, 1e-9),
        ),
    ]
    lines = [
        "# A 4 x 4 x seeds grid: fused launcher vs job by job",
        "",
        f"Default digits MLP (Adam), {args.steps} steps, sharpness probe every "
        f"{args.probe_every}, lr {LRS} x init.scale {SCALES} x {args.seeds} seeds = {n_runs} "
        f"runs; device {jax.default_backend()} ({len(jax.devices())}), one process, compile "
        "cache off. Compile: JAX's tracing + lowering + XLA time (monitoring events). Steps/s: "
        "a program's steps over its training time less compile (fused: every job at once; job "
        f"by job: one job of {args.seeds} vmapped seeds). Fused job statuses: "
        f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }.",
        "",
        "| layout | wall s | compile s | steps/s per program |",
        "|---|---|---|---|",
        *(f"| {n} | {w:.1f} | {c:.1f} | {r:,.1f} |" for n, w, c, r in rows),
        "",
        f"**Speed-up (job by job / fused): {basic_s / fused_s:.1f}x**; "
        f"fused grid wall time {fused_s / 60:.1f} min (targets: >= 20x, <= 5 min on 2 CPU cores)",
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
