"""Core: every option composes and trains; runs are reproducible; training lowers the loss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, compose_config, hydra_session, run_overrides

import lossbench
from lossbench.problem import build_problem
from lossbench.schema import freeze, implied, registries


def options(group: str) -> list[str]:
    """The options of a group, as `group=name` selects them."""
    registry = registries()[group]
    return [name for name in registry if getattr(registry[name], "trainable", True)]


NETWORK_MODELS = ["cnn", "deep_linear", "linear", "mlp"]
# Every step logged where the cadence is not under test: the run's chunk is then one segment,
# compiled once (with log_every > 1 the last chunk's layout holds the logged step three times:
# the scan's, the remainder's and the final step's; ~1/3 the compiling, measured).
ONE_SEGMENT = ["trainer.log_every=1"]
NETWORK_INITS = [name for name in options("init") if name != "point"]


def test_option_lists_are_complete():
    assert set(NETWORK_MODELS) <= set(options("model"))
    assert {"gd", "sgd", "adam", "adamw", "rmsprop", "adagrad", "lion"} <= set(options("optimizer"))
    assert len(NETWORK_INITS) >= 14


@pytest.fixture(scope="module")
def option_configs():
    """Every init and every optimizer, each composed once (test_registry checks each option's
    keys); the product swaps them into each model's composed config. None of them selects an
    option of another group, so the swap is what composing `model=M init=I` would give."""
    names = {"init": NETWORK_INITS, "optimizer": options("optimizer")}
    inits, optimizers = {}, {}
    with hydra_session() as compose:  # an init and an optimizer per composition: half the calls
        for i in range(max(map(len, names.values()))):
            chosen = {group: among[i % len(among)] for group, among in names.items()}
            cfg = compose([f"{group}={name}" for group, name in chosen.items()])
            inits[chosen["init"]], optimizers[chosen["optimizer"]] = cfg.init, cfg.optimizer
    assert list(inits) == names["init"] and sorted(optimizers) == sorted(names["optimizer"])
    for group, chosen in (("init", inits), ("optimizer", optimizers)):
        assert not any(implied(group, registries()[group][name]) for name in chosen), group
    return inits, optimizers


# Cells of the product that train for real; the rest are traced (`jax.eval_shape`) only. Adam,
# the default optimizer, trains every model through the runner (test_the_runner_trains_every_model).
TRAINED_ON_EVERY_MODEL = ("sgd",)
TRAINED_WITH_EVERY_OPTIMIZER = "mlp"  # the cheapest network to compile


@pytest.mark.slow
@pytest.mark.xdist_group("core_product")  # the options composed once
@pytest.mark.parametrize("model", NETWORK_MODELS)
def test_every_model_init_optimizer_builds_and_a_few_train(model, option_configs):
    """The full product, cheaply. Every init's weights are drawn and checked. Every optimizer's
    compiled chunk is traced with `jax.eval_shape` (state and records keep their shapes and
    dtypes; nothing compiles). A few cells train 4 steps, all inits at once (one row each):
    sgd on every model, every optimizer on the MLP; each row's figures are finite, at every
    step (`ONE_SEGMENT`: a segment a step, compiled ~0.8x the CPU of 2-step segments, sam's
    chunk on the MLP). Minibatches of 8 and no held-out evaluation (its records are not read
    here): running the trained CNN cell took ~3 CPU-s at batch 64 and is nearly free at 8."""
    import jax

    from lossbench.initializers import make_init
    from lossbench.optimizers import make_optimizer
    from lossbench.train import TrainState, make_train

    inits, optimizers = option_configs
    base = compose_config(
        [
            f"model={model}",
            "probe=off",
            *ONE_SEGMENT,
            "trainer.batch_size=8",
            "trainer.eval=false",
            *(["model.widths=[16]"] if model == "mlp" else []),  # only the MLP has widths
        ]
    )

    def cell(init: str, optimizer: str, rows: int = 1):
        trainer = dataclasses.replace(base.trainer, seeds=rows)
        return freeze(
            dataclasses.replace(
                base, init=inits[init], optimizer=optimizers[optimizer], trainer=trainer
            )
        )

    # One problem (data, model) for the model: the inits and optimizers are made from it as
    # build_problem makes them (no loss parameters here), not by building it again per cell.
    problem = build_problem(cell(NETWORK_INITS[0], "sgd"))
    draws = [make_init(inits[init], problem.model) for init in NETWORK_INITS]
    # every init's weights in one program (drawn op by op, each op compiled on its own: ~3x)
    weights = jax.jit(lambda key: [draw(key) for draw in draws])(jax.random.key(0))
    for init, params in zip(NETWORK_INITS, weights, strict=True):
        kernels = [
            np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
            if "kernel" in jax.tree_util.keystr(path)
        ]
        assert kernels, init
        if init == "zeros":
            assert all(np.all(k == 0) for k in kernels)
        else:
            assert all(np.std(k) > 0 for k in kernels), init
    every_init = jax.tree_util.tree_map(lambda *a: np.stack(a), *weights)  # one row per init

    trained = set(optimizers) if model == TRAINED_WITH_EVERY_OPTIMIZER else TRAINED_ON_EVERY_MODEL
    train, test = jax.device_put(problem.data.train), jax.device_put(problem.data.test)
    for name in optimizers:
        rows = len(weights) if name in trained else 1
        cfg = cell(NETWORK_INITS[0], name, rows)
        optimizer = make_optimizer(cfg.optimizer, cfg.trainer.steps)
        trainer = make_train(dataclasses.replace(problem, optimizer=optimizer), cfg.trainer)
        params = jax.tree_util.tree_map(lambda a, n=rows: a[:n], every_init)
        state = TrainState(
            params,
            jax.vmap(optimizer.tx.init)(params),
            jax.random.split(jax.random.key(1), rows),
            np.zeros(rows, np.int32),
            None,
        )
        run = trainer.chunk if name in trained else trainer.chunk.eval_shape
        new_state, out = run(state, train, test, {}, 4)
        shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
        assert shapes(new_state.params) == shapes(params), name
        assert shapes(new_state.opt_state) == shapes(state.opt_state), name
        for metric in ("loss", "grad_norm", "update_norm", "param_norm"):
            record = out["log"][metric]
            assert (record.shape, record.dtype) == ((rows, 4), np.float32), (name, metric)
            if name in trained:
                finite = np.isfinite(np.asarray(record)).all(axis=1)
                failing = [init for init, ok in zip(NETWORK_INITS, finite, strict=True) if not ok]
                assert not failing, (name, metric, failing)


@pytest.mark.slow
@pytest.mark.xdist_group("core_seeds")  # the MLP's run is the seed tests' first (seeded_runs)
def test_the_runner_trains_every_model(tmp_path, seeded_runs):
    runs = {"mlp": (seeded_runs["a"], 40)}  # the default model, 40 steps through the runner
    for model in NETWORK_MODELS:
        if model not in runs:
            overrides = [f"model={model}", "probe=off", "trainer.steps=6", *ONE_SEGMENT]
            overrides += ["trainer.chunk=6", "trainer.batch_size=64"]
            runs[model] = (run_overrides(tmp_path, overrides, model)[1], 6)
    assert sorted(runs) == sorted(NETWORK_MODELS)
    for model, (run_dir, steps) in runs.items():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed", model
        assert summary["config"]["model"]["name"] == model
        metrics = pd.read_parquet(run_dir / "metrics.parquet")
        assert list(metrics.step) == list(range(steps)), model
        columns = metrics[["loss", "grad_norm", "param_norm", "update_norm"]].values
        assert np.isfinite(columns).all(), model
        assert np.isfinite(summary["final_loss"]), model


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """Runs of one config, shared by the seed tests (one program: the seeds-2 run is a second
    one): seed 3 twice, seed 4, and seeds 3 and 4 together (`trainer.seeds=2`). The first is
    test_the_runner_trains_every_model's MLP run (40 steps: the step list it checks)."""
    tmp_path = tmp_path_factory.mktemp("seeds")
    overrides = ["probe=off", "trainer.steps=40", "trainer.batch_size=32", *ONE_SEGMENT]
    runs = {
        "a": [*overrides, "trainer.seed=3"],
        "b": [*overrides, "trainer.seed=3"],
        "c": [*overrides, "trainer.seed=4"],
        "both": [*overrides, "trainer.seed=3", "trainer.seeds=2"],
    }
    return {name: run_overrides(tmp_path, run, name)[1] for name, run in runs.items()}


