"""The loss catalogue: closed forms, agreement with optax, structures, checks and the table."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lossbench.errors import ConfigError
from lossbench.losses import (
    LOSSES,
    ZERO_ONE_MESSAGE,
    check_fits,
    check_loss_config,
    format_properties_table,
    get_loss,
    losses_for,
    multitask_extra_params,
    multitask_heads,
    penalty,
    properties_table,
)
from lossbench.losses.base import PROPERTY_NAMES, TAKES_TASK, LossBase
from lossbench.schema import freeze


def cfg(name=None, **kw):
    """The frozen config of loss `name` (its own schema), or only the shared l1 / l2."""
    schema = LOSSES.schema(name) if name in LOSSES else LossBase
    return freeze(schema(**kw))


def f32(x):
    return jnp.asarray(x, jnp.float32)


def zeros(shape, one=None):
    """`jnp.zeros(shape)` made in numpy (an eager JAX op is a compilation of its own), or with
    a one at index `one`."""
    x = np.zeros(shape, np.float32)
    if one is not None:
        x[one] = 1.0
    return f32(x)


def reference(fn, *args, **kw):
    """An optax reference value, jitted (eager dispatch compiles every op separately)."""
    return np.asarray(jax.jit(functools.partial(fn, **kw))(*args))


@functools.cache
def compiled(name, c):
    """The loss jitted once per config: one XLA compilation instead of one per eager op."""
    loss = get_loss(name)
    return jax.jit(lambda outputs, targets, extra: loss(outputs, targets, c, extra))


def value(name, outputs, targets, extra=None, **kw):
    c = cfg(name, **kw)
    extra = get_loss(name).init_extra(c) if extra is None else extra
    return np.asarray(compiled(name, c)(outputs, targets, extra))


# --- closed forms on small hand-computed cases ------------------------------------------------

LOG3 = math.log(3.0)
CLOSED_FORMS = [
    # name, config, outputs, targets, expected per example
    ("mse", {}, [[1.0, 2.0]], [[0.0, 0.0]], [5.0]),
    ("mae", {}, [[1.0, -2.0]], [[0.0, 0.0]], [3.0]),
    ("huber", {"delta": 1.0}, [[0.5], [3.0]], [[0.0], [0.0]], [0.125, 2.5]),
    ("huber", {"delta": 2.0}, [[3.0]], [[0.0]], [4.0]),
    ("log_cosh", {"scale": 2.0}, [[1.0]], [[0.0]], [4.0 * math.log(math.cosh(0.5))]),
    ("quantile", {"quantile": 0.9}, [[0.0], [0.0]], [[1.0], [-1.0]], [0.9, 0.1]),
    ("welsch", {"scale": 2.0}, [[2.0]], [[0.0]], [2.0 * (1.0 - math.exp(-1.0))]),
    ("cross_entropy", {}, [[0.0, 0.0, 0.0]], [1], [LOG3]),
    ("focal", {"gamma": 2.0}, [[LOG3, 0.0]], [0], [-(0.25**2) * math.log(0.75)]),
    ("focal", {"gamma": 0.0}, [[LOG3, 0.0]], [1], [math.log(4.0)]),
    ("sparsemax", {}, [[0.5, 0.0], [0.5, 0.0]], [0, 1], [0.0625, 0.5625]),
    ("sparsemax", {}, [[3.0, 1.0, 0.0]], [0], [0.0]),
    (
        "multiclass_hinge",
        {"variant": "crammer_singer"},
        [[1.0, 0.5, -1.0], [1.0, 0.5, -1.0]],
        [0, 2],
        [0.5, 3.0],
    ),
    (
        "multiclass_hinge",
        {"variant": "weston_watkins"},
        [[1.0, 0.5, -1.0], [1.0, 0.5, -1.0]],
        [0, 2],
        [0.5, 5.5],
    ),
    ("multiclass_hinge", {"variant": "crammer_singer", "margin": 2.0}, [[1.0, 0.5]], [0], [1.5]),
    ("binary_cross_entropy", {}, [[0.0], [LOG3]], [1, 0], [math.log(2.0), math.log(4.0)]),
    ("logistic", {}, [[0.0], [LOG3]], [1, 0], [math.log(2.0), math.log(4.0)]),
    ("hinge", {"margin": 1.0}, [[0.3], [0.3]], [1, 0], [0.7, 1.3]),
    ("hinge", {"margin": 2.0}, [[0.3]], [1], [1.7]),
    ("squared_hinge", {"margin": 1.0}, [[0.3], [0.3]], [1, 0], [0.49, 1.69]),
    ("exponential", {}, [[0.3], [0.3]], [1, 0], [math.exp(-0.3), math.exp(0.3)]),
    ("savage", {}, [[0.0], [math.log(2.0) / 2]], [1, 1], [0.25, 1.0 / 9.0]),
]


@pytest.mark.parametrize(
    "name,kw,outputs,targets,expected",
    CLOSED_FORMS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CLOSED_FORMS)],
)
def test_closed_forms(name, kw, outputs, targets, expected):
    targets = f32(targets) if isinstance(targets[0], list) else jnp.asarray(targets)
    got = value(name, f32(outputs), targets, **kw)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_zero_one_counts_mistakes_on_logits_and_scores():
    c = cfg("zero_one")
    loss = get_loss("zero_one", for_training=False)
    zero_one = jax.jit(lambda outputs, targets: loss(outputs, targets, c))  # not op by op
    logits = f32([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(zero_one(logits, jnp.asarray([0, 1])), [0.0, 1.0])
    scores = f32([[0.3], [0.3], [0.0]])
    np.testing.assert_array_equal(zero_one(scores, jnp.asarray([1, 0, 1])), [0.0, 1.0, 1.0])


def test_cosine_closed_forms():
    left, right = f32([[1.0, 0.0], [1.0, 0.0]]), f32([[0.0, 1.0], [1.0, 1.0]])
    pairs = {"left": left, "right": right}
    c = 1 / math.sqrt(2)
    np.testing.assert_allclose(value("cosine", pairs, jnp.asarray([1, 1])), [1.0, 1.0 - c])
    np.testing.assert_allclose(
        value("cosine", pairs, jnp.asarray([0, 0]), margin=0.5), [0.0, c - 0.5], rtol=1e-6
    )


def test_contrastive_closed_forms():
    pairs = {"left": f32([[3.0, 4.0], [3.0, 4.0], [0.3, 0.4]]), "right": zeros((3, 2))}
    got = value("contrastive", pairs, jnp.asarray([1, 0, 0]), margin=1.0)
    np.testing.assert_allclose(got, [12.5, 0.0, 0.125], rtol=1e-6)


def test_contrastive_gradient_is_finite_at_zero_distance():
    pairs = {"left": zeros((1, 2)), "right": zeros((1, 2))}
    grad = jax.jit(jax.grad(lambda p: value_jnp("contrastive", p, jnp.asarray([0])).sum()))(pairs)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def value_jnp(name, outputs, targets, **kw):
    return get_loss(name)(outputs, targets, cfg(name, **kw), {})


def test_triplet_matches_hand_values_and_optax():
    a, p = f32([[0.0, 0.0], [1.0, 1.0]]), f32([[0.1, 0.1], [1.1, 1.1]])
    n = f32([[1.0, 0.0], [0.0, 1.0]])
    got = value("triplet", {"anchor": a, "positive": p, "negative": n}, zeros(2))
    np.testing.assert_allclose(got, [math.sqrt(0.02)] * 2, rtol=1e-4)  # optax's example
    got = value(
        "triplet",
        {"anchor": zeros((1, 2)), "positive": f32([[1.0, 0.0]]), "negative": f32([[0, 1.5]])},
        zeros(1),
        margin=1.0,
    )
    np.testing.assert_allclose(got, [0.5], rtol=1e-5)


def test_ntxent_closed_form_on_identical_orthogonal_views():
    # every anchor: positive cos 1, two negatives cos 0, temperature 1 -> log(1 + 2 / e)
    views = {"view1": f32(np.eye(2)), "view2": f32(np.eye(2))}
    got = value("ntxent", views, zeros(2), temperature=1.0)
    np.testing.assert_allclose(got, [math.log(1 + 2 / math.e)] * 2, rtol=1e-6)


def test_ntxent_matches_a_direct_loop_and_optax_mean():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = value("ntxent", {"view1": f32(z1), "view2": f32(z2)}, zeros(5), temperature=0.5)
    z = np.concatenate([z1, z2])
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    per_view = []
    for i in range(10):
        sims = {k: u[i] @ u[k] / 0.5 for k in range(10) if k != i}
        positive = sims[(i + 5) % 10]
        per_view.append(-positive + math.log(sum(math.exp(s) for s in sims.values())))
    expected = 0.5 * (np.array(per_view[:5]) + np.array(per_view[5:]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    labels = jnp.asarray(np.concatenate([np.arange(5), np.arange(5)]))
    np.testing.assert_allclose(
        got.mean(), reference(optax.losses.ntxent, f32(z), labels, temperature=0.5), rtol=1e-5
    )


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _collapse(path):
    """CTC's many-to-one map: merge repeats, then drop blanks (0)."""
    merged = [s for i, s in enumerate(path) if i == 0 or s != path[i - 1]]
    return tuple(s for s in merged if s != 0)


