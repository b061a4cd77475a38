"""The host loop: build, train chunk by chunk, write files as it goes, diagnose, summarise.

No Hydra here: `run(cfg, run_dir)` takes a config object (the schema dataclasses, or their
frozen twins) so notebooks and tests can call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from lossbench.diagnosis import diagnose_run
from lossbench.errors import ConfigError
from lossbench.problem import Problem, build_problem
from lossbench.results import RunWriter, versions
from lossbench.schema import freeze
from lossbench.train import make_train, seed_keys


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


def make_probe_fn(cfg, problem: Problem):
    """The in-loop probe for `cfg.probe`, or None when probes are off."""
    if cfg.probe.every == 0:
        return None
    from lossbench.curvature import make_probe

    _check_probe(cfg.probe, problem)
    # check_probe_config raises ConfigError itself
    return make_probe(cfg.probe, problem.loss, problem.predict, problem.loss_on_outputs)


def _check_probe(p, problem: Problem):
    """Checks that need the problem; `curvature.check_probe_config` does the rest."""
    n = problem.param_count
    if not 1 <= p.lanczos_steps <= n:
        raise ConfigError("probe.lanczos_steps", p.lanczos_steps, f"in [1, {n}] (the parameters)")
    for key in ("top_k", "bottom_k"):
        k = getattr(p, key)
        if not 0 <= k <= p.lanczos_steps:
            raise ConfigError(f"probe.{key}", k, f"in [0, probe.lanczos_steps={p.lanczos_steps}]")
    if p.top_k < 1:
        raise ConfigError("probe.top_k", p.top_k, "at least 1")
    if p.curvature == "ggn" and problem.loss_name == "none":
        raise ConfigError("probe.curvature", "ggn", "'hessian' on models that are their own loss")
    if p.batch_size is not None and not 0 < p.batch_size <= problem.data.n_train:
        raise ConfigError(
            "probe.batch_size", p.batch_size, f"null or in [1, {problem.data.n_train}]"
        )


def probe_batch(cfg, problem: Problem) -> dict:
    """The whole training set, or a fixed subset drawn once from the run's seed."""
    train = problem.data.train
    size = cfg.probe.batch_size
    if size is None or not train:
        return train
    rng = np.random.default_rng(cfg.trainer.seed)
    idx = rng.choice(problem.data.n_train, size, replace=False)
    return {k: v[idx] for k, v in train.items()}


class _Divergence:
    """Tracks, per seed, the first step whose loss is non-finite or blew up."""

    def __init__(self, seeds: int, blowup: float):
        self.blowup = blowup
        self.scale = np.full(seeds, np.nan)
        self.step = np.full(seeds, -1, dtype=np.int64)

    def update(self, losses: np.ndarray, start: int) -> None:
        """`losses` is (seeds, steps) for steps start, start + 1, ..."""
        for s, row in enumerate(losses):
            if np.isnan(self.scale[s]) and np.isfinite(row[0]):
                self.scale[s] = max(1.0, abs(row[0]))
            if self.step[s] >= 0:
                continue
            bad = ~np.isfinite(row) | (np.abs(row) > self.blowup * self.scale[s])
            if bad.any():
                self.step[s] = start + int(np.argmax(bad))

    @property
    def all(self) -> bool:
        return bool(np.all(self.step >= 0))

    def alive(self, seed_index: int, step: int) -> bool:
        return self.step[seed_index] < 0 or step <= self.step[seed_index]


def _metric_rows(out, start, log_every, seed_ids, divergence) -> pd.DataFrame:
    """Rows of one chunk: every log step, plus the step a seed diverged at (loss only)."""
    logs = {k: np.asarray(v) for k, v in out["log"].items()}
    evals = {k: np.asarray(v) for k, v in out["eval"].items()}
    losses = np.asarray(out["loss"])
    rows = []
    for s, seed in enumerate(seed_ids):
        for i in range(logs["loss"].shape[1]):
            step = start + i * log_every
            if divergence.alive(s, step):
                row = {"step": step, "seed": seed, **{k: v[s, i] for k, v in logs.items()}}
                rows.append({**row, **{k: v[s, i] for k, v in evals.items()}})
        at = divergence.step[s] - start
        if 0 <= at < losses.shape[1] and at % log_every:
            rows.append({"step": start + at, "seed": seed, "loss": losses[s, at]})
    return pd.DataFrame(rows)


