"""Saddle-escaping optimizers (`lossbench.escape`): pgd, noisy_gd, sam, saddle_free_newton."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from conftest import run_overrides

from lossbench.errors import ConfigError
from lossbench.models.surfaces import SURFACES
from lossbench.optimizers import OPTIMIZERS, escape, make_optimizer

ESCAPERS = ["pgd", "noisy_gd", "sam", "saddle_free_newton"]
SADDLE = [
    "model=escape_saddle",  # selects data=none and init=point
    "init.value=[0.0,0.0]",
    "probe=off",
    "trainer.batch_size=null",
    "trainer.eval=false",
]


def escape_saddle(x):
    return SURFACES["escape_saddle"].fn(x, 1.0, 1.0)


def optimizer(name: str, steps: int = 100, **fields):
    return make_optimizer(OPTIMIZERS.schema(name)(**fields), steps)


def test_registered_with_edge_of_stability_where_it_applies():
    assert set(ESCAPERS) <= set(OPTIMIZERS)
    gradient_descent = set(OPTIMIZERS.names(edge_of_stability=True))
    assert gradient_descent == {"gd", "sgd", "pgd", "noisy_gd"}
    assert float(optimizer("pgd", lr=0.1).eos_threshold(0)) == pytest.approx(20.0)
    assert float(optimizer("noisy_gd", lr=0.1, momentum=0.5).eos_threshold(0)) == pytest.approx(30)
    assert np.isnan(optimizer("sam").eos_threshold(0))
    assert np.isnan(optimizer("saddle_free_newton").eos_threshold(0))


@pytest.mark.parametrize(
    "name, fields, key",
    [
        ("pgd", {"radius": 0.0}, "radius"),
        ("pgd", {"t_thres": 0}, "t_thres"),
        ("noisy_gd", {"noise": -1.0}, "noise"),
        ("sam", {"radius": -0.1}, "radius"),
        ("saddle_free_newton", {"rank": 0}, "rank"),
        ("saddle_free_newton", {"damping": 0.0}, "damping"),
    ],
)
def test_bad_values_name_the_key(name, fields, key):
    with pytest.raises(ConfigError, match=f"optimizer.{key}="):
        optimizer(name, **fields)


def test_each_escaper_has_its_own_fields():
    fields = {name: set(OPTIMIZERS.schema(name).__dataclass_fields__) for name in ESCAPERS}
    shared = {"name", "lr", "schedule", "clip_norm", "weight_decay"}
    assert fields["pgd"] == shared | {"radius", "g_thres", "t_thres"}  # no momentum
    assert fields["noisy_gd"] == shared | {"noise", "noise_decay", "momentum", "nesterov"}
    assert fields["sam"] == shared | {"radius", "momentum", "nesterov"}
    assert fields["saddle_free_newton"] == shared | {"rank", "damping"}


# ---------------------------------------------------------------------------------------------
# the strict saddle of x^2 - y^2 + y^4/4, through the real training path


@pytest.mark.slow
def test_surface_runs_escape_the_saddle(tmp_path):
    """Gradient descent never leaving the saddle (its gradient is exactly 0) is checked on this
    surface by test_regimes' test_gd_stays_at_the_saddle_and_pgd_escapes_to_the_minimum."""
    hessian = jax.hessian(escape_saddle)

    pgd, run_dir = run_overrides(
        tmp_path, [*SADDLE, "optimizer=pgd", "trainer.steps=200", "trainer.seeds=2"], "pgd"
    )
    assert pgd["status"] == "completed"
    for point, loss in zip(pgd["final_point"], pgd["final_loss_per_seed"], strict=True):
        assert loss == pytest.approx(-1.0, abs=1e-3)
        assert abs(point[1]) == pytest.approx(np.sqrt(2.0), abs=0.02)
        assert np.linalg.eigvalsh(np.asarray(hessian(jnp.asarray(point)))).min() > 0
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    first_moves = metrics[metrics.step == 10].sort_values("seed")[["x_0", "x_1"]].to_numpy()
    assert np.all(np.abs(first_moves) > 0)  # the perturbation moved both seeds ...
    assert not np.allclose(first_moves[0], first_moves[1])  # ... in different directions

    noisy, _ = run_overrides(
        tmp_path, [*SADDLE, "optimizer=noisy_gd", "trainer.steps=300"], "noisy_gd"
    )
    assert abs(noisy["final_point"][0][1]) > 1.0
    assert noisy["final_loss"] < -0.9


