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
import numpy as np
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
    # the runner's chunk: (state, train, test, probe_batch, lengths, capacity, hyper=None)
    # -> (state, records of every segment, padded); `unpack(records, lengths)` keeps the
    # chunk's own. `chunk` is this program for one fixed layout, unpacked.
    program: Callable
    probe: Callable | None  # (state, probe_batch, hyper=None) -> (state, probe records)
    evaluate: Callable  # (params, (data, ...), hyper) -> a dict of (seeds,) arrays per data


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

    def run_segment(carry, length, hyper, train, test, width: int):
        """`length` steps (at most `width`) from a log step: held-out evaluation and full
        records for the first, only the loss (for divergence checks) for the others, written
        into the chunk's loss buffer at `offset`. The plain steps are a scan of a fixed
        `width - 1` steps, those past `length` masked (their state and loss discarded): a
        loop whose trip count is data costs a device-to-host read per step on a GPU."""
        state, losses, offset = carry
        evaluation = held_out(state.params, hyper, test)
        state, record = train_step(state, hyper, train, log=True)
        losses = losses.at[offset].set(record["loss"])

        def unlogged(inner, i):
            state, losses = inner
            stepped, rest = train_step(state, hyper, train, log=False)
            live = i < length
            state = jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), stepped, state)
            at = jnp.where(live, offset + i, losses.shape[0])  # past the end: dropped
            return (state, losses.at[at].set(rest["loss"], mode="drop")), None

        (state, losses), _ = jax.lax.scan(unlogged, (state, losses), jnp.arange(1, width))
        return (state, losses, offset + length), (evaluation, record)

    def chunk(state, hyper, train, test, probe_batch, lengths, capacity: int):
        """Segments of `lengths` steps, each logging its first step (a segment of 0 steps is
        skipped), then a probe if probes are on.

        The lengths are an input, so every chunk of a run (its last, shorter ones, and the
        step-0 probe: all lengths 0) runs one program, which traces the logged step and the
        plain step once each (a layout fixed in the program traced them once per distinct
        segment length: a run compiled 1.8x longer). Returns records with a leading axis per
        segment (`log`: the step's norms and metrics, `eval`: held-out figures; a skipped
        segment's are zeros) and `loss`, every step's loss in a buffer of `capacity` steps
        (the first `sum(lengths)` are the chunk's). `unpack` keeps the chunk's own.
        """
        width = min(log_every, capacity)  # the longest segment
        seen = []  # the records' shapes, for a skipped segment's zeros

        def at(carry, length):
            carry, records = run_segment(carry, length, hyper, train, test, width)
            seen.append(
                jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), records)
            )
            return carry, records

        def skip(carry, length):
            # `cond` traces the segment first (jax 0.4-0.10): its records' shapes are known
            # without tracing the step again (~20% of the chunk's trace), else traced here
            records = seen[-1] if seen else jax.eval_shape(lambda c: at(c, length)[1], carry)
            return carry, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), records)

        losses = jnp.zeros((capacity,), jnp.result_type(float))  # float32, float64 with x64
        carry = (state, losses, jnp.zeros((), jnp.int32))

        def segment(carry, length):
            return jax.lax.cond(length > 0, at, skip, carry, length)

        (state, losses, _), (evaluations, logs) = jax.lax.scan(segment, carry, lengths)
        out = {"log": logs, "eval": evaluations, "loss": losses}
        if probe_fn is not None:
            state, out["probe"] = run_probe(state, hyper, probe_batch)
        return state, out

    seeds = trainer_cfg.seeds if rows is None else rows
    batched_chunk = over_seeds(chunk, seeds, in_axes=(0, 0, None, None, None, None, None))
    batched_probe = over_seeds(run_probe, seeds, in_axes=(0, 0, None))
    batched_init = over_seeds(init, seeds, in_axes=(0, 0))

    def compiled_chunk(state, train, test, probe_batch, lengths, capacity, hyper=None):
        return batched_chunk(state, hyper or {}, train, test, probe_batch, lengths, capacity)

    program = jax.jit(compiled_chunk, static_argnums=5)

    def chunk_entry(state, train, test, probe_batch, layout, hyper=None):
        lengths = segments(layout, log_every)  # constants of this program
        state, out = compiled_chunk(
            state, train, test, probe_batch, jnp.asarray(lengths), sum(lengths), hyper
        )
        return state, unpack(out, lengths)

    def probe_entry(state, probe_batch, hyper=None):
        return batched_probe(state, hyper or {}, probe_batch)

    def init_entry(keys, hyper=None):
        return batched_init(keys, hyper or {})

    def metrics_at(params, hyper, data):
        return problem.at(hyper).metrics(params, data)

    batched_metrics = over_seeds(metrics_at, seeds, in_axes=(0, 0, None))

    def evaluate_entry(params, datasets, hyper=None):
        """The metrics of `params` on each of `datasets`: one program for all of them."""
        return tuple(batched_metrics(params, hyper or {}, data) for data in datasets)

    return Trainer(
        init=jax.jit(init_entry),
        chunk=jax.jit(chunk_entry, static_argnums=4),
        # no donation: the host keeps a chunk's state (to checkpoint) while the next one runs
        program=program,
        probe=jax.jit(probe_entry) if probe_fn is not None else None,
        evaluate=jax.jit(evaluate_entry),
    )


def segments(layout, log_every: int) -> tuple[int, ...]:
    """Segment lengths of a chunk `layout`: `(n, tails)` (`lossbench.prepared.chunk_layout`:
    `n` segments of `log_every` steps, then the `tails`) or a plain number of steps."""
    if isinstance(layout, int):  # n steps, from a log step
        n_intervals, tail = divmod(layout, log_every)
        layout = (n_intervals, (tail,) if tail else ())
    n_intervals, tails = layout
    return (log_every,) * n_intervals + tuple(tails)


def unpack(out: dict, lengths) -> dict:
    """A chunk's own records from the compiled chunk's (rows first): the segments with steps
    (they come first) and the losses of its steps."""
    lengths = np.asarray(lengths)
    segments_run, steps = int(np.count_nonzero(lengths)), int(lengths.sum())
    keep = lambda a: a[:, :segments_run]  # noqa: E731
    return {
        **out,
        "log": jax.tree_util.tree_map(keep, out["log"]),
        "eval": jax.tree_util.tree_map(keep, out["eval"]),
        "loss": out["loss"][:, :steps],
    }


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


__all__ = ["TrainState", "Trainer", "make_train", "seed_keys", "segments", "unpack"]
