"""A task for every loss: each trainable loss trains from its CLI config with probes on.

Embedding (pairs, triplets, views), sequence (CTC) and multitask data and models
(`lossbench.tasks`), the experiment presets, label noise and outliers, and the errors for a
loss or model that does not fit the data.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import FAST, REPO, compose_config, hydra_session, run_overrides

from lossbench import losses
from lossbench.data import make_dataset
from lossbench.errors import ConfigError
from lossbench.problem import build_problem
from lossbench.schema import freeze

CONFIGS = REPO / "lossbench" / "configs"
# every trainable loss but `none` (the objective of surfaces, tested in test_surfaces.py)
TRAINABLE = sorted(
    name for name, loss in losses.LOSSES.items() if loss.trainable and loss.task != "surface"
)
PRESETS = ["metric_learning", "ctc", "multitask", "label_noise", "regression_outliers"]


# One small data / model per kind of output the loss takes.
TAKES_SETUP = {
    "logits": ["data=blobs", "data.n=256", "model=mlp"],
    "score": ["data=xor", "data.n=256", "model=mlp"],
    "values": ["data=teacher", "data.n=256", "model=mlp"],
    "pairs": ["data=digit_metric", "data.n=128", "model=embedding_mlp", "model.embed_dim=8"],
    "triplets": ["data=digit_metric", "data.n=128", "model=embedding_mlp", "model.embed_dim=8"],
    "views": ["data=digit_metric", "data.n=128", "model=embedding_mlp", "model.embed_dim=8"],
    "sequence": ["data=ctc_synthetic", "data.n=128", "model=seq_conv"],
    "heads": ["data=digits_multitask", "model=multihead_mlp", "loss.learned_weights=true"],
}
PROBES = [
    "probe=spectrum",
    "probe.every=100",
    "probe.lanczos_steps=10",
    "probe.trace_samples=4",
    "probe.batch_size=64",
]
SHORT = [
    "trainer.steps=200",
    "trainer.batch_size=null",
    "trainer.log_every=20",
    "model.widths=[32]",
    "optimizer.lr=0.01",
]


def test_every_trainable_loss_has_a_config():
    """`loss=<name>` composes to that loss, with its own keys, for every trainable loss: the
    loss cases of test_registry.py::test_every_option_composes_with_only_its_own_keys (every
    trainable option of every group), so not composed a second time here."""
    from test_registry import OPTIONS

    missing = sorted({("loss", name) for name in TRAINABLE} - set(OPTIONS))
    assert not missing, f"losses test_registry does not compose: {missing}"
    assert compose_config(["loss=cosine"]).loss.margin == 0.0  # cosine needs margin < 1


# One loss per kind of output trains end to end (runner, probes, files); the others train the
# same steps through the trainer's compiled chunk without probes, and their chunk with probes is
# traced (`jax.eval_shape`): a third of the compiling. The losses chosen here are trained by no
# other test (cross_entropy and mse are, often) and take a traced float or are non-convex.
END_TO_END = {
    "logits": "focal",
    "score": "savage",
    "values": "huber",
    "pairs": "contrastive",
    "triplets": "triplet",
    "views": "ntxent",
    "sequence": "ctc",
    "heads": "multitask",
}
TRAINED_IN_THE_CHUNK = [name for name in TRAINABLE if name not in END_TO_END.values()]


# The presets whose loss is trained end to end: that run starts from the preset (composing to
# the same config as without it: the setup above overrides every choice and size the preset
# makes), so it is also the preset's run of test_presets_compose_and_run.
PRESET_OF = {"triplet": "metric_learning", "ctc": "ctc", "multitask": "multitask"}


def _loss_overrides(loss: str) -> list[str]:
    preset = [f"experiment={PRESET_OF[loss]}"] if loss in PRESET_OF else []
    takes = losses.LOSSES[loss].properties.takes
    return [*preset, f"loss={loss}", *TAKES_SETUP[takes], *SHORT, *PROBES]


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory):
    """`loss -> (summary, run_dir)` of the loss's end-to-end run, run once (on first use)."""
    runs = {}

    def run(loss: str):
        if loss not in runs:
            runs[loss] = run_overrides(tmp_path_factory.mktemp(loss), _loss_overrides(loss))
        return runs[loss]

    return run