def test_saddle_free_newton_escapes_in_a_few_steps(tmp_path):
    steps = ["trainer.steps=12", "trainer.log_every=1", "trainer.chunk=12"]
    sfn = ["optimizer=saddle_free_newton", "optimizer.damping=0.01"]
    summary, run_dir = run_overrides(
        tmp_path, [*SADDLE, *sfn, *steps, "init.value=[0.5,0.01]"], "near"
    )
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    y = metrics.x_1.to_numpy()
    assert np.all(np.diff(y[:7]) > 0.9 * y[:6])  # |y| about doubles per step: away from it
    assert metrics.x_0.abs().iloc[1] < 0.05  # Newton along the positive direction
    assert summary["final_loss"] == pytest.approx(-1.0, abs=1e-4)
    assert summary["final_point"][0][1] == pytest.approx(np.sqrt(2.0), abs=1e-3)

    # At the exact saddle g = 0: the Krylov space is empty, the step is 0 (not NaN).
    summary, run_dir = run_overrides(tmp_path, [*SADDLE, *sfn, *steps], "origin")
    assert summary["status"] == "completed"
    assert summary["final_point"] == [[0.0, 0.0]]
    assert np.isfinite(pd.read_parquet(run_dir / "metrics.parquet").update_norm).all()


# ---------------------------------------------------------------------------------------------
# pgd


def test_pgd_perturbs_at_most_once_per_t_thres_and_only_at_small_gradients():
    lr, radius, g_thres, t_thres = 0.1, 0.5, 1e-3, 5
    tx = escape.perturbed_gd(lr, radius, g_thres, t_thres)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    small = rng.random(60) < 0.6  # which steps see a gradient below g_thres
    state = tx.init(jnp.zeros(3))
    perturbed = []
    for t in range(60):
        g = jnp.asarray(rng.normal(size=3), jnp.float32)
        g = g / jnp.linalg.norm(g) * (0.5 * g_thres if small[t] else 10 * g_thres)
        u, state = update(g, state, key=jax.random.key(t))
        kick = np.asarray(u + lr * g)
        perturbed.append(np.linalg.norm(kick) > 1e-7)
        assert np.linalg.norm(kick) <= radius * (1 + 1e-6)
    perturbed = np.array(perturbed)
    times = np.flatnonzero(perturbed)
    assert not np.any(perturbed & ~small)  # never when ||g|| > g_thres
    assert np.all(np.diff(times) >= t_thres)  # at most once per t_thres steps
    # ... and exactly the rule: the first small-gradient step once t_thres steps have passed
    expected, last = [], -t_thres
    for t in np.flatnonzero(small):
        if t - last >= t_thres:
            expected.append(t)
            last = t
    assert times.tolist() == expected
    assert int(state.perturbations) == len(expected)


def test_uniform_ball_is_uniform():
    points = jax.vmap(lambda k: escape.uniform_ball(k, jnp.zeros(2), 2.0))(
        jax.random.split(jax.random.key(0), 4000)
    )
    r = np.linalg.norm(np.asarray(points), axis=1)
    assert r.max() <= 2.0 + 1e-6
    assert np.mean(r < 1.0) == pytest.approx(0.25, abs=0.03)  # area fraction in 2-d
    assert np.abs(np.asarray(points).mean(axis=0)).max() < 0.05


# ---------------------------------------------------------------------------------------------
# noisy_gd


def test_noisy_gd_noise_follows_the_annealing_schedule_and_the_key():
    eta, gamma, lr = 0.04, 0.55, 0.5
    tx = optimizer("noisy_gd", lr=lr, noise=eta, noise_decay=gamma).tx
    params = jnp.zeros(20000)
    state = tx.init(params)
    stds = []
    for t in range(10):
        u, state = tx.update(jnp.zeros_like(params), state, params, key=jax.random.key(t))
        stds.append(float(jnp.std(u)) / lr)
    expected = np.sqrt(eta / (1.0 + np.arange(10)) ** gamma)
    np.testing.assert_allclose(stds, expected, rtol=0.03)
    state = tx.init(params)
    a, _ = tx.update(jnp.zeros_like(params), state, params, key=jax.random.key(1))
    b, _ = tx.update(jnp.zeros_like(params), state, params, key=jax.random.key(1))
    c, _ = tx.update(jnp.zeros_like(params), state, params, key=jax.random.key(2))
    assert jnp.array_equal(a, b) and not jnp.allclose(a, c)