def test_ctc_closed_form_sums_the_alignments():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3))
    p = _softmax(logits)
    expected = []
    for b, label in enumerate([(1,), (1, 1)]):  # (1, 1) needs a blank between: one path
        paths = [path for path in itertools.product(range(3), repeat=3) if _collapse(path) == label]
        total = sum(np.prod([p[b, t, s] for t, s in enumerate(path)]) for path in paths)
        expected.append(-math.log(total))
    targets = {
        "labels": jnp.asarray([[1, 0], [1, 1]]),
        "label_paddings": f32([[0.0, 1.0], [0.0, 0.0]]),
        "logit_paddings": zeros((2, 3)),
    }
    np.testing.assert_allclose(value("ctc", f32(logits), targets), expected, rtol=1e-4)


def test_ctc_ignores_padded_frames():
    rng = np.random.default_rng(2)
    logits = f32(rng.normal(size=(1, 4, 3)))
    targets = {"labels": jnp.asarray([[2, 1]]), "label_paddings": zeros((1, 2))}
    short = value("ctc", logits, {**targets, "logit_paddings": zeros((1, 4))})
    padded_logits = f32(np.concatenate([logits, f32(rng.normal(size=(1, 2, 3)))], axis=1))
    padding = f32([[0, 0, 0, 0, 1, 1]])
    padded = value("ctc", padded_logits, {**targets, "logit_paddings": padding})
    np.testing.assert_allclose(padded, short, rtol=1e-5)


