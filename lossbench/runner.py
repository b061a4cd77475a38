"""The host loop: build, train chunk by chunk, write files as it goes, diagnose, summarise.

No Hydra here: `run(cfg, run_dir)` takes a config object (the schema dataclasses, or their
frozen twins) so notebooks and tests can call it directly.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lossbench.diagnosis import diagnose_run
from lossbench.errors import ConfigError
from lossbench.job import Job, rows_of
from lossbench.probing import fit_probe, make_probe_fn, probe_batch
from lossbench.problem import Problem, build_problem, flat_record, traceable
from lossbench.results import SUMMARY_FILE
from lossbench.rundir import check_same_config, claim_run_dir, config_record
from lossbench.schema import freeze
from lossbench.stopping import StopOnSignals
from lossbench.train import TrainState, make_train, seed_keys


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


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    if not enabled:
        yield lambda **kw: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} steps/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("train", total=total, loss="-", rate="-")
        yield lambda **kw: progress.update(task, **kw)


def _record_config(record: dict, run_dir: Path) -> None:
    """Outside Hydra (notebooks, tests), write the config where Hydra would: .hydra/config.yaml."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(record, sort_keys=False))


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


def run(cfg, run_dir: str | Path, *, claimed: bool = False) -> dict:
    """Train as `cfg` says, writing DESIGN's files into `run_dir`. Returns the summary.

    `cfg` is the typed config (as `lossbench.compose` gives it). The run directory must be new
    or empty, unless `trainer.resume` (continue the run there from its last checkpoint) or
    `trainer.overwrite` (move its files into `previous-<time>/`); `claimed=True` says the
    caller (the command line) has claimed it already.
    """
    t_start = time.perf_counter()
    job = prepare(cfg)
    rows = job.cfg.trainer.seeds
    trainer = group_trainer(job, rows)
    traced = program_inputs(job)
    if traced and trace_failure([job], trainer, traced, rows) is not None:
        traced = ()  # the same functions, every value a constant
    return run_group(
        [job],
        [run_dir],
        traced=traced,
        trainer=trainer,
        fused=False,
        claimed=claimed,
        t_start=t_start,
    )[0]


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
    success costs nothing more."""
    first = jobs[0]
    keys, hyper = row_inputs(jobs, traced, rows)
    data = first.problem.data.train, first.problem.data.test, probe_batch(first.cfg, first.problem)
    try:
        state = jax.eval_shape(trainer.init, keys, hyper)
        trainer.chunk.trace(
            state, *data, chunk_program(first.cfg.trainer, first.length, 0)[2], hyper
        )
    except Exception as exc:  # jax's tracer errors (TypeErrors), a builder's own checks
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def chunk_program(t, length: int, start: int) -> tuple[int, tuple, tuple]:
    """The chunk from step `start`: its steps, its layout and the layout of the program that
    runs it. When the run's last chunk is a full one, every full chunk runs its program (the
    final step logged apart) so the run compiles one chunk program, not two; the extra record
    of the other chunks is dropped on the host."""
    n = min(length, t.steps - start)
    layout = chunk_layout(n, t.log_every, last=start + n == t.steps)
    one_program = t.steps % length == 0
    return n, layout, chunk_layout(n, t.log_every, last=True) if one_program else layout


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


def group_trainer(job: Prepared, rows: int):
    """The compiled functions (`lossbench.train.Trainer`) of `job`'s program over `rows` rows;
    one for all the batches of a fused group, so they compile once (jit caches by function)."""
    cfg, problem = job.cfg, job.problem
    return make_train(
        problem,
        cfg.trainer,
        make_probe_fn(cfg, problem),
        rows=rows,
        probe_for=lambda at: make_probe_fn(cfg, at),
    )


def run_group(
    jobs: Sequence[Prepared],
    run_dirs: Sequence[str | Path],
    *,
    traced: Sequence[str] = (),
    rows: int | None = None,
    sharding=None,
    claimed: bool = False,
    t_start: float | None = None,
    trainer=None,
    fused: bool = True,
) -> list[dict]:
    """Train `jobs` as one compiled program, each into its run directory; their summaries.

    The jobs differ only in their seeds and in the values of the `traced` config paths
    (`Problem.at`); one job is a plain run (`fused=False`: its summary names its
    `program_inputs` instead of a `fused` entry). Each job's files are those of a run of its
    own config (`lossbench.job`). `rows` pads the row axis (a fixed program size across
    batches of a sweep, a multiple of the devices); `sharding` places it on devices.
    """
    t_start = time.perf_counter() if t_start is None else t_start
    first = jobs[0]
    cfg, problem, length = first.cfg, first.problem, first.length
    t = cfg.trainer
    n_rows = sum(j.cfg.trainer.seeds for j in jobs)
    rows = rows or n_rows
    trainer = trainer or group_trainer(first, rows)
    row_keys, hyper = row_inputs(jobs, traced, rows)
    if sharding is not None:
        row_keys, hyper = jax.device_put((row_keys, hyper), sharding)

    offsets = np.cumsum([0] + [j.cfg.trainer.seeds for j in jobs])
    run_dirs = [Path(d) for d in run_dirs]
    resuming = [
        j.cfg.trainer.resume and (d / SUMMARY_FILE).exists()
        for j, d in zip(jobs, run_dirs, strict=True)
    ]
    for job, run_dir, resumes in zip(jobs, run_dirs, resuming, strict=True):
        if resumes:
            check_same_config(
                json.loads((run_dir / SUMMARY_FILE).read_text())["config"], job.record
            )
    if any(resuming) and not all(resuming):
        raise ConfigError("trainer.resume", True, "every job of a fused group resumable, or none")
    if not claimed:
        for job, run_dir in zip(jobs, run_dirs, strict=True):
            t_job = job.cfg.trainer
            claim_run_dir(run_dir, resume=t_job.resume, overwrite=t_job.overwrite, key="run_dir")
    group = []
    for i, (job, run_dir) in enumerate(zip(jobs, run_dirs, strict=True)):
        _record_config(job.record, run_dir)
        group.append(
            Job(
                job.cfg, job.record, run_dir, slice(offsets[i], offsets[i + 1]), problem.param_count
            )
        )
    for job in group:
        if not fused:  # the values its program takes as inputs (program_inputs)
            job.summary["program_inputs"] = list(traced)
        elif traced or len(jobs) > 1:
            job.summary["fused"] = {"jobs": len(jobs), "rows": rows, "traced": list(traced)}
    train = jax.device_put(problem.data.train)
    test = jax.device_put(problem.data.test)
    probe_data = jax.device_put(probe_batch(cfg, problem))
    done, first_chunk_s, stop = 0, None, None
    t_train = time.perf_counter()

    def live() -> list[Job]:
        return [job for job in group if job.active]

    try:
        state = trainer.init(row_keys, hyper)
        if any(resuming):
            state, done = _restore(group, state)
        else:
            for job in group:
                job.snapshot(state, 0)
        if not any(resuming) and trainer.probe is not None:
            state, probe = trainer.probe(state, probe_data, hyper)
            probe = jax.device_get(probe)
            for job in group:
                job.record_probe(probe, 0)
                job.writer.flush()
        for job in group:
            job.heartbeat(steps_completed=done)

        def dispatch(state, start):
            n, layout, program = chunk_program(t, length, start)
            out = trainer.chunk(state, train, test, probe_data, program, hyper)
            return out, start, n, layout, program != layout

        with StopOnSignals() as stop, _progress(t.progress, t.steps) as update:
            pending = dispatch(state, done) if done < t.steps else None
            tic = time.perf_counter()
            while pending is not None:
                (state, out), start, n, layout, extra_record = pending
                done = start + n
                due = t.checkpoint_every and (done // length) % t.checkpoint_every == 0
                # the next chunk computes while this one's files are written
                pending = None
                if done < t.steps and not due and stop.requested is None:
                    pending = dispatch(state, done)
                out = jax.device_get(out)
                if extra_record:
                    out = _drop_last_record(out)
                logged = logged_steps(start, layout, t.log_every)
                for job in live():
                    job.record_chunk(out, start, logged)
                    job.snapshot(state, done)
                elapsed, tic = time.perf_counter() - tic, time.perf_counter()
                first_chunk_s = first_chunk_s or elapsed
                for job in live():
                    job.heartbeat(steps_completed=done)
                last = out["loss"][:n_rows, -1]
                last = last[np.isfinite(last)]
                update(
                    completed=done,
                    loss=f"{last.mean():.4g}" if last.size else "nan",
                    rate=f"{n / elapsed:,.0f}",
                )
                for job in live():
                    if job.divergence.all:
                        job.summary["status"] = "diverged"
                        job.stop(state)
                if not live():
                    break
                if stop.requested is not None:
                    for job in live():
                        job.summary.update(status="interrupted", signal=stop.requested.name)
                        job.checkpoint(state, done)
                    break
                if due and done < t.steps:
                    for job in live():
                        job.checkpoint(state, done)
                if pending is None and done < t.steps:
                    pending = dispatch(state, done)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what the files hold
        for job in live():
            job.summary.update(status="interrupted", signal="SIGINT")
    except Exception as exc:
        timing = _timing(done, t_train, first_chunk_s, t_start)
        for job in group:
            job.fail(exc)
            job.summary.update(timing, steps_completed=job.done)
            job.heartbeat()
            job.checkpoints.close()
        raise
    for job in live():
        job.stop(state)
    return [
        _finish(
            job, trainer, (train, test, rows_of(hyper, job.rows)), t_train, first_chunk_s, t_start
        )
        for job in group
    ]


def _restore(group: list[Job], state: TrainState) -> tuple[TrainState, int]:
    """Every job's rows from its last checkpoint (all at one step) into the group's state."""
    steps = {job.checkpoints.latest_step() for job in group}
    if None in steps:
        missing = next(job.run_dir for job in group if job.checkpoints.latest_step() is None)
        raise ConfigError("trainer.resume", True, f"a run with a checkpoint ({missing} has none)")
    if len(steps) > 1:
        raise ConfigError(
            "trainer.resume",
            True,
            f"jobs of one fused group checkpointed at one step (found {sorted(steps)}): "
            "resume them one by one with `lossbench resume RUN_DIR`",
        )
    done = 0
    for job in group:
        mine, done = job.restore(rows_of(state, job.rows))
        state = jax.tree_util.tree_map(lambda a, b, r=job.rows: a.at[r].set(b), state, mine)
    return state, done


def _finish(job: Job, trainer, evaluation, t_train, first_chunk_s, t_start) -> dict:
    """A job's summary once it stopped: status, timing, final figures (`evaluation`: the
    training data, the held-out data and the job's traced values), diagnosis."""
    t = job.cfg.trainer
    summary = job.summary
    summary.update(_timing(job.done, t_train, first_chunk_s, t_start))
    if summary["status"] == "running":
        job.divergence.settle(job.done)
        summary["status"] = "diverged" if job.divergence.all else "completed"
    seeds = job.seed_ids
    summary["diverged_seeds"] = [
        seed for s, seed in enumerate(seeds) if job.divergence.step[s] >= 0
    ]
    summary["diverged_at"] = [int(v) for v in job.divergence.step if v >= 0]
    if summary["status"] in ("completed", "diverged"):
        summary.update(_final_figures(job, trainer, *evaluation))
        if t.save_params:
            job.save_final()
    job.checkpoints.close()
    summary["warnings"] = job.probe_warnings()
    summary = diagnose_run(job.run_dir, job.cfg.detect, summary, print_table=t.progress)
    summary["wall_time_s"] = time.perf_counter() - t_start
    job.summary = summary
    job.heartbeat()
    return summary