def _probe_rows(record, step, seed_ids, divergence, writer, first_probe_after) -> pd.DataFrame:
    record = {k: np.asarray(v) for k, v in record.items()}
    rows = []
    for s, seed in enumerate(seed_ids):
        if divergence.step[s] >= 0 and first_probe_after[s]:
            continue  # already recorded the probe that saw the divergence
        if divergence.step[s] >= 0:
            first_probe_after[s] = True
        row = {"step": step, "seed": seed}
        for k, v in record.items():
            if k in ("density_nodes", "density_weights"):
                continue
            row[k] = v[s]
        if "density_nodes" in record:
            writer.add_spectra(step, seed, record["density_nodes"][s], record["density_weights"][s])
        rows.append(row)
    return pd.DataFrame(rows)


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


def _record_config(cfg, run_dir: Path) -> None:
    """Outside Hydra (notebooks, tests), write the config where Hydra would: .hydra/config.yaml."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def run(cfg, run_dir: str | Path) -> dict:
    """Train as `cfg` says, writing DESIGN's files into `run_dir`. Returns the summary.

    `cfg` is the typed config (`lossbench.schema.Config`, as `OmegaConf.to_object` gives it).
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    schema_cfg, cfg = cfg, freeze(cfg)
    problem = build_problem(cfg)
    length = chunk_length(cfg)
    probe_fn = make_probe_fn(cfg, problem)
    trainer = make_train(problem, cfg.trainer, probe_fn)
    t = cfg.trainer
    seed_ids = list(range(t.seed, t.seed + t.seeds))

    writer = RunWriter(run_dir)
    _record_config(schema_cfg, run_dir)
    status, error = "completed", None
    divergence = _Divergence(t.seeds, t.blowup)
    first_probe_after = [False] * t.seeds
    train = jax.device_put(problem.data.train)
    test = jax.device_put(problem.data.test)
    probe_data = jax.device_put(probe_batch(cfg, problem))
    done = 0
    compile_and_first = None
    t_train = time.perf_counter()
    try:
        state = trainer.init(seed_keys(t.seed, t.seeds))
        if trainer.probe is not None:
            state, record = trainer.probe(state, probe_data)
            writer.probes.append(
                _probe_rows(record, 0, seed_ids, divergence, writer, first_probe_after)
            )
        with _progress(t.progress, t.steps) as update:
            while done < t.steps:
                n = min(length, t.steps - done)
                tic = time.perf_counter()
                state, out = trainer.chunk(state, train, test, probe_data, n)
                losses = np.asarray(out["loss"])
                divergence.update(losses, done)
                writer.metrics.append(_metric_rows(out, done, t.log_every, seed_ids, divergence))
                done += n
                if "probe" in out:
                    writer.probes.append(
                        _probe_rows(
                            out["probe"], done, seed_ids, divergence, writer, first_probe_after
                        )
                    )
                elapsed = time.perf_counter() - tic
                compile_and_first = compile_and_first or elapsed
                update(
                    completed=done,
                    loss=f"{np.nanmean(losses[:, -1]):.4g}",
                    rate=f"{n / elapsed:,.0f}",
                )
                if divergence.all:
                    status = "diverged"
                    break
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:  # recorded, then re-raised after the files are closed
        status, error = "failed", exc
    train_time = time.perf_counter() - t_train

    summary = {
        "status": status,
        "steps_completed": done,
        "steps": t.steps,
        "seeds": seed_ids,
        "n_params": problem.param_count,
        "diverged_seeds": [seed for s, seed in enumerate(seed_ids) if divergence.step[s] >= 0],
        "diverged_at": [int(v) for v in divergence.step if v >= 0],
        "train_time_s": train_time,
        "first_chunk_s": compile_and_first,
        "steps_per_s": done / train_time if train_time > 0 else None,
        "versions": versions(),
    }
    if error is None and status != "interrupted":
        summary.update(_final_figures(trainer, state, train, test, seed_ids, divergence))
        if t.save_params:
            writer.save_params(jax.device_get(state.params))
    writer.close()
    if error is None:
        summary = diagnose_run(run_dir, cfg.detect, summary, print_table=t.progress)
    summary["wall_time_s"] = time.perf_counter() - t_start
    if error is not None:
        summary["error"] = f"{type(error).__name__}: {error}"
    writer.write_summary(summary)
    if error is not None:
        raise error
    return summary


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