def test_every_kind_of_output_has_a_loss_trained_end_to_end():
    kinds = {losses.LOSSES[name].properties.takes for name in TRAINABLE}
    assert kinds == set(END_TO_END) == set(TAKES_SETUP)
    for takes, name in END_TO_END.items():
        assert losses.LOSSES[name].properties.takes == takes


def _lowers_the_loss(step_losses) -> None:
    """Every step's loss finite, the last 5% (of its size) below the first."""
    step_losses = np.asarray(step_losses)
    first, final = step_losses[0], step_losses[-1]
    assert np.isfinite(step_losses).all()
    assert final < first - 0.05 * abs(first), (first, final)


@pytest.mark.slow
@pytest.mark.xdist_group("tasks_end_to_end")
@pytest.mark.parametrize("loss", sorted(END_TO_END.values()))
def test_a_loss_of_each_kind_trains_with_probes(end_to_end, loss):
    takes = losses.LOSSES[loss].properties.takes
    summary, run_dir = end_to_end(loss)
    assert summary["status"] == "completed"
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    _lowers_the_loss([*metrics.loss, summary["final_loss"]])
    probes = pd.read_parquet(run_dir / "probes.parquet")
    assert list(probes.step) == [0, 100, 200]
    for column in ("lambda_max", "lambda_min", "trace", "trace_sem", "grad_norm"):
        assert np.isfinite(probes[column]).all(), column
    if loss == "multitask":  # learned task weights (Kendall et al. 2018) moved off zero
        for column in ("log_var_cross_entropy", "log_var_mse"):
            assert metrics[column].iloc[0] == 0.0 and abs(metrics[column].iloc[-1]) > 1e-2
    if takes == "views":
        assert {"retrieval", "test_retrieval"} <= set(metrics.columns)
    if takes == "sequence":
        assert metrics.label_error_rate.iloc[-1] < metrics.label_error_rate.iloc[0]
    if takes not in ("values",):  # every task but regression reports an accuracy
        assert {"accuracy", "test_accuracy"} <= set(metrics.columns)
        assert np.isfinite(metrics.test_accuracy.dropna()).all()


@pytest.mark.parametrize("loss", TRAINED_IN_THE_CHUNK)
def test_every_other_loss_trains_and_its_probed_chunk_traces(loss):
    """The run's problem and trainer as the CLI builds them: the chunk with probes traces to
    records of the probe's columns; the chunk without probes trains the run's 200 steps."""
    from lossbench.probing import probe_batch
    from lossbench.runner import group_trainer, prepare
    from lossbench.train import make_train, seed_keys

    job = prepare(compose_config([*FAST, *_loss_overrides(loss)]))
    problem, keys = job.problem, seed_keys(0, 1)
    train, test = problem.data.train, problem.data.test
    probed = group_trainer(job, 1)
    state = jax.eval_shape(probed.init, keys)
    _, out = jax.eval_shape(probed.chunk, state, train, test, probe_batch(job.cfg, problem), 100)
    for column in ("lambda_max", "lambda_min", "trace", "trace_sem", "grad_norm"):
        assert out["probe"][column].shape == (1,), column
    trainer = make_train(problem, job.cfg.trainer)
    _, records = trainer.chunk(trainer.init(keys), train, test, {}, job.cfg.trainer.steps)
    _lowers_the_loss(records["loss"][0])
    assert set(records["log"]) >= {"loss", "grad_norm"}
    if losses.LOSSES[loss].properties.takes != "values":
        assert {"accuracy", "test_accuracy"} <= {*records["log"], *records["eval"]}


def _choices(cfg):
    return cfg.data.name, cfg.model.name, cfg.loss.name


@pytest.mark.slow  # as the test sharing its runs: kept next to it (the suite runs slow ones first)
@pytest.mark.xdist_group("tasks_end_to_end")
@pytest.mark.parametrize("experiment", PRESETS)
def test_presets_compose_and_run(tmp_path, end_to_end, experiment):
    """A preset with an end-to-end loss run (PRESET_OF) is checked on that run (200 steps,
    logged every 20th and the last); the others run 4 steps, each logged."""
    text = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    shared = {preset: loss for loss, preset in PRESET_OF.items()}
    if experiment in shared:
        summary, run_dir = end_to_end(shared[experiment])
        logged = [*range(0, 200, 20), 199]
    else:
        overrides = [
            f"experiment={experiment}",
            "trainer.steps=4",
            "trainer.log_every=1",  # the chunk one segment (log_every=2: three, compiled each)
            "probe=off",
            "trainer.batch_size=32",
        ]
        summary, run_dir = run_overrides(tmp_path, overrides)
        logged = [0, 1, 2, 3]
    assert summary["status"] == "completed"
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.step) == logged and np.isfinite(metrics.loss).all()
    assert np.isfinite(summary["final_test_loss"])


