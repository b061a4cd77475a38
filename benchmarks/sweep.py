"""Seeds as one vmapped program against the same seeds run one by one.

`trainer.seeds=16` (one run, the 16 seeds vmapped in one compiled chunk) against 16 sequential
single-seed runs (`trainer.seed=0..15`), both through the public API
(`lossbench.run(lossbench.compose(...), dir)`) in one process, on the default digits MLP.
Reports the throughput ratio (seed-steps per second of wall time, target >= 4x), the
steps/s of each job once compiled, and the compile time
separately (JAX's compile events). Writes `benchmarks/sweep.md`.

The persistent compilation cache is off (each run compiles in this process, as a sweep of
separate jobs does on a fresh machine); a warm-up run of each shape first, so that library
start-up (data loading, tracing machinery) is not charged to either side.

    python benchmarks/sweep.py [--steps 500] [--seeds 16] [--probe-every 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LOSSBENCH_NO_CACHE", "1")

import jax  # noqa: E402

import lossbench  # noqa: E402

HERE = Path(__file__).resolve().parent


def overrides(steps: int, probe_every: int) -> list[str]:
    probe = ["probe=off"] if probe_every == 0 else [f"probe.every={probe_every}"]
    return [
        f"trainer.steps={steps}",
        "trainer.progress=false",
        "trainer.save_params=false",
        "trainer.checkpoint_every=0",
        *probe,
    ]


COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_s = [0.0]


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
        _compile_s[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compile_seconds() -> float:
    """JAX's tracing, lowering and XLA compile time in this process so far."""
    return _compile_s[0]


def one_run(base: list[str], extra: list[str], run_dir: Path) -> dict:
    """Wall time (compose, build, compile, train, files), compile time (tracing, lowering and
    XLA compiling, from JAX's monitoring events) and steps/s once compiled, of one run."""
    before = _compile_s[0]
    tic = time.perf_counter()
    summary = lossbench.run(lossbench.compose(*base, *extra), run_dir)
    wall = time.perf_counter() - tic
    compile_s = _compile_s[0] - before
    compiled_s = max(summary["train_time_s"] - compile_s, 1e-9)
    return {"wall": wall, "compile": compile_s, "rate": summary["steps_completed"] / compiled_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--probe-every", type=int, default=0)
    args = parser.parse_args()
    base = overrides(args.steps, args.probe_every)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_run(base, ["trainer.seeds=1", "trainer.steps=20"], tmp / "warm1")
        one_run(base, [f"trainer.seeds={args.seeds}", "trainer.steps=20"], tmp / "warmN")
        vmapped = one_run(base, [f"trainer.seeds={args.seeds}"], tmp / "vmapped")
        separate = [
            one_run(base, [f"trainer.seed={s}", "trainer.seeds=1"], tmp / f"seed{s}")
            for s in range(args.seeds)
        ]
    separate_s = sum(r["wall"] for r in separate)
    seed_steps = args.seeds * args.steps
    vmapped_s = vmapped["wall"]
    ratio = separate_s / vmapped_s
    median = lambda xs: sorted(xs)[len(xs) // 2]
    probes = "off" if args.probe_every == 0 else f"every {args.probe_every} steps"
    rows = [
        (
            f"trainer.seeds={args.seeds} (one run)",
            vmapped_s,
            seed_steps / vmapped_s,
            vmapped["rate"],
            vmapped["compile"],
        ),
        (
            f"{args.seeds} runs of trainer.seeds=1 (sequential)",
            separate_s,
            seed_steps / separate_s,
            median([r["rate"] for r in separate]),
            median([r["compile"] for r in separate]),
        ),
    ]
    lines = [
        "# Sweep over seeds: one vmapped run vs separate runs",
        "",
        f"Default MLP on digits, Adam, {args.steps} steps, probes {probes}, {args.seeds} seeds, "
        f"device: {jax.default_backend()}, one process, persistent compile cache off. "
        "Throughput = seed-steps per second of wall time (compose, build, compile, train, "
        "files). Compile: JAX's tracing, lowering and XLA compile time in the run (its monitoring "
        "events). Steps/s per job: steps over the run's training time less its compile time "
        "(a vmapped step trains all seeds). Separate runs: the median job. Target: ratio >= 4.",
        "",
        "| layout | wall s | seed-steps/s | steps/s per job | compile s per job |",
        "|---|---|---|---|---|",
        *(f"| {n} | {w:.2f} | {t:,.0f} | {r:,.0f} | {c:.2f} |" for n, w, t, r, c in rows),
        "",
        f"**Throughput ratio (vmapped / sequential): {ratio:.1f}x**",
        "",
    ]
    text = "\n".join(lines)
    (HERE / "sweep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
