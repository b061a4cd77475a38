"""What a run compiles: programs, tracing + lowering + XLA time, now against an earlier checkout.

Each figure comes from a fresh Python process (imports before the clock, the persistent
compilation cache off) that runs `lossbench.run` for two chunks of a study and sums JAX's
compile events (`/jax/core/compile/*_duration`: jaxpr tracing, lowering to MLIR, XLA's backend
compile) and counts the programs XLA compiled. `--before PATH` runs the same studies with the
`lossbench` package of another checkout (e.g. `git worktree add /tmp/before <commit>`), in
alternating rounds; the table gives medians and the ratio now / before. Both sides use the
test suite's compile settings when `--suite-flags` is given (JAX_DISABLE_MOST_OPTIMIZATIONS=1
and XLA's older CPU emitters, see tests/conftest.py).

    python benchmarks/run_compile.py [--before PATH] [--rounds 3] [--suite-flags]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STUDIES = {
    "default (MLP, Adam, sharpness probe)": [],
    "SAM": ["optimizer=sam"],
    "CNN, probes off": ["model=cnn", "probe=off", "trainer.batch_size=32"],
}
EVENTS = {
    "trace": "/jax/core/compile/jaxpr_trace_duration",
    "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "xla": "/jax/core/compile/backend_compile_duration",
}
SECOND_RUN = ("optimizer.lr=0.002", "trainer.seed=1")


def child(overrides: list[str]) -> dict:
    import time

    import jax

    import lossbench

    seconds = dict.fromkeys(EVENTS, 0.0)
    programs = [0]

    def listen(event, duration, **_):
        for name, key in EVENTS.items():
            if event == key:
                seconds[name] += duration
                programs[0] += name == "xla"

    jax.monitoring.register_event_duration_secs_listener(listen)
    quick = ("trainer.progress=false", "trainer.save_params=false", "trainer.steps=205")
    # 205 steps: two chunks and a short last one, every layout a run has; then a second run
    # in the same process with another learning rate and seed (a notebook's loop)
    out = {}
    for label, extra in (("", ()), ("again_", SECOND_RUN)):
        cfg = lossbench.compose(*overrides, *quick, *extra)
        seconds.update(dict.fromkeys(EVENTS, 0.0))
        programs[0] = 0
        cpu, wall = time.process_time(), time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            summary = lossbench.run(cfg, Path(run_dir) / "run")
        out.update(
            {
                f"{label}status": summary["status"],
                f"{label}cpu": time.process_time() - cpu,
                f"{label}wall": time.perf_counter() - wall,
                f"{label}programs": programs[0],
                **{f"{label}{k}": v for k, v in seconds.items()},
            }
        )
    return out


def measure(overrides: list[str], path: Path | None, suite_flags: bool) -> dict:
    env = {**os.environ, "LOSSBENCH_NO_CACHE": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    if suite_flags:
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false"
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(overrides)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(before: Path | None, rounds: int, suite_flags: bool) -> str:
    import jax

    load = os.getloadavg()[0]
    sides = {"now": None, **({"before": before} if before else {})}
    rows = []
    for study, overrides in STUDIES.items():
        results = {side: [] for side in sides}
        for _ in range(rounds):
            for side, path in sides.items():
                results[side].append(measure(overrides, path, suite_flags))
        med = {
            side: {
                k: float(np.median([r[k] for r in runs]))
                for k in ("cpu", "wall", *EVENTS, "again_cpu", "again_programs")
            }
            | {"programs": runs[0]["programs"], "status": runs[0]["status"]}
            | {"again": sum(runs[0][f"again_{k}"] for k in EVENTS)}
            for side, runs in results.items()
        }
        rows.append((study, med))
    settings = "the test suite's (fast compiles)" if suite_flags else "the defaults"
    lines = [
        "# What a run compiles",
        "",
        f"`lossbench.run` of each study for 205 steps (two 100-step chunks and a 5-step last "
        f"one, probes at 0, 100, 200 and 205 where on), a fresh process per figure, the "
        f"persistent compilation cache off, XLA settings: {settings}; device "
        f"{jax.devices()[0].device_kind}; {rounds} alternating rounds, medians. compile = "
        "JAX's tracing + lowering + XLA compile events; CPU = the whole run's process CPU "
        "(compile dominates it). Then a second run in the same process, the learning rate "
        f"and seed changed ({', '.join(SECOND_RUN)}): its programs compiled, its compile "
        "seconds (first round) and its CPU. "
        f"Load average (1 min): {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Written by `benchmarks/run_compile.py`.",
        "",
        "| study | side | programs | trace s | lower s | XLA s | run CPU s | run wall s "
        "| 2nd run: programs | compile s | CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for study, med in rows:
        for side, m in med.items():
            lines.append(
                f"| {study} | {side} | {m['programs']} | {m['trace']:.2f} | {m['lower']:.2f} "
                f"| {m['xla']:.2f} | {m['cpu']:.2f} | {m['wall']:.2f} "
                f"| {m['again_programs']:.0f} | {m['again']:.2f} | {m['again_cpu']:.2f} |"
            )
        if "before" in med:
            ratio = med["now"]["cpu"] / med["before"]["cpu"]
            again = med["now"]["again_cpu"] / med["before"]["again_cpu"]
            lines.append(f"| {study} | now / before | | | | | {ratio:.2f} | | | | {again:.2f} |")
    text = "\n".join(lines) + "\n"
    (HERE / "run_compile.md").write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--suite-flags", action="store_true")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
    else:
        print(main(args.before, args.rounds, args.suite_flags))
