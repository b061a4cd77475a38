"""The host loop: build, train chunk by chunk, write files as it goes, diagnose, summarise.

No Hydra here: `run(cfg, run_dir)` takes a config object (the schema dataclasses, or their
frozen twins) so notebooks and tests can call it directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from lossbench.diagnosis import diagnose_run
from lossbench.errors import ConfigError
from lossbench.probing import fit_probe, make_probe_fn, probe_batch
from lossbench.problem import build_problem
from lossbench.records import Divergence, metric_rows, probe_rows
from lossbench.results import SUMMARY_FILE, Checkpoints, RunWriter, versions
from lossbench.rundir import check_same_config, claim_run_dir, config_record
from lossbench.schema import freeze
from lossbench.snapshots import save_snapshot
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


def _state_tree(state: TrainState) -> dict:
    """The training state as a checkpointable tree (PRNG keys as their raw data)."""
    tree = state._asdict()
    tree["key"] = jax.random.key_data(state.key)
    return tree


def _from_tree(tree: dict) -> TrainState:
    return TrainState(**{**tree, "key": jax.random.wrap_key_data(tree["key"])})


def run(cfg, run_dir: str | Path, *, claimed: bool = False) -> dict:
    """Train as `cfg` says, writing DESIGN's files into `run_dir`. Returns the summary.

    `cfg` is the typed config (as `lossbench.compose` gives it). The run directory must be new
    or empty, unless `trainer.resume` (continue the run there from its last checkpoint) or
    `trainer.overwrite` (move its files into `previous-<time>/`); `claimed=True` says the
    caller (the command line) has claimed it already.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    record = config_record(cfg)
    cfg = freeze(cfg)
    t = cfg.trainer
    _check_run(cfg)
    problem = build_problem(cfg)
    cfg = dataclasses.replace(cfg, probe=fit_probe(cfg.probe, problem))
    length = chunk_length(cfg)
    if t.snapshot_every % length:
        raise ConfigError(
            "trainer.snapshot_every", t.snapshot_every, f"a multiple of the chunk ({length} steps)"
        )
    probe_fn = make_probe_fn(cfg, problem)
    trainer = make_train(problem, cfg.trainer, probe_fn)
    seed_ids = list(range(t.seed, t.seed + t.seeds))

    resuming = t.resume and (run_dir / SUMMARY_FILE).exists()
    if resuming:
        check_same_config(json.loads((run_dir / SUMMARY_FILE).read_text())["config"], record)
    if not claimed:
        claim_run_dir(run_dir, resume=t.resume, overwrite=t.overwrite, key="run_dir")
    writer = RunWriter(run_dir)
    _record_config(record, run_dir)
    checkpoints = Checkpoints(run_dir, keep=t.keep_checkpoints)
    divergence = Divergence(t.seeds, t.blowup, t.diverged_ratio)
    recorded_after = [False] * t.seeds
    train = jax.device_put(problem.data.train)
    test = jax.device_put(problem.data.test)
    probe_data = jax.device_put(probe_batch(cfg, problem))
    summary = {
        "status": "running",
        "steps_completed": 0,
        "steps": t.steps,
        "seeds": seed_ids,
        "n_params": problem.param_count,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "versions": versions(),
        "config": record,
    }
    done, first_chunk_s, stop = 0, None, None
    t_train = time.perf_counter()

    def heartbeat(**changes) -> None:
        summary.update(changes, heartbeat=time.time())
        writer.write_summary(summary)

    def snapshot(state, step) -> None:
        """The parameters at `step` into snapshots/ (trainer.snapshot_every; the final step too)."""
        if t.snapshot_every and (step % t.snapshot_every == 0 or step == t.steps):
            save_snapshot(run_dir, step, jax.device_get(state.params))

    def checkpoint(state, step) -> None:
        host = {
            "steps_completed": step,
            "divergence": divergence.state(),
            "recorded_after": recorded_after,
        }
        checkpoints.save(step, _state_tree(state), host)

    try:
        state = trainer.init(seed_keys(t.seed, t.seeds))
        if resuming:
            step = checkpoints.latest_step()
            if step is None:
                raise ConfigError(
                    "trainer.resume", True, f"a run with a checkpoint ({run_dir} has none)"
                )
            tree, host = checkpoints.restore(step, like=_state_tree(state))
            state, done = _from_tree(tree), int(host["steps_completed"])
            divergence.restore(host["divergence"])
            recorded_after = list(host["recorded_after"])
            writer.restore(done)
            summary["resumed_from"] = done
        else:
            snapshot(state, 0)
        if not resuming and trainer.probe is not None:
            state, probe = trainer.probe(state, probe_data)
            writer.probes.append(probe_rows(probe, 0, seed_ids, divergence, writer, recorded_after))
            writer.flush()
        heartbeat(steps_completed=done)

        def dispatch(state, start):
            n = min(length, t.steps - start)
            layout = chunk_layout(n, t.log_every, last=start + n == t.steps)
            return trainer.chunk(state, train, test, probe_data, layout), start, n, layout

        with StopOnSignals() as stop, _progress(t.progress, t.steps) as update:
            pending = dispatch(state, done) if done < t.steps else None
            tic = time.perf_counter()
            while pending is not None:
                (state, out), start, n, layout = pending
                done = start + n
                due = t.checkpoint_every and (done // length) % t.checkpoint_every == 0
                # the next chunk computes while this one's files are written
                pending = None
                if done < t.steps and not due and stop.requested is None:
                    pending = dispatch(state, done)
                losses = np.asarray(out["loss"])
                divergence.update(losses, start)
                logged = logged_steps(start, layout, t.log_every)
                writer.metrics.append(metric_rows(out, logged, start, seed_ids, divergence))
                if "probe" in out:
                    writer.probes.append(
                        probe_rows(out["probe"], done, seed_ids, divergence, writer, recorded_after)
                    )
                writer.flush()
                snapshot(state, done)
                elapsed, tic = time.perf_counter() - tic, time.perf_counter()
                first_chunk_s = first_chunk_s or elapsed
                heartbeat(steps_completed=done)
                last = losses[:, -1][np.isfinite(losses[:, -1])]
                update(
                    completed=done,
                    loss=f"{last.mean():.4g}" if last.size else "nan",
                    rate=f"{n / elapsed:,.0f}",
                )
                if divergence.all:
                    summary["status"] = "diverged"
                    break
                if stop.requested is not None:
                    summary.update(status="interrupted", signal=stop.requested.name)
                    checkpoint(state, done)
                    break
                if due and done < t.steps:
                    checkpoint(state, done)
                if pending is None and done < t.steps:
                    pending = dispatch(state, done)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what the files hold
        summary.update(status="interrupted", signal="SIGINT")
    except Exception as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        writer.flush()
        summary.update(_timing(done, t_train, first_chunk_s, t_start))
        heartbeat()
        checkpoints.close()
        raise
    summary.update(_timing(done, t_train, first_chunk_s, t_start))
    if summary["status"] == "running":
        divergence.settle(done)
        summary["status"] = "diverged" if divergence.all else "completed"
    summary["diverged_seeds"] = [seed for s, seed in enumerate(seed_ids) if divergence.step[s] >= 0]
    summary["diverged_at"] = [int(v) for v in divergence.step if v >= 0]
    if summary["status"] in ("completed", "diverged"):
        summary.update(_final_figures(trainer, state, train, test, seed_ids, divergence))
        if t.save_params:
            checkpoint(state, done)
    checkpoints.close()
    summary["warnings"] = _probe_warnings(writer)
    summary = diagnose_run(run_dir, cfg.detect, summary, print_table=t.progress)
    summary["wall_time_s"] = time.perf_counter() - t_start
    heartbeat()
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


def _probe_warnings(writer: RunWriter) -> list[str]:
    """Probes whose top Ritz pair has not converged (residual > 1% of |lambda_max|)."""
    path = writer.probes.path
    if not path.exists():
        return []
    probes = pd.read_parquet(path, columns=None)
    if "res_top_1" not in probes or "lambda_max" not in probes:
        return []
    ratio = probes["res_top_1"].abs() / probes["lambda_max"].abs().clip(lower=1e-30)
    worst = ratio.idxmax() if ratio.notna().any() else None
    if worst is None or ratio[worst] <= 1e-2:
        return []
    return [
        f"probe: the top Ritz pair has residual {probes['res_top_1'][worst]:.3g} "
        f"({ratio[worst]:.0%} of |lambda_max|) at step {int(probes['step'][worst])}: "
        "raise probe.lanczos_steps"
    ]


def _final_figures(trainer, state, train, test, seed_ids, divergence) -> dict:
    figures = {}
    for prefix, data in (("final_", train), ("final_test_", test)):
        if not data:
            continue
        values = {k: np.asarray(v) for k, v in trainer.evaluate(state.params, data).items()}
        for k, v in values.items():
            alive = [v[s] for s in range(len(seed_ids)) if divergence.step[s] < 0]
            figures[f"{prefix}{k}"] = float(np.mean(alive)) if alive else float("nan")
            figures[f"{prefix}{k}_per_seed"] = v.tolist()
    if not train:  # a model that is its own loss (a surface): where the run ended
        leaves = jax.tree_util.tree_leaves(state.params)
        point = np.concatenate([np.asarray(v).reshape(len(seed_ids), -1) for v in leaves], 1)
        figures["final_point"] = point.tolist()
        loss = np.asarray(trainer.evaluate(state.params, {})["loss"])
        figures["final_loss"] = float(np.mean(loss))
        figures["final_loss_per_seed"] = loss.tolist()
    return figures