def test_presets_pick_among_the_losses_that_fit():
    expected = {
        "metric_learning": ("digit_metric", "embedding_mlp", "triplet"),
        "ctc": ("ctc_synthetic", "seq_conv", "ctc"),
        "multitask": ("digits_multitask", "multihead_mlp", "multitask"),
        "label_noise": ("digits", "mlp", "cross_entropy"),
        "regression_outliers": ("teacher", "mlp", "mse"),
    }
    presets, under_preset = {}, {}  # the configs composed below, read again at the end
    with hydra_session() as compose:
        for experiment, choices in expected.items():
            cfg = presets[experiment] = compose([f"experiment={experiment}"])
            assert _choices(cfg) == choices
            assert cfg.probe.name == "spectrum" and cfg.probe.every > 0
            assert compose([f"experiment={experiment}", "probe=off"]).probe.every == 0
            data = make_dataset(freeze(cfg.data))
            fitting = [  # binary (score) losses need two classes
                name
                for name in losses.losses_for(data.task)
                if losses.LOSSES[name].properties.takes != "score" or data.num_classes == 2
            ]
            assert len(fitting) >= (4 if data.task in ("classification", "embedding") else 1)
            for loss in fitting:  # every fitting loss builds under the preset
                composed = (  # the preset's own loss: the config composed above
                    cfg
                    if loss == cfg.loss.name
                    else compose([f"experiment={experiment}", f"loss={loss}"])
                )
                under_preset[experiment, loss] = composed
                assert build_problem(freeze(composed)).loss_name == loss
    assert presets["label_noise"].data.label_noise == 0.4
    assert presets["regression_outliers"].data.outlier_fraction == 0.1
    assert presets["multitask"].loss.learned_weights
    assert under_preset["metric_learning", "cosine"].loss.margin == 0.0


@pytest.mark.parametrize(
    ("overrides", "fitting"),
    [
        (["data=digits", "loss=triplet"], losses.losses_for("classification")),
        (["experiment=metric_learning", "loss=cross_entropy"], losses.losses_for("embedding")),
        (["experiment=ctc", "loss=mse"], ["ctc"]),
        (["data=digits_multitask", "model=multihead_mlp", "loss=huber"], ["multitask"]),
        (["data=teacher", "loss=ctc"], losses.losses_for("regression")),
    ],
)
def test_a_loss_that_does_not_fit_names_those_that_do(overrides, fitting):
    with pytest.raises(ConfigError) as error:
        build_problem(freeze(compose_config(overrides)))
    assert error.value.key == "loss.name"
    assert str(fitting) in str(error.value)


def test_embedding_data_forms_name_the_losses_they_fit():
    cfg = compose_config(["data=digit_triplets", "model=embedding_mlp", "loss=contrastive"])
    with pytest.raises(ConfigError, match=r"\['triplet'\].*digit_metric"):
        build_problem(freeze(cfg))
    cfg = compose_config(["data=digit_pairs", "model=embedding_mlp", "loss=ntxent"])
    with pytest.raises(ConfigError, match=r"\['contrastive', 'cosine'\]"):
        build_problem(freeze(cfg))
    for data, loss in [
        ("digit_pairs", "cosine"),
        ("digit_triplets", "triplet"),
        ("digit_views", "ntxent"),
    ]:
        cfg = compose_config([f"data={data}", "model=embedding_mlp", f"loss={loss}"])
        assert build_problem(freeze(cfg)).loss_name == loss


def test_a_model_that_does_not_fit_names_those_that_do():
    with pytest.raises(ConfigError, match="embedding_mlp"):
        build_problem(freeze(compose_config(["data=digit_metric", "model=mlp"])))
    with pytest.raises(ConfigError, match=r"model.name='seq_conv'.*'mlp'"):
        build_problem(freeze(compose_config(["model=seq_conv"])))


