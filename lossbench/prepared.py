"""A run checked and built before anything is written: its config's checks, its problem,
its chunk layout, and which config values its compiled program takes as inputs.

`prepare(cfg)` gives a `Prepared` run; `lossbench.runner` trains it, alone or fused with
others (`lossbench.launchers.fused`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.errors import ConfigError
from lossbench.executables import known_to_trace, record_traces
from lossbench.probing import fit_probe, probe_batch
from lossbench.problem import Problem, build_problem, flat_record, traceable
from lossbench.rundir import config_record
from lossbench.schema import freeze
from lossbench.train import seed_keys, segments


def chunk_length(cfg) -> int:
    """Steps per compiled call: `probe.every` when probes are on, else `trainer.chunk`."""
    t, p = cfg.trainer, cfg.probe
    if p.every < 0:
        raise ConfigError("probe.every", p.every, "0 (off) or a positive number of steps")
    length = p.every if p.every > 0 else t.chunk
    if length % t.log_every:
        key = "probe.every" if p.every > 0 else "trainer.chunk"
        raise ConfigError(key, length, f"a multiple of trainer.log_every={t.log_every}")
    return length


def chunk_layout(n: int, log_every: int, last: bool) -> tuple[int, tuple[int, ...]]:
    """How a chunk of `n` steps splits into logged segments (`lossbench.train`'s layout):
    whole `log_every` intervals, the remainder, and, in the run's last chunk, its last step
    alone, so that the final step is always in metrics.parquet."""
    intervals, tail = divmod(n, log_every)
    tails = (tail,) if tail else ()
    if last and (tails[-1] if tails else log_every) > 1:
        if tails:
            tails = (tails[-1] - 1, 1)
        else:
            intervals, tails = intervals - 1, (log_every - 1, 1)
    return intervals, tails


def logged_steps(start: int, layout: tuple[int, tuple[int, ...]], log_every: int) -> list[int]:
    """The steps a chunk starting at `start` logs, for its `layout`."""
    intervals, tails = layout
    steps = [start + i * log_every for i in range(intervals)]
    at = start + intervals * log_every
    for tail in tails:
        steps.append(at)
        at += tail
    return steps


def _check_run(cfg) -> None:
    """The keys that concern the run's life rather than the problem, and the thresholds of
    the diagnosis at its end (checked now, not after training)."""
    from lossbench.pathology import check_detect

    check_detect(cfg.detect)
    t = cfg.trainer
    if t.checkpoint_every < 0:
        raise ConfigError("trainer.checkpoint_every", t.checkpoint_every, "0 (final only) or more")
    if t.keep_checkpoints < 1:
        raise ConfigError("trainer.keep_checkpoints", t.keep_checkpoints, "an integer >= 1")
    if not t.diverged_ratio > 1:
        raise ConfigError("trainer.diverged_ratio", t.diverged_ratio, "a number > 1")
    if t.resume and t.overwrite:
        raise ConfigError("trainer.overwrite", True, "false when trainer.resume=true")
    if t.snapshot_every < 0:
        raise ConfigError("trainer.snapshot_every", t.snapshot_every, "0 (none) or more steps")


def _check_objective(cfg, problem: Problem) -> None:
    """`objective` names a figure the run's summary will have: final_<metric> (the training
    data) or final_test_<metric> (the held-out data), or final_loss for a surface."""
    objective = getattr(cfg, "objective", "final_loss")
    names = {"final_loss"}
    params = jax.eval_shape(problem.init_params, jax.random.key(0))
    for prefix, data in (("final_", problem.data.train), ("final_test_", problem.data.test)):
        if data:
            names |= {prefix + name for name in jax.eval_shape(problem.metrics, params, data)}
    if objective not in names:
        raise ConfigError("objective", objective, f"one of {', '.join(sorted(names))}")


@dataclass(frozen=True)
class Prepared:
    """A config checked and built: what a run of it trains (nothing written yet)."""

    cfg: Any  # frozen, probe sizes fitted to the problem
    record: dict  # the config as written to summary.json and .hydra/config.yaml
    problem: Problem
    length: int  # steps per compiled call


def prepare(cfg) -> Prepared:
    """Check every value of `cfg` and build its problem; `ConfigError` on a bad value."""
    record = config_record(cfg)
    cfg = freeze(cfg)
    _check_run(cfg)
    problem = build_problem(cfg)
    _check_objective(cfg, problem)
    cfg = dataclasses.replace(cfg, probe=fit_probe(cfg.probe, problem))
    length = chunk_length(cfg)
    if cfg.trainer.snapshot_every % length:
        raise ConfigError(
            "trainer.snapshot_every",
            cfg.trainer.snapshot_every,
            f"a multiple of the chunk ({length} steps)",
        )
    return Prepared(cfg, record, problem, length)


def program_inputs(job: Prepared) -> tuple[str, ...]:
    """The config values a run takes as inputs of its compiled program rather than as
    constants closed into it, so that runs differing only in them run (and load from the
    persistent compilation cache) one program: the non-zero floats of `optimizer.*`, `init.*`
    and `loss.*` (`traceable`) whose tracing keeps the layout of the training state (what a
    checkpoint holds) and whose builders take a traced value. A zero stays a constant: it
    switches a term off (a momentum trace, weight decay, an l1 / l2 penalty) that a traced
    zero would keep. Costs two small abstract traces of the init (a few ms), more only when
    one fails (then one per value)."""
    values = flat_record(job.record)
    paths = sorted(path for path, v in values.items() if traceable(path, v) and v != 0)
    if not paths:
        return ()
    problem = job.problem
    layout = problem.state_layout()

    def keeps_layout(chosen) -> bool:
        try:
            return problem.state_layout({path: values[path] for path in chosen}) == layout
        except Exception:  # a builder that branches on the value (a tracer error) or checks it
            return False

    if keeps_layout(paths):
        return tuple(paths)
    return tuple(path for path in paths if keeps_layout([path]))


def trace_failure(
    jobs: Sequence[Prepared], trainer, traced: Sequence[str], rows: int
) -> str | None:
    """None when `trainer`'s program for `jobs` traces with the `traced` values as inputs,
    else the reason. These are the traces of the run's first calls (jit keeps them), so a
    success costs nothing more; a program stored on disk that traced before is not traced
    again (`lossbench.executables`)."""
    if known_to_trace(trainer.program):
        return None
    first = jobs[0]
    keys, hyper = row_inputs(jobs, traced, rows)
    data = first.problem.data.train, first.problem.data.test, probe_batch(first.cfg, first.problem)
    try:
        state = jax.eval_shape(trainer.init, keys, hyper)
        _, _, lengths = chunk_program(first.cfg.trainer, first.length, 0)
        trainer.program.trace(state, *data, lengths, first.length, hyper)
    except Exception as exc:  # jax's tracer errors (TypeErrors), a builder's own checks
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    record_traces(trainer.program)
    return None


def chunk_program(t, length: int, start: int) -> tuple[int, tuple, np.ndarray]:
    """The chunk from step `start`: its steps, its layout, and the segment lengths its
    compiled program takes (`lossbench.train`: padded with zeros to the segments of the
    run's longest layout, so every chunk of the run, the last included, runs one program)."""
    n = min(length, t.steps - start)
    layout = chunk_layout(n, t.log_every, last=start + n == t.steps)
    return n, layout, padded_segments(segments(layout, t.log_every), length, t.log_every)


def probe_only(length: int, log_every: int) -> np.ndarray:
    """The segment lengths of a call of the chunk program that only probes (step 0)."""
    return padded_segments((), length, log_every)


def padded_segments(lengths, length: int, log_every: int) -> np.ndarray:
    count = len(segments(chunk_layout(length, log_every, last=True), log_every))
    return np.asarray([*lengths, *[0] * (count - len(lengths))], np.int32)


def row_inputs(jobs: Sequence[Prepared], traced: Sequence[str], rows: int) -> tuple:
    """The PRNG key and the traced values of every row: each job's seeds in turn, then
    copies of the last row up to `rows` (padding, whose results nobody reads)."""
    keys = jnp.concatenate([seed_keys(j.cfg.trainer.seed, j.cfg.trainer.seeds) for j in jobs])
    values = {
        path: np.concatenate(
            [np.full(j.cfg.trainer.seeds, config_value(j.cfg, path), np.float32) for j in jobs]
        )
        for path in traced
    }
    pad = rows - keys.shape[0]
    if pad < 0:
        raise ValueError(f"{keys.shape[0]} rows do not fit in {rows}")
    if pad:
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad)])
        values = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in values.items()}
    return keys, {k: jnp.asarray(v) for k, v in values.items()}


def config_value(cfg, path: str):
    for key in path.split("."):
        cfg = getattr(cfg, key)
    return cfg