@pytest.mark.slow
@pytest.mark.xdist_group("core_seeds")
def test_same_seed_gives_identical_metrics(seeded_runs):
    first, second, other = (seeded_runs[name] for name in ("a", "b", "c"))
    a, b, c = (pd.read_parquet(d / "metrics.parquet") for d in (first, second, other))
    pd.testing.assert_frame_equal(a, b)
    assert (first / "metrics.parquet").read_bytes() == (second / "metrics.parquet").read_bytes()
    assert not np.allclose(a.loss.values, c.loss.values)


@pytest.mark.parametrize(
    ("data", "extra", "drop"),
    [
        ("digits", ["loss=cross_entropy"], 0.9),
        ("blobs", ["loss=cross_entropy"], 0.5),
        ("teacher", ["loss=mse"], 0.5),
    ],
)
def test_training_lowers_the_loss(tmp_path, data, extra, drop):
    summary, run_dir = run_overrides(
        tmp_path,
        [
            f"data={data}",
            *extra,
            "probe=off",
            "trainer.steps=300",
            "model.widths=[32]",
            *ONE_SEGMENT,
        ],
    )
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    first, final = metrics.loss.iloc[0], summary["final_loss"]
    assert final < (1 - drop) * first, (first, final)
    assert summary["final_test_loss"] < metrics.test_loss.iloc[0]


