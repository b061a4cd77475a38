"""First-call time with and without the persistent compilation cache (`lossbench.compile_cache`).

Each figure comes from a fresh Python process whose imports are done before the clock starts:

- **CLI**: `lossbench.cli.main([...])` for one chunk of the default study (digits MLP, Adam,
  sharpness probe), i.e. compose, build, compile init / first probe / first chunk, train 100
  steps, write the run directory: the time until the first training steps are done. Its warm
  run also loads the programs the cold one stored (`lossbench.executables`).
- **top-5**: a one-off `hessian_eigenvalues(loss, params, x, y, key=..., top_k=5)` on the
  26k-parameter MLP of `probe_cost_kernels.py`, as a notebook cell would call it.

"cold" runs on an empty cache directory, "warm" on the directory the cold run filled, "off"
with `LOSSBENCH_NO_CACHE=1`. Rounds alternate; the table gives medians and the median of the
within-round ratio warm / cold. Run: `python benchmarks/first_call.py` (writes first_call.md).
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
TARGET = 0.3

CLI_SCRIPT = """
import json, sys, time
import jax, hydra, lossbench.cli, lossbench.runner
overrides = sys.argv[1:]
start, cpu = time.perf_counter(), time.process_time()
try:
    lossbench.cli.main(overrides)
except SystemExit as exit:
    if exit.code:
        raise
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}))
"""

TOP5_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
from lossbench.compile_cache import enable_compilation_cache
from lossbench.curvature import hessian_eigenvalues
from probe_cost_kernels import SAMPLES, SIZES, init_mlp, loss_fn

def loss(params, x, labels):
    return loss_fn(params, (x, labels))

enable_compilation_cache()
params = init_mlp(jax.random.PRNGKey(0))
x = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, SIZES[0]))
labels = jax.random.randint(jax.random.PRNGKey(2), (SAMPLES,), 0, SIZES[-1])
key = jax.random.PRNGKey(3)
jax.block_until_ready((params, x, labels, key))
start, cpu = time.perf_counter(), time.process_time()
jax.block_until_ready(hessian_eigenvalues(loss, params, x, labels, key=key, lanczos_steps=40,
                                          top_k=5, bottom_k=0))
first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
start = time.perf_counter()
jax.block_until_ready(hessian_eigenvalues(loss, params, x, labels, key=key, lanczos_steps=40,
                                          top_k=5, bottom_k=0))
print(json.dumps({"seconds": first, "cpu": first_cpu, "again": time.perf_counter() - start}))
"""


def timed(script: str, args: list[str], cache: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSBENCH_NO_CACHE",)}
    if cache is None:
        env["LOSSBENCH_NO_CACHE"] = "1"
    else:
        env["LOSSBENCH_CACHE_DIR"] = str(cache)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
        timeout=900,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(script: str, args_for, rounds: int) -> dict[str, np.ndarray]:
    """{"off" | "cold" | "warm": wall seconds, and the same with "_cpu": process CPU seconds}."""
    times = {key: [] for key in ("off", "cold", "warm", "off_cpu", "cold_cpu", "warm_cpu")}
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            for tag, directory in (("off", None), ("cold", cache), ("warm", cache)):
                result = timed(script, args_for(tmp, tag), directory)
                times[tag].append(result["seconds"])
                times[f"{tag}_cpu"].append(result["cpu"])
        print(round_, {k: f"{v[-1]:.2f}" for k, v in times.items()}, flush=True)
    return {k: np.asarray(v) for k, v in times.items()}


def main(rounds: int, output: Path | None) -> str:
    cli_args = lambda tmp, tag: [  # noqa: E731
        "trainer.steps=100", "trainer.progress=false", f"hydra.run.dir={tmp}/run-{tag}",
    ]  # fmt: skip
    load_start = os.getloadavg()
    cli = measure(CLI_SCRIPT, cli_args, rounds)
    top5 = measure(TOP5_SCRIPT, lambda tmp, tag: [str(HERE)], rounds)
    load_end = os.getloadavg()
    lines = [
        "# First call: persistent compilation cache",
        "",
        f"Fresh process per figure, imports before the clock; {rounds} alternating rounds, "
        "medians; a ratio is the median of the within-round warm / cold. Wall time and the "
        "process's CPU time (user + system, all threads): on a loaded shared machine the CPU "
        "time is the steadier figure. Load average (1 min) on the machine: "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end. Written by "
        "`benchmarks/first_call.py`.",
        "",
        "| first call | clock | off (s) | cold cache (s) | warm cache (s) | warm / cold | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label, times in (
        ("CLI, default study, first 100 steps", cli),
        ("hessian_eigenvalues top-5, 26k MLP, m=40", top5),
    ):
        for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
            off, cold, warm = (times[f"{tag}{suffix}"] for tag in ("off", "cold", "warm"))
            ratio = float(np.median(warm / cold))
            target = f"<= {TARGET}: " + ("yes" if ratio <= TARGET else "**no**")
            lines.append(
                f"| {label} | {clock} | {np.median(off):.2f} | {np.median(cold):.2f} | "
                f"{np.median(warm):.2f} | {ratio:.2f} | {target} |"
            )
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "first_call.md")
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.output)