# --- agreement with optax where both exist ---------------------------------------------------


def test_logistic_equals_binary_cross_entropy_equals_optax():
    rng = np.random.default_rng(3)
    score, labels = f32(rng.normal(size=(16, 1)) * 3), jnp.asarray(rng.integers(0, 2, 16))
    expected = reference(optax.losses.sigmoid_binary_cross_entropy, score[:, 0], labels)
    np.testing.assert_allclose(value("logistic", score, labels), expected, rtol=1e-5)
    np.testing.assert_allclose(value("binary_cross_entropy", score, labels), expected, rtol=1e-5)


def test_hinge_at_unit_margin_equals_optax():
    rng = np.random.default_rng(4)
    score, labels = f32(rng.normal(size=(16, 1)) * 2), jnp.asarray(rng.integers(0, 2, 16))
    expected = reference(optax.losses.hinge_loss, score[:, 0], 2.0 * labels - 1.0)
    np.testing.assert_allclose(value("hinge", score, labels, margin=1.0), expected, rtol=1e-6)


def test_focal_with_two_classes_equals_optax_sigmoid_focal_loss():
    rng = np.random.default_rng(5)
    z, labels = f32(rng.normal(size=(16,)) * 3), jnp.asarray(rng.integers(0, 2, 16))
    logits = f32(np.stack([np.zeros(16), z], axis=-1))  # p(class 1) = sigmoid(z)
    for gamma in (0.0, 1.0, 2.0):
        expected = reference(optax.losses.sigmoid_focal_loss, z, labels, gamma=gamma)
        got = value("focal", logits, labels, gamma=gamma)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_focal_with_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(6)
    logits, labels = f32(rng.normal(size=(8, 4)) * 3), jnp.asarray(rng.integers(0, 4, 8))
    expected = reference(optax.losses.softmax_cross_entropy_with_integer_labels, logits, labels)
    np.testing.assert_allclose(value("focal", logits, labels, gamma=0.0), expected, rtol=1e-5)


