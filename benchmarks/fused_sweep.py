"""A learning-rate x init-scale x seeds grid: the fused launcher against job-by-job runs.

The grid of issue 10: 4 learning rates x 4 init scales, `--seeds` seeds each (trainer.seeds,
vmapped inside a job), the default digits MLP with sharpness probes every 100 steps.
Fused: `lossbench.launchers.fused.run_fused` (what `hydra/launcher=fused` calls): one compiled
program for all jobs x seeds. Job by job: what Hydra's basic launcher does, one
`lossbench.run` per job, each compiling its own program (the persistent compile cache is off:
a fresh machine); `--basic-jobs` of them are timed and the 16-job wall time extrapolated.
Seed by seed: the basic launcher over `trainer.seed=0..S-1` with one seed per job (what a
sweep without vmapped seeds costs); `--single-jobs` timed, the 16 x S jobs extrapolated.
All in one process; a warm-up run first so library start-up is charged to none. Row-steps/s
(runs x steps over the training time less compile) compares the compute of the layouts.
Writes `benchmarks/fused_sweep.md` (or `--out`).

    python benchmarks/fused_sweep.py [--steps 2000] [--seeds 16] [--basic-jobs 8]
        [--single-jobs 4]
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
    parser.add_argument("--single-jobs", type=int, default=4)
    parser.add_argument(
        "--max-batch", type=int, default=None, help="hydra.launcher.max_batch: rows per call"
    )
    parser.add_argument("--note", default="", help="a line appended under the table")
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
        fused_s, fused_compile, summaries = timed(
            lambda: run_fused(configs, dirs, max_batch=args.max_batch, log=print)
        )
        basic = [
            timed(lambda i=i: lossbench.run(lossbench.compose(*jobs[i]), tmp / "basic" / str(i)))
            for i in range(args.basic_jobs)
        ]
        single = [
            timed(
                lambda i=i: lossbench.run(
                    lossbench.compose(*jobs[i % len(jobs)], "trainer.seeds=1", f"trainer.seed={i}"),
                    tmp / "single" / str(i),
                )
            )
            for i in range(args.single_jobs)
        ]
    statuses = [s["status"] if isinstance(s, dict) else "failed" for s in summaries]
    fused_train = fused_s - fused_compile
    fused_name = "fused (one program)"
    if args.max_batch:
        fused_name = f"fused (one program, calls of {args.max_batch} rows)"
    rows = [(fused_name, 1, fused_s, fused_compile, fused_train, n_runs)]
    for name, timings, seeds in (
        (f"job by job, trainer.seeds={args.seeds}", basic, args.seeds),
        ("seed by seed, trainer.seeds=1", single, 1),
    ):
        if timings:
            count = n_runs // seeds
            wall = sum(w for w, _, _ in timings) / len(timings)
            compile_s = sum(c for _, c, _ in timings) / len(timings)
            train = wall - compile_s
            rows.append(
                (
                    f"{name} (mean of {len(timings)}, x{count})",
                    count,
                    wall * count,
                    compile_s,
                    train,
                    seeds,
                )
            )
    header = (
        f"Default digits MLP (Adam), {args.steps} steps, sharpness probe every "
        f"{args.probe_every}, lr {LRS} x init.scale {SCALES} x {args.seeds} seeds = {n_runs} "
        f"runs; device {jax.devices()[0].device_kind} (x{len(jax.devices())}), one process, "
        "compile cache off. Compile: JAX's tracing + lowering + XLA time (monitoring events), per "
        "program. Row-steps/s: the runs one program trains x steps, over its wall time less "
        "compile (training, probes and writing files). Fused job statuses: "
        f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }."
    )
    lines = [
        "# A 4 x 4 x seeds grid: fused launcher vs job by job",
        "",
        header,
        "",
        "| layout | programs | grid wall s | compile s / program | row-steps/s | speed-up |",
        "|---|---|---|---|---|---|",
        *(
            f"| {n} | {p} | {w:.1f} | {c:.1f} | {r * args.steps / max(t, 1e-9):,.0f} "
            f"| {w / fused_s:.1f}x |"
            for n, p, w, c, t, r in rows
        ),
        "",
        f"Fused grid wall time {fused_s / 60:.2f} min (targets: >= 20x, <= 5 min on 2 CPU cores).",
        *([args.note, ""] if args.note else [""]),
    ]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