def _dataset(overrides):
    return _composed_dataset(tuple(overrides))


@functools.cache  # the clean data sets recur (each corruption is checked against its clean one)
def _composed_dataset(overrides):
    return make_dataset(freeze(compose_config(list(overrides)).data))


@pytest.mark.parametrize("fraction", [0.1, 0.35])
def test_label_noise_flips_the_stated_fraction(fraction):
    clean = _dataset(["data=digits"])
    noisy = _dataset(["data=digits", f"data.label_noise={fraction}"])
    np.testing.assert_array_equal(clean.train["x"], noisy.train["x"])
    np.testing.assert_array_equal(clean.test["y"], noisy.test["y"])  # test labels stay clean
    flipped = np.flatnonzero(clean.train["y"] != noisy.train["y"])
    assert len(flipped) == round(fraction * clean.n_train)
    np.testing.assert_array_equal(flipped, noisy.info["corrupted"])
    # metric-learning pairs: the same-class flag flips; triplets: positive and negative swap
    clean = _dataset(["data=digit_metric", "data.n=400"])
    noisy = _dataset(["data=digit_metric", "data.n=400", f"data.label_noise={fraction}"])
    assert (clean.train["same"] != noisy.train["same"]).sum() == round(fraction * 400)
    swapped = np.any(clean.train["positive"] != noisy.train["positive"], axis=1)
    assert swapped.sum() == round(fraction * 400)
    np.testing.assert_array_equal(
        clean.train["negative"][swapped], noisy.train["positive"][swapped]
    )