def test_multiclass_hinge_variants_against_optax_and_a_loop():
    rng = np.random.default_rng(7)
    logits, labels = rng.normal(size=(8, 4)), rng.integers(0, 4, 8)
    cs = value("multiclass_hinge", f32(logits), jnp.asarray(labels), variant="crammer_singer")
    expected = reference(optax.losses.multiclass_hinge_loss, f32(logits), jnp.asarray(labels))
    np.testing.assert_allclose(cs, expected, rtol=1e-6)
    ww = value("multiclass_hinge", f32(logits), jnp.asarray(labels), variant="weston_watkins")
    loop = [
        sum(max(0.0, 1.0 - (z[y] - z[j])) for j in range(4) if j != y)
        for z, y in zip(logits, labels, strict=True)
    ]
    np.testing.assert_allclose(ww, loop, rtol=1e-5)


def test_log_cosh_at_unit_scale_and_huber_equal_optax():
    rng = np.random.default_rng(8)
    pred, target = f32(rng.normal(size=(8, 3)) * 3), f32(rng.normal(size=(8, 3)))
    expected = reference(optax.losses.log_cosh, pred, target).sum(-1)
    np.testing.assert_allclose(value("log_cosh", pred, target, scale=1.0), expected, rtol=1e-6)
    expected = reference(optax.losses.huber_loss, pred, target, delta=0.7).sum(-1)
    np.testing.assert_allclose(value("huber", pred, target, delta=0.7), expected, rtol=1e-6)


def test_quantile_at_one_half_is_half_the_mae():
    rng = np.random.default_rng(9)
    pred, target = f32(rng.normal(size=(8, 2))), f32(rng.normal(size=(8, 2)))
    np.testing.assert_allclose(
        value("quantile", pred, target, quantile=0.5), 0.5 * value("mae", pred, target), rtol=1e-6
    )


# --- every loss: structure, shape, finite values and gradients in float32 --------------------


def example_batch(takes, rng, b=4):
    normal = lambda *shape: f32(rng.normal(size=shape))
    labels = lambda k: jnp.asarray(rng.integers(0, k, b))
    if takes == "logits":
        return normal(b, 3), labels(3)
    if takes == "score":
        return normal(b, 1), labels(2)
    if takes == "values":
        return normal(b, 2), normal(b, 2)
    if takes == "pairs":
        return {"left": normal(b, 3), "right": normal(b, 3)}, labels(2)
    if takes == "triplets":
        return {k: normal(b, 3) for k in ("anchor", "positive", "negative")}, zeros(b)
    if takes == "views":
        return {"view1": normal(b, 3), "view2": normal(b, 3)}, zeros(b)
    if takes == "sequence":
        targets = {
            "labels": jnp.asarray(rng.integers(1, 3, (b, 2))),
            "label_paddings": zeros((b, 2), one=(0, 1)),
            "logit_paddings": zeros((b, 6), one=(1, 5)),
        }
        return normal(b, 6, 3), targets
    if takes == "heads":
        return {"logits": normal(b, 3), "values": normal(b, 2)}, {
            "logits": labels(3),
            "values": normal(b, 2),
        }
    if takes == "value":  # loss=none: the outputs are the values
        return normal(b), zeros(b)
    raise ValueError(takes)


CONFIGS = [(name, {"margin": 0.0} if name == "cosine" else {}) for name in sorted(LOSSES)]
CONFIGS += [("multitask", {"learned_weights": True})]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_every_loss_gives_finite_per_example_values_and_gradients(name, kw):
    loss, c = LOSSES[name], cfg(name, **kw)
    outputs, targets = example_batch(loss.properties.takes, np.random.default_rng(10))
    extra = loss.init_extra(c)

    def values_and_grads(o, e):
        mean = lambda o, e: loss(o, targets, c, e).mean()
        return loss(o, targets, c, e), jax.grad(mean, argnums=(0, 1))(o, e)

    values, grads = jax.jit(values_and_grads)(outputs, extra)
    assert values.shape == (4,) and values.dtype == jnp.float32
    assert np.all(np.isfinite(values))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert loss.properties.takes in TAKES_TASK and loss.task == TAKES_TASK[loss.properties.takes]


# --- registry checks -------------------------------------------------------------------------


