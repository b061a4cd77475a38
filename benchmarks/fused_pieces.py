"""Where a fused batch's time goes, against a 16-seed job of the same model (issue 10).

Interleaved in one process, cache off (as `fused_sweep.py`): a fused batch of one job x 16
seeds (`runner.run_group` with the group's shared trainer, traced lr and init.scale, what
`fused_sweep.py --max-batch 16` runs) and a plain `trainer.seeds=16` run, on the default
digits MLP with sharpness probes every 100 steps. Per call: wall, process CPU, JAX's compile
events (trace + lowering + XLA), the wall blocked in `jax.device_get` (the device computing
the chunks: dispatch is asynchronous) and the 1-minute load.

    python benchmarks/fused_pieces.py [--steps 200] [--rounds 4]
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time

os.environ.setdefault("LOSSBENCH_NO_CACHE", "1")

import jax  # noqa: E402

import lossbench  # noqa: E402
from lossbench import runner  # noqa: E402

EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
GRID = [(0.0003, 0.5), (0.001, 1.0), (0.003, 2.0), (0.01, 4.0), (0.0003, 1.0), (0.001, 2.0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    compile_s = collections.defaultdict(float)

    def on_duration(event, duration, **kwargs):
        if event in EVENTS:
            compile_s[event] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    blocked = [0.0]
    device_get = jax.device_get

    def timed_get(tree):
        tic = time.perf_counter()
        out = device_get(tree)
        blocked[0] += time.perf_counter() - tic
        return out

    jax.device_get = timed_get  # the host loop's wait for each chunk's records
    base = [
        f"trainer.steps={args.steps}",
        "trainer.seeds=16",
        "probe.every=100",
        "trainer.progress=false",
        "trainer.save_params=false",
        "trainer.checkpoint_every=0",
    ]
    tmp = tempfile.mkdtemp()
    warm = lossbench.compose("trainer.steps=20", "probe.every=10", "trainer.progress=false")
    lossbench.run(warm, f"{tmp}/warm")  # library start-up charged to neither
    rows = collections.defaultdict(list)

    def measure(name, fn, *fn_args, **fn_kwargs):
        compile_s.clear()
        blocked[0] = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*fn_args, **fn_kwargs)
        rows[name].append(
            (
                time.perf_counter() - wall,
                time.process_time() - cpu,
                sum(compile_s.values()),
                blocked[0],
                os.getloadavg()[0],
            )
        )

    trainer = None
    for r, (lr, scale) in enumerate(GRID[: args.rounds]):
        cfg = lossbench.compose(*base, f"optimizer.lr={lr}", f"init.scale={scale}")
        job = runner.prepare(cfg)
        trainer = trainer or runner.group_trainer(job, 16)
        traced = ("init.scale", "optimizer.lr")
        run_dir = f"{tmp}/f{r}"
        measure(
            "fused batch",
            runner.run_group,
            [job],
            [run_dir],
            traced=traced,
            rows=16,
            trainer=trainer,
        )
        measure("16-seed run", lossbench.run, cfg, f"{tmp}/b{r}")
    print(
        "| call | round | wall s | CPU s | compile s | in device_get s | wall - compile s | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, values in rows.items():
        for r, (wall, cpu, comp, get, load) in enumerate(values):
            print(
                f"| {name} | {r} | {wall:.1f} | {cpu:.1f} | {comp:.1f} | {get:.1f} "
                f"| {wall - comp:.1f} | {load:.1f} |"
            )


if __name__ == "__main__":
    main()
