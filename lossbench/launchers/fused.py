"""Fused sweeps: the jobs of a sweep that differ only in numbers run as one compiled program.

Jobs whose configs agree on everything but their seeds and the float values of `optimizer.*`,
`init.*` and `loss.*` (learning rate, momentum, betas, weight decay, schedule fractions, init
scale, huber's delta, focal's gamma, label smoothing, l1 / l2 weights, ...) form a group: one
program trains all their rows (jobs x seeds) with those values traced (`Problem.at`), so a
4 x 4 grid of learning rates and init scales over 16 seeds compiles once. Jobs that differ in
anything else (model, loss name, optimizer family, widths, steps, a momentum
of 0 against one above 0: a different optimizer state) form other groups. A group larger than
`max_batch` rows runs in batches of one padded size (one compile); rows are sharded over the
devices. Every job writes the files of a run of its own (`lossbench.job`). No Hydra here: the
`fused` launcher (hydra_plugins/lossbench_launchers/fused.py) calls `run_fused`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lossbench.problem import flat_record, traceable
from lossbench.programs import ROW_KEYS
from lossbench.runner import Prepared, group_trainer, prepare, run_group, trace_failure

HOST_KEYS = ("trainer.progress",)  # the host loop's own; the group uses the first job's


@dataclass(frozen=True)
class Batch:
    """Jobs (indices into the sweep) trained by one call of `run_group`."""

    jobs: tuple[int, ...]
    traced: tuple[str, ...]  # config paths whose values differ between the jobs
    rows: int  # the row axis, padded
    group: int = -1  # the group's index: the batches of a group run one compiled program


def state_layout(job: Prepared) -> tuple:
    """The structure of the training state (an optimizer with a momentum trace or without)."""
    return job.problem.state_layout()


def group_key(job: Prepared) -> tuple:
    values = flat_record(job.record)
    fixed = {
        path: value
        for path, value in values.items()
        if path not in ROW_KEYS + HOST_KEYS and not traceable(path, value)
    }
    return tuple(sorted(fixed.items(), key=lambda item: item[0])), state_layout(job)


def groups(jobs: Sequence[Prepared]) -> list[tuple[list[int], tuple[str, ...]]]:
    """Jobs that one program can train: (indices, traced paths), in the sweep's order."""
    keyed: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        keyed.setdefault(group_key(job), []).append(i)
    out = []
    for members in keyed.values():
        records = [flat_record(jobs[i].record) for i in members]
        traced = tuple(
            sorted(
                path
                for path, value in records[0].items()
                if traceable(path, value) and any(r[path] != value for r in records[1:])
            )
        )
        out.append((members, traced))
    return out


def batches(
    jobs: Sequence[Prepared], max_batch: int | None = None, devices: int = 1
) -> list[Batch]:
    """The groups, each cut into batches of at most `max_batch` rows (a job is never split),
    all batches of a group padded to one row count, a multiple of `devices`."""
    out = []
    for group, (members, traced) in enumerate(groups(jobs)):
        cut: list[list[int]] = [[]]
        for i in members:
            seeds = jobs[i].cfg.trainer.seeds
            rows = sum(jobs[j].cfg.trainer.seeds for j in cut[-1])
            if cut[-1] and max_batch is not None and rows + seeds > max_batch:
                cut.append([])
            cut[-1].append(i)
        size = max(sum(jobs[j].cfg.trainer.seeds for j in part) for part in cut)
        size = devices * math.ceil(size / devices)
        if len(members) == 1:  # a job alone: the program of a plain run
            out.append(Batch(tuple(members), (), 0))
            continue
        out.extend(Batch(tuple(part), traced, size, group) for part in cut)
    return out


def check_traceable(jobs: Sequence[Prepared], batch: Batch, trainer) -> str | None:
    """None when the batch's program (`trainer`, its group's) traces with its values as
    inputs, else the reason."""
    if not batch.traced:
        return None
    return trace_failure([jobs[i] for i in batch.jobs], trainer, batch.traced, batch.rows)


def sharding(devices: int):
    """The row axis split over the devices (None on one device)."""
    if devices < 2:
        return None
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:devices]), ("rows",))  # automatic axes
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


def run_fused(
    configs: Sequence[Any],
    run_dirs: Sequence[str | Path],
    *,
    max_batch: int | None = None,
    on_failure: Callable[[int, BaseException], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict | BaseException]:
    """Run a sweep's jobs (typed configs, claimed run directories) fused into as few
    programs as possible. Returns each job's summary, or the exception that failed it.

    A job whose config is refused fails alone (`on_failure(index, exc)` records it); a batch
    whose training raises fails its jobs; the others go on. A stop signal ends the sweep
    after the batch it interrupted (`lossbench -m ... trainer.resume=true` continues it).
    """
    results: list[dict | BaseException | None] = [None] * len(configs)
    prepared: dict[int, Prepared] = {}
    for i, cfg in enumerate(configs):
        try:
            prepared[i] = prepare(cfg)
        except Exception as exc:
            results[i] = exc
            if on_failure is not None:
                on_failure(i, exc)
    indices = sorted(prepared)
    valid = [prepared[i] for i in indices]
    n_devices = len(jax.devices())
    plan = []
    trainers: dict[int, Any] = {}  # group -> its compiled functions, shared by its batches
    reasons: dict[int, str | None] = {}
    for batch in batches(valid, max_batch, n_devices):
        if batch.rows and batch.group not in trainers:
            trainers[batch.group] = group_trainer(valid[batch.jobs[0]], batch.rows, batch.traced)
            reasons[batch.group] = check_traceable(valid, batch, trainers[batch.group])
        reason = reasons.get(batch.group) if batch.rows else None
        if reason is None:
            plan.append(batch)
            continue
        log(
            f"fused: {', '.join(batch.traced)} cannot be program inputs ({reason}); "
            f"these {len(batch.jobs)} jobs run one by one"
        )
        plan.extend(Batch((i,), (), 0) for i in batch.jobs)
    for batch in plan:
        jobs = [valid[i] for i in batch.jobs]
        sweep_ids = [indices[i] for i in batch.jobs]
        rows = batch.rows or None
        n_rows = sum(j.cfg.trainer.seeds for j in jobs)
        padding = f" (padded to {rows})" if rows and rows > n_rows else ""
        traced = f", traced {', '.join(batch.traced)}" if batch.traced else ""
        log(f"fused: {len(jobs)} job(s), {n_rows} rows{padding}{traced}")
        try:
            summaries = run_group(
                jobs,
                [run_dirs[i] for i in sweep_ids],
                traced=batch.traced,
                rows=rows,
                sharding=sharding(n_devices) if rows and rows % n_devices == 0 else None,
                claimed=True,
                trainer=trainers.get(batch.group) if rows else None,
            )
        except Exception as exc:
            for i in sweep_ids:
                results[i] = exc
                if on_failure is not None:
                    on_failure(i, exc)
            continue
        for i, summary in zip(sweep_ids, summaries, strict=True):
            results[i] = summary
        if any(s["status"] == "interrupted" for s in summaries):
            log("fused: interrupted; the remaining jobs were not started")
            break
    return results


__all__ = ["Batch", "batches", "groups", "run_fused"]