def test_zero_one_refuses_training_with_the_message():
    with pytest.raises(ConfigError) as err:
        get_loss("zero_one")
    assert (err.value.key, err.value.value, err.value.allowed) == (
        "loss.name",
        "zero_one",
        "the 0-1 loss is a metric only (zero gradient almost everywhere); train on a "
        "surrogate: hinge, logistic, cross_entropy, ...",
    )
    assert err.value.allowed == ZERO_ONE_MESSAGE
    assert get_loss("zero_one", for_training=False).trainable is False
    with pytest.raises(ConfigError, match="metric only"):
        check_loss_config(cfg("zero_one"))


def test_unknown_loss_names_the_choices():
    with pytest.raises(ConfigError, match=r"loss.name='msee' is not allowed: one of \[.*'mse'"):
        get_loss("msee")


def test_losses_for_each_task():
    assert losses_for("embedding") == ["contrastive", "cosine", "ntxent", "triplet"]
    assert losses_for("sequence") == ["ctc"]
    assert losses_for("multitask") == ["multitask"]
    assert "zero_one" not in losses_for("classification")
    assert {"hinge", "cross_entropy", "sparsemax"} <= set(losses_for("classification"))
    assert losses_for("regression") == ["huber", "log_cosh", "mae", "mse", "quantile", "welsch"]


def test_check_fits():
    assert check_fits("hinge", "classification").name == "hinge"
    with pytest.raises(ConfigError) as err:
        check_fits("mse", "classification")
    assert str(err.value) == (
        f"loss.name='mse' is not allowed: fits regression; losses for classification: "
        f"{losses_for('classification')}"
    )


@pytest.mark.parametrize(
    "name,kw,key",
    [
        ("huber", {"delta": 0.0}, "loss.delta"),
        ("quantile", {"quantile": 1.0}, "loss.quantile"),
        ("welsch", {"scale": -1.0}, "loss.scale"),
        ("focal", {"gamma": -1.0}, "loss.gamma"),
        ("hinge", {"margin": 0.0}, "loss.margin"),
        ("cosine", {"margin": 1.0}, "loss.margin"),
        ("ntxent", {"temperature": 0.0}, "loss.temperature"),
        ("multiclass_hinge", {"variant": "ovr"}, "loss.variant"),
        ("mse", {"l2": -0.1}, "loss.l2"),
        ("multitask", {"weights": [1.0]}, "loss.weights"),
        ("multitask", {"tasks": ["cross_entropy", "focal"]}, "loss.tasks"),
        ("multitask", {"tasks": ["cross_entropy", "zero_one"]}, "loss.tasks"),
        ("multitask", {"tasks": ["cross_entropy", "ctc"]}, "loss.tasks"),
        ("multitask", {"tasks": ["huber", "mse"]}, "loss.tasks"),
    ],
)
def test_check_loss_config_names_the_key(name, kw, key):
    with pytest.raises(ConfigError) as err:
        check_loss_config(cfg(name, **kw))
    assert err.value.key == key


def test_check_loss_config_accepts_the_defaults():
    for name in sorted(n for n, loss in LOSSES.items() if loss.trainable):
        check_loss_config(cfg(name, **({"margin": 0.0} if name == "cosine" else {})))


def test_cosine_margin_message_suggests_a_value():
    with pytest.raises(ConfigError, match=r"in \[-1, 1\) for cosine"):
        check_loss_config(cfg("cosine", margin=1.0))  # the default is 0.0


# --- multitask -------------------------------------------------------------------------------


def test_multitask_fixed_weights_is_the_weighted_sum():
    outputs, targets = example_batch("heads", np.random.default_rng(11))
    got = value("multitask", outputs, targets, weights=[2.0, 0.5])
    ce = value("cross_entropy", outputs["logits"], targets["logits"])
    mse = value("mse", outputs["values"], targets["values"])
    np.testing.assert_allclose(got, 2.0 * ce + 0.5 * mse, rtol=1e-6)
    assert multitask_extra_params(cfg("multitask")) == {}
    assert multitask_heads(cfg("multitask")) == {"logits": "cross_entropy", "values": "mse"}