# ---------------------------------------------------------------------------------------------
# sam


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sam_is_the_two_gradient_step_on_a_quadratic(weight_decay):
    lr, rho, beta = 0.1, 0.05, 0.9
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    b = jnp.array([0.5, -1.0])
    loss = lambda w: 0.5 * w @ a @ w + b @ w
    grad = jax.grad(loss)
    tx = optimizer("sam", lr=lr, radius=rho, momentum=beta, weight_decay=weight_decay).tx
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    trace = jnp.zeros(2)
    for _ in range(2):
        g = grad(w)
        g_sam = grad(w + rho * g / jnp.linalg.norm(g)) + weight_decay * w
        trace = beta * trace + g_sam
        u, state = tx.update(g, state, w, grad_fn=lambda p, _: grad(p), key=jax.random.key(0))
        np.testing.assert_allclose(u, -lr * trace, rtol=1e-5)
        w = w + u


# ---------------------------------------------------------------------------------------------
# saddle_free_newton


def test_saddle_free_newton_is_newton_on_a_convex_quadratic():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
    a = jnp.asarray(q @ np.diag(np.arange(1.0, 7.0)) @ q.T, jnp.float32)
    w_star = jnp.arange(6.0) - 2.5
    loss = lambda w: 0.5 * (w - w_star) @ a @ (w - w_star)
    for rank in (6, 50):  # k = dim, and k clipped to the number of parameters
        tx = optimizer("saddle_free_newton", lr=1.0, rank=rank, damping=1e-6).tx
        w = jnp.zeros(6)
        u, _ = jax.jit(partial(tx.update, value_fn=loss))(jax.grad(loss)(w), tx.init(w), w)
        np.testing.assert_allclose(w + u, w_star, atol=1e-4)


def test_saddle_free_newton_moves_away_from_a_saddle_on_any_pytree():
    curvature = {"a": jnp.array([2.0, -1.0]), "b": jnp.array([[3.0, -0.5]])}

    def loss(p):
        return 0.5 * sum(
            jnp.sum(c * x**2) for c, x in zip(curvature.values(), p.values(), strict=True)
        )

    params = {"a": jnp.ones(2), "b": jnp.ones((1, 2))}
    tx = optimizer("saddle_free_newton", lr=1.0, rank=10, damping=1e-6).tx
    update = jax.jit(partial(tx.update, value_fn=loss))
    u, _ = update(jax.grad(loss)(params), tx.init(params), params)
    new = optax.apply_updates(params, u)
    # |H|^-1 H = sign(H): positive directions go to 0, negative ones double (Newton: all to 0)
    np.testing.assert_allclose(new["a"], [0.0, 2.0], atol=1e-4)
    np.testing.assert_allclose(new["b"], [[0.0, 2.0]], atol=1e-4)
    assert loss(new) < loss(params)

    zero = {"a": jnp.zeros(2), "b": jnp.zeros((1, 2))}
    u, _ = update(jax.grad(loss)(zero), tx.init(zero), zero)
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree_util.tree_leaves(u))


# ---------------------------------------------------------------------------------------------
# networks


@pytest.mark.slow
def test_every_escaper_trains_an_mlp_on_digits(tmp_path):
    base = [
        "probe=off",
        "model.widths=[16]",
        "trainer.steps=20",
        "trainer.log_every=1",  # a chunk of one segment: ~1/3 the compiling of log_every=5
        "trainer.chunk=20",
        "trainer.batch_size=64",
        "trainer.eval=false",
    ]
    final = {}
    for name in ["sgd", *ESCAPERS]:
        summary, run_dir = run_overrides(tmp_path, [*base, f"optimizer={name}"], name)
        metrics = pd.read_parquet(run_dir / "metrics.parquet")
        assert summary["status"] == "completed", name
        values = metrics[["loss", "grad_norm", "update_norm", "param_norm"]].to_numpy()
        assert np.isfinite(values).all(), name
        assert summary["final_loss"] < 0.8 * metrics.loss.iloc[0], name
        final[name] = summary["final_loss"]
    # same lr and momentum as sgd's options: SAM's second gradient is what differs
    assert abs(final["sam"] - final["sgd"]) > 1e-4
