"""The pure, compiled training loop (purejaxrl style: `make_train` returns pure functions).

A chunk is a `lax.scan` over training steps (minibatches drawn inside the compiled code),
evaluated on held-out data at every `trainer.log_every`-th step, and, when probes are on,
followed by one curvature probe, all in one compiled call. Rows run together under
`jax.vmap` (a leading row axis on the state): the seeds of a run, or the jobs x seeds of a
fused sweep, each row with its own values of the traced hyperparameters (`hyper`: dotted
config path -> one value per row, see `Problem.at`). The host touches results once per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lossbench.problem import Problem


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    probe_vector: Any  # last probe's top eigenvector (warm start), or None


@dataclass(frozen=True)
class Trainer:
    """Compiled, seed-vmapped entry points. Arrays live on device between calls."""

    init: Callable  # (row_keys, hyper=None) -> TrainState with a leading row axis
    chunk: Callable  # (state, train, test, probe_batch, layout, hyper=None) -> (state, records)
    probe: Callable | None  # (state, probe_batch, hyper=None) -> (state, probe records)
    evaluate: Callable  # (params, batch) -> dict of (seeds,) arrays


def _sampler(batch_size: int | None):
    if batch_size is None:
        return lambda key, train: train

    def sample(key, train):
        n = jax.tree_util.tree_leaves(train)[0].shape[0]
        idx = jax.random.choice(key, n, (batch_size,), replace=False)
        return jax.tree_util.tree_map(lambda a: a[idx], train)

    return sample


def make_train(
    problem: Problem,
    trainer_cfg,
    probe_fn: Callable | None = None,
    rows: int | None = None,
    probe_for: Callable[[Problem], Callable] | None = None,
) -> Trainer:
    """Pure training functions for `problem`.

    Args:
      problem: what to train (pure loss, predict, init, optimizer).
      trainer_cfg: the frozen `trainer` config (batch_size, log_every, eval).
      probe_fn: `probe(params, batch, key, v0) -> (record, v_next)` from
        `lossbench.curvature.make_probe`, or None for no probes.
      rows: the length of the row axis (default `trainer_cfg.seeds`).
      probe_for: `problem -> probe_fn`, the probe of the problem at a row's traced values
        (a fused sweep over `loss.*`: the probed loss is the row's own).
    """
    sample = _sampler(trainer_cfg.batch_size if problem.data.train else None)  # no data: none
    log_every = trainer_cfg.log_every
    evaluate_test = trainer_cfg.eval and bool(problem.data.test)

    def init(key, hyper):
        k_params, k_train = jax.random.split(key)
        at = problem.at(hyper)
        params = at.init_params(k_params)
        # a zero vector means a cold (random) start for the first probe's Lanczos run
        vector = jax.tree_util.tree_map(jnp.zeros_like, params) if probe_fn is not None else None
        opt_state = at.optimizer.tx.init(params)
        return TrainState(params, opt_state, k_train, jnp.zeros((), jnp.int32), vector)

    def train_step(state: TrainState, hyper, train, log: bool):
        """One optimizer step; on a log step (`log`) also the norms and metrics of it."""
        at = problem.at(hyper)  # the row's own optimizer and loss (fused sweeps)
        optimizer = at.optimizer
        key, k_batch, k_opt = jax.random.split(state.key, 3)
        batch = sample(k_batch, train)
        grad_of = jax.value_and_grad(at.loss_and_outputs, has_aux=True)
        (value, outputs), grads = grad_of(state.params, batch)
        updates, opt_state = optimizer.tx.update(
            grads,
            state.opt_state,
            state.params,
            key=k_opt,
            value_fn=lambda p: at.loss(p, batch),
            grad_fn=lambda p, _: jax.grad(at.loss)(p, batch),
        )
        params = optax.apply_updates(state.params, updates)
        new_state = state._replace(params=params, opt_state=opt_state, key=key, step=state.step + 1)
        if not log:
            return new_state, {"loss": value}
        record = {
            "loss": value,
            "grad_norm": optax.global_norm(grads),
            "update_norm": optax.global_norm(updates),
            "param_norm": optax.global_norm(state.params),
            "lr": jnp.asarray(optimizer.schedule(state.step), jnp.float32),
            **at.output_metrics(outputs, batch),
        }
        record.update(problem.step_metrics(state.params))  # the model's own (x_0, x_1, ...)
        return new_state, record

    def logged_steps(state, hyper, train, test, n):
        """`n` steps from a log step: held-out evaluation and full records for the first,
        only the loss (for divergence checks) for the others."""
        evaluation = held_out(state.params, hyper, test)
        state, record = train_step(state, hyper, train, log=True)
        state, rest = jax.lax.scan(
            lambda s, _: train_step(s, hyper, train, log=False), state, None, length=n - 1
        )
        losses = jnp.concatenate([record["loss"][None], rest["loss"]])
        return state, (evaluation, record, losses)

    def held_out(params, hyper, test):
        if not evaluate_test:
            return {}
        return {f"test_{k}": v for k, v in problem.at(hyper).metrics(params, test).items()}

    def run_probe(state, hyper, probe_batch):
        key, k_probe = jax.random.split(state.key)
        at = problem.at(hyper)
        probe = probe_for(at) if probe_for is not None and hyper else probe_fn
        record, vector = probe(state.params, probe_batch, k_probe, state.probe_vector)
        opt = at.optimizer
        record = {
            **record,
            "two_over_lr": jnp.asarray(opt.two_over_lr(state.step), jnp.float32),
            "eos_threshold": jnp.asarray(opt.eos_threshold(state.step), jnp.float32),
        }
        return state._replace(key=key, probe_vector=vector), record

    def chunk(state, hyper, train, test, probe_batch, layout: tuple[int, tuple[int, ...]]):
        """Steps in segments that each log their first step, then a probe if probes are on.

        `layout = (n, tails)`: `n` segments of `log_every` steps, then segments of the
        lengths in `tails` (a chunk's remainder; the run's last step as a segment of its own,
        so it is always logged); a plain number of steps is split the regular way. Returns
        records with a leading axis per log step (`log`: the step's norms and metrics,
        `eval`: held-out figures) and `loss`, every step's loss.
        """
        if isinstance(layout, int):  # n steps, from a log step
            n_intervals, tail = divmod(layout, log_every)
            layout = (n_intervals, (tail,) if tail else ())
        n_intervals, tails = layout
        state, (evaluations, logs, losses) = jax.lax.scan(
            lambda s, _: logged_steps(s, hyper, train, test, log_every),
            state,
            None,
            length=n_intervals,
        )
        losses = losses.reshape(-1)
        glue = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
        for tail in tails:
            state, (last_eval, last_log, tail_losses) = logged_steps(
                state, hyper, train, test, tail
            )
            evaluations = jax.tree_util.tree_map(glue, evaluations, last_eval)
            logs = jax.tree_util.tree_map(glue, logs, last_log)
            losses = jnp.concatenate([losses, tail_losses])
        out = {"log": logs, "eval": evaluations, "loss": losses}
        if probe_fn is not None:
            state, out["probe"] = run_probe(state, hyper, probe_batch)
        return state, out

    seeds = trainer_cfg.seeds if rows is None else rows
    batched_chunk = over_seeds(chunk, seeds, in_axes=(0, 0, None, None, None, None))
    batched_probe = over_seeds(run_probe, seeds, in_axes=(0, 0, None))
    batched_init = over_seeds(init, seeds, in_axes=(0, 0))

    def chunk_entry(state, train, test, probe_batch, layout, hyper=None):
        return batched_chunk(state, hyper or {}, train, test, probe_batch, layout)

    def probe_entry(state, probe_batch, hyper=None):
        return batched_probe(state, hyper or {}, probe_batch)

    def init_entry(keys, hyper=None):
        return batched_init(keys, hyper or {})

    def metrics_at(params, hyper, data):
        return problem.at(hyper).metrics(params, data)

    batched_metrics = over_seeds(metrics_at, seeds, in_axes=(0, 0, None))

    def evaluate_entry(params, data, hyper=None):
        return batched_metrics(params, hyper or {}, data)

    return Trainer(
        init=jax.jit(init_entry),
        # no donation: the host keeps a chunk's state (to checkpoint) while the next one runs
        chunk=jax.jit(chunk_entry, static_argnums=4),
        probe=jax.jit(probe_entry) if probe_fn is not None else None,
        evaluate=jax.jit(evaluate_entry),
    )


def over_seeds(fn: Callable, seeds: int, in_axes: tuple) -> Callable:
    """`jax.vmap(fn)` over the leading seed axis; for one seed, index it away instead (a vmap
    of size 1 costs ~9% of a small model's step on CPU, measured in benchmarks/)."""
    if seeds > 1:
        return jax.vmap(fn, in_axes=in_axes)

    def single(*args):
        args = [
            jax.tree_util.tree_map(lambda a: a[0], arg) if axis == 0 else arg
            for arg, axis in zip(args, in_axes, strict=True)
        ]
        return jax.tree_util.tree_map(lambda a: a[None], fn(*args))

    return single


def seed_keys(seed: int, seeds: int) -> jax.Array:
    """One PRNG key per seed: seed, seed + 1, ... (so seed s is the same run in any sweep)."""
    return jax.vmap(jax.random.key)(jnp.arange(seed, seed + seeds))


__all__ = ["TrainState", "Trainer", "make_train", "seed_keys"]