@pytest.mark.slow  # as the test sharing its runs: kept next to it (the suite runs slow ones first)
@pytest.mark.xdist_group("core_seeds")
def test_seeds_are_vmapped_and_match_single_runs(seeded_runs):
    both = pd.read_parquet(seeded_runs["both"] / "metrics.parquet")
    single = pd.read_parquet(seeded_runs["c"] / "metrics.parquet")  # seed 4 alone
    assert sorted(both.seed.unique()) == [3, 4]
    np.testing.assert_allclose(
        both[both.seed == 4].loss.values, single.loss.values, rtol=1e-5, atol=1e-6
    )


def test_metrics_rows_and_columns(tmp_path):
    summary, run_dir = run_overrides(
        tmp_path, ["probe=off", "trainer.steps=25", "trainer.log_every=5", "trainer.chunk=10"]
    )
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.step) == [0, 5, 10, 15, 20, 24]  # and the last step
    for column in (
        "step",
        "seed",
        "loss",
        "grad_norm",
        "param_norm",
        "update_norm",
        "lr",
        "accuracy",
        "test_loss",
        "test_accuracy",
    ):
        assert column in metrics.columns
    assert metrics.test_loss.notna().all()
    assert summary["status"] == "completed" and summary["steps_completed"] == 25
    assert set(summary["versions"]) >= {"jax", "flax", "optax", "matfree", "python"}


def test_default_run_composes_to_mlp_on_digits():
    cfg = compose_config([])
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ("digits", "mlp", "cross_entropy")
    assert cfg.probe.every > 0


def test_schedules_and_clipping(tmp_path):
    composed = compose_config(
        [
            *FAST,
            "probe=off",
            "trainer.eval=false",  # the held-out figures are not read here
            "model.widths=[8]",
            "optimizer=sgd",
            "trainer.steps=20",
            "trainer.log_every=1",
            "trainer.chunk=20",
            "optimizer.schedule.name=cosine",
            "optimizer.schedule.warmup_steps=5",
            "optimizer.schedule.boundaries=[10]",
            "optimizer.clip_norm=1.0",
            "optimizer.weight_decay=1e-4",
        ]
    )
    for schedule in ("cosine", "warmup_cosine", "step"):
        # `optimizer.schedule.name=SCHEDULE` composed: the one field set (one compose, not 3)
        optimizer = composed.optimizer
        optimizer = dataclasses.replace(
            optimizer, schedule=dataclasses.replace(optimizer.schedule, name=schedule)
        )
        run_dir = tmp_path / schedule
        summary = lossbench.run(dataclasses.replace(composed, optimizer=optimizer), run_dir)
        lr = pd.read_parquet(run_dir / "metrics.parquet").lr.values
        assert summary["status"] == "completed"
        if schedule == "warmup_cosine":
            assert lr[0] == 0.0 and lr.max() == pytest.approx(0.1)
        elif schedule == "step":
            assert lr[0] == pytest.approx(0.1) and lr[-1] == pytest.approx(0.01)
        else:
            assert lr[0] == pytest.approx(0.1) and lr[-1] < lr[0]
    assert Path(run_dir).exists()


def test_regression_losses_fit_one_hot_class_targets(tmp_path):
    """The issue's example: `loss=mse data=digits` regresses one-hot targets."""
    import jax

    composed = compose_config(
        [*FAST, "loss=mse", "optimizer=sgd", "probe=off", "model.widths=[32]", "trainer.steps=300"]
        + ONE_SEGMENT
    )
    cfg = freeze(composed)
    assert cfg.data.name == "digits"
    problem = build_problem(cfg)
    params = problem.init_params(jax.random.key(0))
    outputs = problem.predict(params, problem.data.train)
    assert outputs.shape == (problem.data.n_train, 10)
    one_hot = np.eye(10)[problem.data.train["y"]]
    expected = np.mean(np.sum((np.asarray(outputs) - one_hot) ** 2, axis=1))
    np.testing.assert_allclose(float(problem.loss(params, problem.data.train)), expected, 1e-5)
    summary = lossbench.run(composed, tmp_path / "run")  # the config checked above, trained
    assert summary["final_test_accuracy"] > 0.9