@pytest.mark.parametrize("data", ["teacher", "linear_teacher"])
def test_outliers_corrupt_the_stated_fraction(data):
    clean = _dataset([f"data={data}"])
    noisy = _dataset([f"data={data}", "data.outlier_fraction=0.1", "data.outlier_scale=8"])
    hit = np.any(~np.isclose(clean.train["y"], noisy.train["y"]), axis=1)
    assert hit.sum() == round(0.1 * clean.n_train)
    np.testing.assert_array_equal(np.flatnonzero(hit), noisy.info["corrupted"])
    shift = np.abs(noisy.train["y"][hit] - clean.train["y"][hit])
    np.testing.assert_allclose(shift, 8 * clean.train["y"].std(0) * np.ones_like(shift), rtol=1e-4)
    if clean.test:
        np.testing.assert_array_equal(clean.test["y"], noisy.test["y"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data=digits", "data.label_noise=1.5"], "data.label_noise"),
        (["data=digits", "data.label_noise=-0.1"], "data.label_noise"),
        (["data=teacher", "data.outlier_fraction=2"], "data.outlier_fraction"),
    ],
)
def test_corruption_outside_zero_one_is_an_error(overrides, key):
    with pytest.raises(ConfigError) as error:
        _dataset(overrides)
    assert error.value.key == key


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=teacher", "data.label_noise=0.1"],
        ["data=digits", "data.outlier_fraction=0.1"],
        ["data=digit_views", "data.label_noise=0.1"],
        ["data=ctc_synthetic", "data.outlier_fraction=0.1"],
    ],
)
def test_corruption_where_it_cannot_act_is_not_a_key(overrides):
    """Data without labels (or targets) to corrupt has no such field: composing fails."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=overrides[1].split("=")[0]):
        compose_config(overrides)


def test_learned_multitask_weights_are_parameters():
    """log_var joins the params pytree at zero (whatever init says), counted and probed.

    That it is trained (moves off zero) is asserted by test_a_loss_of_each_kind_trains_with_probes.
    """
    cfg = freeze(compose_config(["experiment=multitask", "init.bias=0.5"]))
    problem = build_problem(cfg)
    params = jax.jit(problem.init_params)(jax.random.key(0))  # one program, not op by op
    assert set(params) == {"model", "loss"}
    np.testing.assert_array_equal(params["loss"]["log_var"], np.zeros(2))  # not init.bias
    biases = [
        leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(params["model"])[0]
        if "bias" in jax.tree_util.keystr(path)
    ]
    assert biases and all(np.all(b == 0.5) for b in biases)
    n_model = sum(np.size(a) for a in jax.tree_util.tree_leaves(params["model"]))
    assert problem.param_count == n_model + 2
    grads = jax.jit(jax.grad(problem.loss))(params, problem.data.train)
    assert np.all(np.asarray(grads["loss"]["log_var"]) != 0)
    # fixed weights: the network's parameters alone
    fixed = build_problem(
        freeze(compose_config(["experiment=multitask", "loss.learned_weights=false"]))
    )
    assert "loss" not in jax.eval_shape(fixed.init_params, jax.random.key(0))


def test_multitask_heads_follow_the_tasks(tmp_path):
    cfg = compose_config(
        [
            "experiment=multitask",
            "loss.tasks=[cross_entropy,mse,logistic]",
            "loss.weights=[1.0,0.5,1.0]",
        ]
    )
    problem = build_problem(freeze(cfg))
    params = jax.jit(problem.init_params)(jax.random.key(0))  # one program, not op by op
    batch = {k: v[:8] for k, v in problem.data.train.items()}
    outputs = jax.eval_shape(problem.predict, params, batch)
    assert {k: v.shape for k, v in outputs["heads"].items()} == {
        "logits": (8, 10),
        "values": (8, 1),
        "score": (8, 1),
    }
    metrics = jax.eval_shape(problem.metrics, params, batch)
    assert {"accuracy", "score_accuracy", "log_var_logistic"} <= set(metrics)


def test_greedy_decoding_and_label_error_rate():
    from lossbench.tasks.sequence import edit_distance, greedy_decode

    greedy_decode, edit_distance = jax.jit(greedy_decode), jax.jit(edit_distance)  # not op by op
    frames = np.array([[0, 2, 2, 0, 2, 3, 3, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    logits = np.eye(4)[frames] * 5.0
    decoded, lengths = greedy_decode(logits)
    np.testing.assert_array_equal(lengths, [3, 1])
    np.testing.assert_array_equal(decoded[0, :3], [2, 2, 3])
    np.testing.assert_array_equal(decoded[1, :1], [1])
    assert np.all(np.asarray(decoded)[0, 3:] == 0)
    ref = np.array([2, 3, 1, 0])
    cases = [
        ([2, 3, 1], 3, 0),
        ([2, 1], 2, 1),
        ([3, 3, 1, 2], 4, 2),
        ([], 0, 3),
        ([2, 3, 1, 1], 4, 1),
    ]
    for hyp, n, distance in cases:
        hyp = np.array([*hyp, *[0] * (6 - len(hyp))])
        assert int(edit_distance(hyp, n, ref, 3)) == distance, (hyp, distance)


def test_task_datasets_shapes_and_balance():
    pairs = _dataset(["data=digit_pairs", "data.n=300"])
    assert pairs.task == "embedding" and pairs.n_train == 300
    assert pairs.train["same"].sum() == 150  # balanced
    assert len(pairs.test["same"]) == round(300 * 0.2 / 0.8)
    views = _dataset(["data=digit_views", "data.n=100"])
    assert views.train["view1"].shape == views.train["view2"].shape == (100, 64)
    assert not np.allclose(views.train["view1"], views.train["view2"])
    seq = _dataset(["data=ctc_synthetic", "data.n=50", "data.seq_len=10", "data.vocab=4"])
    assert seq.train["x"].shape[1:] == (10, 5) and seq.train["labels"].shape[1] == 5
    labels, pad = seq.train["labels"], seq.train["label_paddings"]
    assert labels.min() >= 0 and labels.max() <= 4
    assert np.all((labels > 0) == (pad == 0))
    mt = _dataset(["data=digits_multitask"])
    assert mt.train["ink"].shape == (mt.n_train, 1)
    assert abs(mt.train["ink"].mean()) < 1e-5 and abs(mt.train["ink"].std() - 1) < 1e-4
    np.testing.assert_array_equal(mt.train["odd"], mt.train["y"] % 2)


def test_digits_are_read_without_importing_scikit_learn():
    """`digits_arrays` reads scikit-learn's bundled file itself: the arrays of `load_digits`,
    and a fresh process that loads digits has not imported scikit-learn."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from lossbench.data.tabular import digits_arrays

    x, y = digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(x, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)
    code = (
        "import sys, lossbench\n"
        "data = lossbench.compose('data=digits').data\n"
        "from lossbench.data import make_dataset\n"
        "assert make_dataset(data).train['x'].shape[1] == 64\n"
        "print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False", done.stdout