def _drop_last_record(out: dict) -> dict:
    """A chunk's records (rows first, log steps second) without the last log step's."""
    drop = lambda a: a[:, :-1]  # noqa: E731
    return {
        **out,
        "log": jax.tree_util.tree_map(drop, out["log"]),
        "eval": jax.tree_util.tree_map(drop, out["eval"]),
    }


def _timing(done, t_train, first_chunk_s, t_start) -> dict:
    train_time = time.perf_counter() - t_train
    return {
        "steps_completed": done,
        "train_time_s": train_time,
        "first_chunk_s": first_chunk_s,
        "steps_per_s": done / train_time if train_time > 0 else None,
        "wall_time_s": time.perf_counter() - t_start,
    }


def _final_figures(job: Job, trainer, train, test, hyper) -> dict:
    """The final evaluation of a job's rows on the training and the held-out data."""
    params = job.final_state.params
    values = {}
    for prefix, data in (("final_", train), ("final_test_", test)):
        if data:
            values[prefix] = {
                k: np.asarray(v) for k, v in trainer.evaluate(params, data, hyper).items()
            }
    surface = None
    if not train:  # a model that is its own loss (a surface): where the run ended
        n = len(job.seed_ids)
        leaves = jax.tree_util.tree_leaves(params)
        point = np.concatenate([np.asarray(v).reshape(n, -1) for v in leaves], 1)
        surface = (point, np.asarray(trainer.evaluate(params, {}, hyper)["loss"]))
    return job.final_figures(values, surface)
