"""The host loop: build, train chunk by chunk, write files as it goes, diagnose, summarise.

No Hydra here: `run(cfg, run_dir)` takes a config object (the schema dataclasses, or their
frozen twins) so notebooks and tests can call it directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np

from lossbench import executables, programs
from lossbench.compile_cache import cache_by_default
from lossbench.diagnosis import diagnose_run
from lossbench.errors import ConfigError
from lossbench.job import Job, rows_of
from lossbench.prepared import (  # noqa: F401  (also runner's names, as before the split)
    Prepared,
    chunk_layout,
    chunk_length,
    chunk_program,
    config_value,
    logged_steps,
    prepare,
    probe_only,
    program_inputs,
    row_inputs,
    trace_failure,
)
from lossbench.probing import make_probe_fn, probe_batch
from lossbench.results import SUMMARY_FILE
from lossbench.rundir import check_same_config, claim_run_dir
from lossbench.stopping import StopOnSignals
from lossbench.train import TrainState, make_train, unpack


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
    traced = program_inputs(job)
    trainer = group_trainer(job, rows, traced)
    if traced and trace_failure([job], trainer, traced, rows) is not None:
        traced = ()  # every value a constant
        trainer = group_trainer(job, rows, traced)
    return run_group(
        [job],
        [run_dir],
        traced=traced,
        trainer=trainer,
        fused=False,
        claimed=claimed,
        t_start=t_start,
    )[0]


def group_trainer(job: Prepared, rows: int, traced: Sequence[str] = ()):
    """The compiled functions (`lossbench.train.Trainer`) of `job`'s program over `rows` rows,
    the values of the `traced` paths inputs; one for all the batches of a fused group, so they
    compile once (jit caches by function), and the same for every later run in this process
    that builds the same program (`lossbench.programs`)."""
    cfg, problem = job.cfg, job.problem
    cache_by_default()  # before the store is asked (`lossbench.executables`)
    key = programs.program_key(job.record, rows, traced)
    data = (problem.data.train, problem.data.test)

    def build():
        trainer = make_train(
            problem,
            cfg.trainer,
            make_probe_fn(cfg, problem),
            rows=rows,
            probe_for=lambda at: make_probe_fn(cfg, at),
        )
        return executables.stored(trainer, key, data)  # a next process loads its programs

    size = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(data))
    return programs.reuse(key, build, size)


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
    cache_by_default()  # a notebook's runs too: its next session loads what this one compiled
    first = jobs[0]
    cfg, problem, length = first.cfg, first.problem, first.length
    t = cfg.trainer
    n_rows = sum(j.cfg.trainer.seeds for j in jobs)
    rows = rows or n_rows
    trainer = trainer or group_trainer(first, rows, traced)
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
        if not any(resuming) and trainer.probe is not None:  # the chunk program, 0 steps
            lengths = probe_only(length, t.log_every)
            state, out = trainer.program(state, train, test, probe_data, lengths, length, hyper)
            probe = jax.device_get(out["probe"])
            for job in group:
                job.record_probe(probe, 0)
                job.writer.flush()
        for job in group:
            job.heartbeat(steps_completed=done)

        def dispatch(state, start):
            n, layout, lengths = chunk_program(t, length, start)
            out = trainer.program(state, train, test, probe_data, lengths, length, hyper)
            return out, start, n, layout, lengths

        with StopOnSignals() as stop, _progress(t.progress, t.steps) as update:
            pending = dispatch(state, done) if done < t.steps else None
            tic = time.perf_counter()
            while pending is not None:
                (state, out), start, n, layout, lengths = pending
                done = start + n
                due = t.checkpoint_every and (done // length) % t.checkpoint_every == 0
                # the next chunk computes while this one's files are written
                pending = None
                if done < t.steps and not due and stop.requested is None:
                    pending = dispatch(state, done)
                out = unpack(jax.device_get(out), lengths)
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
    named = [(p, data) for p, data in (("final_", train), ("final_test_", test)) if data]
    if not train:  # a model that is its own loss (a surface): its value where the run ended
        named.append(("surface", {}))
    figures = trainer.evaluate(params, tuple(data for _, data in named), hyper)  # one program
    values = {
        prefix: {k: np.asarray(v) for k, v in out.items()}
        for (prefix, _), out in zip(named, figures, strict=True)
    }
    surface = None
    if not train:
        n = len(job.seed_ids)
        leaves = jax.tree_util.tree_leaves(params)
        point = np.concatenate([np.asarray(v).reshape(n, -1) for v in leaves], 1)
        surface = (point, values.pop("surface")["loss"])
    return job.final_figures(values, surface)