def test_multitask_learned_weights_follow_kendall_gal_cipolla():
    outputs, targets = example_batch("heads", np.random.default_rng(12))
    c = cfg("multitask", learned_weights=True, weights=[1.0, 2.0])
    extra = multitask_extra_params(c)
    assert jax.tree.map(jnp.shape, extra) == {"log_var": (2,)}
    s = f32([0.3, -0.7])
    got = np.asarray(compiled("multitask", c)(outputs, targets, {"log_var": s}))
    ce = value("cross_entropy", outputs["logits"], targets["logits"])
    mse = value("mse", outputs["values"], targets["values"])
    expected = (math.exp(-0.3) * ce + 0.15) + 2.0 * (0.5 * math.exp(0.7) * mse - 0.35)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="log_var"):
        jax.eval_shape(compiled("multitask", c), outputs, targets, {})  # traced, not run


def test_multitask_learned_weights_are_unbounded_below_when_a_task_is_fit():
    outputs, targets = example_batch("heads", np.random.default_rng(13))
    outputs = {**outputs, "values": targets["values"]}
    at = {
        s: value("multitask", outputs, targets, {"log_var": f32([0.0, s])}, learned_weights=True)
        for s in (-10.0, -40.0)
    }
    np.testing.assert_allclose(at[-40.0] - at[-10.0], -15.0, rtol=1e-5)  # s / 2, without end
    assert np.all(at[-40.0] < 0)


def test_multitask_properties_follow_the_config():
    loss = get_loss("multitask")
    derived = loss.properties_for(cfg("multitask"))
    for key in PROPERTY_NAMES:
        assert getattr(derived, key) == getattr(loss.properties, key)
    learned = loss.properties_for(cfg("multitask", learned_weights=True))
    assert not (learned.convex or learned.bounded or learned.min_zero)
    hinge = loss.properties_for(cfg("multitask", tasks=["multiclass_hinge", "huber"]))
    assert hinge.convex and hinge.robust and not hinge.differentiable


# --- penalty ---------------------------------------------------------------------------------


def test_penalty_on_kernels_only():
    params = {"dense": {"kernel": f32([[1.0, -2.0]]), "bias": f32([5.0])}}
    got = penalty(params, cfg(l2=0.1, l1=0.01))
    np.testing.assert_allclose(got, 0.1 * 0.5 * 5.0 + 0.01 * 3.0, rtol=1e-6)
    assert float(penalty(params, cfg())) == 0.0


def test_penalty_on_nnx_state():
    build = lambda: nnx.Sequential(
        nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Linear(3, 1, rngs=nnx.Rngs(1))
    )
    model = nnx.jit(build)()  # initialised in one program, not op by op
    _, state = nnx.split(model, nnx.Param)
    kernels = [model.layers[0].kernel.get_value(), model.layers[1].kernel.get_value()]
    expected = 0.5 * sum(float(np.sum(np.asarray(k) ** 2)) for k in kernels)
    l2 = cfg(l2=1.0)
    got, grad = jax.jit(jax.value_and_grad(lambda p: penalty(p, l2)))(state)  # one program
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    biases = [g for path, g in jax.tree_util.tree_flatten_with_path(grad)[0] if "bias" in str(path)]
    assert biases and all(float(jnp.abs(b).sum()) == 0.0 for b in biases)


# --- the properties table --------------------------------------------------------------------


def test_properties_table_has_one_row_per_loss():
    table = properties_table()
    assert sorted(table["name"]) == sorted(set(LOSSES) - {"none"})
    assert set(PROPERTY_NAMES) <= set(table.columns)
    assert {"task", "takes", "source", "reference", "notes", "trainable"} <= set(table.columns)
    row = table.set_index("name").loc["huber"]
    assert "zero curvature" in row["notes"] and not row["twice_differentiable"]
    assert not table.set_index("name").loc["cross_entropy", "min_zero"]
    for loss in LOSSES.values():
        src = loss.properties.source
        assert src.startswith(("optax.losses.", "lossbench")), src
        if src.startswith("optax.losses."):
            assert hasattr(optax.losses, src.split()[0].split(".")[-1])


def test_format_properties_table_is_markdown():
    text = format_properties_table()
    lines = text.strip().splitlines()
    assert lines[0].startswith("| name | task | takes |") and lines[1].startswith("|---|")
    assert len(lines) == 2 + len(LOSSES) - 1  # all but none
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| zero_one | classification | logits | no |" in text
