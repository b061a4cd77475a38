"""lossbench's compiled training loop against a hand-written `lax.scan` optax loop.

Same model (the default MLP on digits), same loss, same optimizer, same batch sampling, in one
process, timed alternately. lossbench's chunk also logs norms, accuracy and the learning rate
every step and evaluates the held-out set every `log_every` steps; the hand-written loop only
trains. Writes `benchmarks/loop_overhead.md` (ratios; absolute times on a shared CPU are noise).

    python benchmarks/loop_overhead.py [--steps 500] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossbench import compose
from lossbench.problem import build_problem
from lossbench.schema import freeze
from lossbench.train import make_train, seed_keys

HERE = Path(__file__).resolve().parent


def hand_written_loop(problem, batch_size, steps):
    """The loop a researcher would write: scan over optax steps, nothing recorded but loss."""
    tx = optax.adam(1e-3)
    x, y = jnp.asarray(problem.data.train["x"]), jnp.asarray(problem.data.train["y"])
    n = x.shape[0]
    apply = problem.model.apply

    def loss_fn(params, xb, yb):
        logits = apply(params, xb)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, _):
        params, opt_state, key = carry
        key, k_batch = jax.random.split(key)
        if batch_size is None:
            xb, yb = x, y
        else:
            idx = jax.random.choice(k_batch, n, (batch_size,), replace=False)
            xb, yb = x[idx], y[idx]
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    @jax.jit
    def run(params, opt_state, key):
        return jax.lax.scan(step, (params, opt_state, key), None, length=steps)

    params = problem.init_params(jax.random.key(0))
    return lambda: run(params, tx.init(params), jax.random.key(1))


def lossbench_loop(problem, trainer_cfg, steps):
    trainer = make_train(problem, trainer_cfg)
    train = jax.device_put(problem.data.train)
    test = jax.device_put(problem.data.test)

    def go():
        state = trainer.init(seed_keys(0, 1))
        return trainer.chunk(state, train, test, {}, steps)

    return go


def timed(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tic)
    return np.array(times)


def measure(batch_size, steps, repeats, evaluate=True):
    cfg = freeze(
        compose(
            "probe=off",
            "trainer.progress=false",
            f"trainer.batch_size={batch_size or 'null'}",
            f"trainer.eval={str(evaluate).lower()}",
        )
    )
    problem = build_problem(cfg)
    ours = lossbench_loop(problem, cfg.trainer, steps)
    theirs = hand_written_loop(problem, batch_size, steps)
    jax.block_until_ready((ours(), theirs()))
    t_ours, t_theirs = [], []
    for _ in range(repeats):  # alternate, so load on the machine hits both alike
        t_ours.append(timed(ours, 1)[0])
        t_theirs.append(timed(theirs, 1)[0])
    ours_rate = steps / np.median(t_ours)
    theirs_rate = steps / np.median(t_theirs)
    return {
        "batch": "full (1438)" if batch_size is None else str(batch_size),
        "held-out eval": f"every {cfg.trainer.log_every} steps" if evaluate else "off",
        "params": problem.param_count,
        "lossbench steps/s": ours_rate,
        "hand-written steps/s": theirs_rate,
        "ratio": ours_rate / theirs_rate,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = [
        measure(b, args.steps, args.repeats, evaluate)
        for b in (128, None)
        for evaluate in (True, False)
    ]
    lines = [
        "# Loop overhead: lossbench chunk vs hand-written lax.scan optax loop",
        "",
        f"Default MLP on digits, Adam, {args.steps} steps per call, median of {args.repeats} "
        f"alternating repeats, device: {jax.devices()[0].device_kind}. "
        "Target: ratio >= 0.95.",
        "",
        "lossbench also records grad/update/param norms, accuracy and lr every step; with "
        "held-out eval on it also evaluates the test split (359 samples) every log step, work "
        "the hand-written loop does not do.",
        "",
        "| batch | held-out eval | params | lossbench steps/s | hand-written steps/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['held-out eval']} | {r['params']} | "
            f"{r['lossbench steps/s']:.0f} | "
            f"{r['hand-written steps/s']:.0f} | {r['ratio']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (HERE / "loop_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
