"""Shortened versions of the gallery in experiments/: each asserts its paper's qualitative
claim, and the scripts write only where they are told to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO


def _experiment(name: str):
    if str(REPO / "experiments") not in sys.path:
        sys.path.insert(0, str(REPO / "experiments"))  # the scripts import experiments/_gallery
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The claims' runs, each made once: its test checks the claim, test_scripts_write_only_where_told
# publishes the same results through the script's main (both on one xdist worker).
GALLERY_GROUP = pytest.mark.xdist_group("gallery_runs")


@pytest.fixture(scope="module")
def edge_of_stability_rows(tmp_path_factory):
    eos = _experiment("edge_of_stability")
    out = tmp_path_factory.mktemp("edge_of_stability")
    return eos.experiment(out, steps=400, rates=(0.25,), adam_rates=(3e-3,))


@pytest.fixture(scope="module")
def init_scale_plateau_results(tmp_path_factory):
    isp = _experiment("init_scale_plateau")
    out = tmp_path_factory.mktemp("init_scale_plateau")
    return isp.experiment(out, scales=(1e-2, 1e-4), steps=900, seeds=2)


@pytest.fixture(scope="module")
def label_noise_losses_rows():
    return _experiment("label_noise_losses").experiment(
        losses=("cross_entropy", "savage_multiclass", "mae_softmax"),
        noise=(0.2, 0.4),
        models=("linear",),
        seeds=2,
    )


@pytest.fixture(scope="module")
def hessian_outliers_results():
    return _experiment("hessian_outliers").experiment(checkpoints=(20,), shown=20, slq_steps=30)


def test_catapult_phases():
    """Lewkowycz et al. (2020): lazy below ηλ0 = 2, catapult between 2 and 4, divergence above."""
    catapult = _experiment("catapult")
    lazy, catapulted, divergent = catapult.experiment(rates=(1.5, 3.0, 5.0), steps=60, width=256)
    assert not lazy["diverged"] and lazy["monotone"]
    assert lazy["final_eta_lambda"] == pytest.approx(1.5, rel=0.05)  # λ stays at λ0
    assert not catapulted["diverged"] and catapulted["peak_ratio"] > 2  # the loss spikes ...
    assert catapulted["final_eta_lambda"] < 2 < catapulted["c"]  # ... and λ falls below 2/η
    assert catapulted["final_loss"] == pytest.approx(lazy["final_loss"], rel=0.05)
    assert divergent["diverged"]


def test_saddle_free_newton_escapes_where_newton_is_trapped():
    """Dauphin et al. (2014), Fig. 2: on 5x² − y² Newton converges to the saddle, gradient
    descent escapes slowly, saddle-free Newton fast."""
    sfn = _experiment("saddle_free_newton")
    results = sfn.experiment(steps=80)
    gd, newton, free = (results[m] for m in sfn.METHODS)
    assert newton["escape_step"] is None and newton["closest_to_saddle"] < 1e-6
    np.testing.assert_allclose(newton["points"][1:], 0.0, atol=1e-6)  # one step onto it
    # y grows by 1 + 2η = 1.1 per step under GD, doubles under SFN: ln(1000)/ln(1.1) ≈ 72.5
    # steps against ln(1000)/ln 2 ≈ 10 to reach |y| = 1 from 10⁻³
    assert gd["escape_step"] == pytest.approx(np.log(1e3) / np.log(1.1), abs=2)
    assert free["escape_step"] == pytest.approx(np.log(1e3) / np.log(2.0), abs=1)


@pytest.mark.slow
def test_pgd_escape_time_grows_like_log_dimension():
    """Jin et al. (2017): from a strict saddle, perturbed GD escapes in O(log d) steps; here
    the mean escape time is linear in ln d with slope ½/ln(1 + ηγ)."""
    pgd = _experiment("pgd_escape_dimension")
    result = pgd.experiment(dimensions=(4, 64, 1024), seeds=16, steps=250)
    assert result["never"] == 0
    assert np.all(np.diff(result["means"]) > 0)
    assert result["slope"] == pytest.approx(result["predicted_slope"], rel=0.25)
    # 256x more dimensions cost well under 2x the steps: nothing like a power of d
    assert result["means"][-1] < 1.5 * result["means"][0]


@pytest.mark.slow
@GALLERY_GROUP
def test_edge_of_stability_gd_and_adam(edge_of_stability_rows):
    """Cohen et al. (2021): GD's λmax rises from below 2/η to 2/η and hovers there; Cohen et
    al. (2022): Adam's preconditioned λmax(P⁻¹H) (β1 = 0.9) rises to 38/η and hovers there."""
    rows = edge_of_stability_rows
    gd, adam = rows
    assert (gd["method"], adam["method"]) == ("GD", "Adam")
    assert gd["threshold"] == pytest.approx(8.0) and adam["threshold"] == pytest.approx(38 / 3e-3)
    assert adam["loss"][0] == pytest.approx(gd["loss"][0], rel=1e-5)  # the same initial weights
    for row in rows:
        assert row["start_ratio"] < 0.6  # starts well below its threshold ...
        assert row["reached_at"] is not None and row["reached_at"] <= 250  # ... reaches it ...
        assert row["after_ratio"] == pytest.approx(1.0, abs=0.1)  # ... and hovers there
        assert row["final_loss"] < 0.25 * row["loss"][0]  # while the loss keeps falling


def test_preconditioned_sharpness_matches_dense(tmp_path):
    """λmax(P⁻¹H) by Lanczos on P^-½ H P^-½ equals the top eigenvalue of the dense P⁻¹H, with
    P read from optax's Adam state: after a few Adam steps, the update is −η m̂ / P."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    eos = _experiment("edge_of_stability")
    with jax.enable_x64(True):
        key_w, key_x, key_y = jax.random.split(jax.random.key(0), 3)
        params = {
            "w1": jax.random.normal(key_w, (3, 4), jnp.float64),
            "w2": jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float64),
        }
        x = jax.random.normal(key_x, (16, 3), jnp.float64)
        y = jax.random.normal(key_y, (16,), jnp.float64)

        def loss_fn(p):
            return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

        opt = optax.adam(1e-2, b1=eos.BETA1, b2=eos.BETA2, eps=eos.EPS)
        state = opt.init(params)

        @jax.jit  # compiled, as in the script (op by op, the float64 ops compiled one by one)
        def step(params, state):
            updates, state = opt.update(jax.grad(loss_fn)(params), state, params)
            return optax.apply_updates(params, updates), state, updates

        for _ in range(3):
            params, state, updates = step(params, state)
        adam_state = state[0]
        p = eos.preconditioner(adam_state)
        m_hat = jax.tree.map(lambda m: m / (1 - eos.BETA1**3), adam_state.mu)
        expected = jax.tree.map(lambda m, d: -1e-2 * m / d, m_hat, p)
        np.testing.assert_allclose(ravel_pytree(updates)[0], ravel_pytree(expected)[0], rtol=1e-10)

        flat, unravel = ravel_pytree(params)
        hessian = jax.jit(jax.hessian(lambda f: loss_fn(unravel(f))))(flat)
        dense = np.linalg.eigvals(np.diag(1 / np.asarray(ravel_pytree(p)[0])) @ hessian)
        assert np.max(np.abs(dense.imag)) < 1e-6 * np.max(np.abs(dense))
        sharpness = jax.jit(  # compiled, as the script's Adam chunk calls it
            lambda params, p, key: eos.preconditioned_sharpness(
                loss_fn, params, p, key=key, lanczos_steps=16
            )
        )
        lanczos = sharpness(params, p, jax.random.key(1))
        np.testing.assert_allclose(float(lanczos), np.max(dense.real), rtol=1e-8)
        assert np.max(dense.real) > 2 * np.max(np.linalg.eigvalsh(hessian))  # P matters here


@pytest.mark.slow
@GALLERY_GROUP
def test_init_scale_plateau_follows_saxe_eq_11(init_scale_plateau_results):
    """Saxe et al. (2014), eq. 11: from strength u0 a mode of strength s is half learned after
    τ/(2s) ln((s − u0)/u0), so the plateau grows like ln(1/σ)/s as the init scale σ shrinks."""
    isp = _experiment("init_scale_plateau")
    result = init_scale_plateau_results
    s = result["s"]
    np.testing.assert_allclose(s, [3.0, 2.0, 1.0, 0.5], rtol=1e-5)
    learned = s >= 1.0  # s = 0.5 needs 1600 steps at σ = 1e-4
    for row in result["rows"]:
        ratio = row["measured"][learned] / row["predicted"][learned]
        np.testing.assert_allclose(ratio, 1.0, atol=0.06)
        assert np.all(np.diff(row["measured"][learned]) > 0)  # weaker modes later
    # 100x smaller weights: u0 10^4 smaller, 2η·s·Δsteps = ln(10^4)/2 = 4.6 e-folds later
    small, large = result["rows"]
    shift = (large["measured"] - small["measured"])[learned] * 2 * isp.LR * s[learned]
    np.testing.assert_allclose(shift, np.log(1e4) / 2, rtol=0.06)


@pytest.mark.slow
@GALLERY_GROUP
def test_bounded_losses_resist_flipped_labels(label_noise_losses_rows):
    """Masnadi-Shirazi & Vasconcelos (2008): a bounded loss (Savage; MAE on the softmax) loses
    less test accuracy to flipped training labels than the convex cross-entropy, for a linear
    classifier that cannot memorise them."""
    rows = label_noise_losses_rows
    acc = {(r["loss"], r["noise"]): r["test_accuracy"] for r in rows}
    assert acc["savage_multiclass", 0.2] > acc["cross_entropy", 0.2] + 0.01
    assert acc["mae_softmax", 0.2] > acc["cross_entropy", 0.2] + 0.03
    assert acc["mae_softmax", 0.4] > acc["cross_entropy", 0.4] + 0.05
    assert acc["savage_multiclass", 0.4] > acc["cross_entropy", 0.4] - 0.03


@pytest.mark.slow
@GALLERY_GROUP
def test_hessian_has_c_minus_1_outliers(hessian_outliers_results):
    """Sagun et al. (2017), Papyan (2020): after a few steps of training a 10-class softmax
    network, H and its Gauss-Newton part G have C − 1 = 9 eigenvalues above the bulk (the
    largest gap among the top 30 is after the 9th); Lanczos finds them (checked against the
    dense Hessian); the gradient lies far more in their span than in a random subspace."""
    result = hessian_outliers_results
    trained = result["rows"][-1]
    assert (trained["h_gap_k"], trained["g_gap_k"]) == (9, 9)
    assert trained["h_gap"] > 2.5 and trained["g_gap"] > 2.5
    np.testing.assert_allclose(result["lanczos_top"][:10], result["dense_h"][:10], rtol=1e-3)
    assert trained["overlap_c"] > 50 * trained["overlap_random_c"]
    assert np.isclose(float(np.sum(result["density"].weights)), 1.0, atol=1e-4)


def test_savage_multiclass_is_the_savage_loss_for_two_classes():
    """Half the Brier score on the softmax is Masnadi-Shirazi & Vasconcelos's (2008) Savage
    loss (1 − σ(2v))² of the score v = (z₁ − z₀)/2 when there are two classes."""
    from lossbench.losses import LOSSES

    label_noise = _experiment("label_noise_losses")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 2)).astype(np.float32)
    labels = rng.integers(0, 2, 64)
    score = (logits[:, 1:] - logits[:, :1]) / 2
    np.testing.assert_allclose(
        label_noise.savage_multiclass(logits, labels),
        LOSSES["savage"].fn(score, labels),
        rtol=1e-5,
        atol=1e-7,
    )
    p_y = np.exp(logits[np.arange(64), labels]) / np.exp(logits).sum(1)
    mae = label_noise.mae_softmax(logits, labels)
    np.testing.assert_allclose(mae, 2 * (1 - p_y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "catapult",
        "saddle_free_newton",
        "pgd_escape_dimension",
        # these train lossbench runs (compilation included: ~20 s each when loaded); those
        # with a claim test publish that test's results (CLAIMED), not runs of their own
        pytest.param("init_scale_plateau", marks=[pytest.mark.slow, GALLERY_GROUP]),
        pytest.param("edge_of_stability", marks=[pytest.mark.slow, GALLERY_GROUP]),
        pytest.param("deep_linear_stages", marks=pytest.mark.slow),
        pytest.param("label_noise_losses", marks=[pytest.mark.slow, GALLERY_GROUP]),
        pytest.param("hessian_outliers", marks=[pytest.mark.slow, GALLERY_GROUP]),
    ],
)
def test_scripts_write_only_where_told(name, tmp_path, monkeypatch, request):
    """Run as scripts they write into --out (default: outputs/experiments/NAME), and the
    figure to --figure only when asked: never over the tracked copy by accident."""
    module = _experiment(name)
    if name in CLAIMED:
        results = request.getfixturevalue(CLAIMED[name])
        monkeypatch.setattr(module, "experiment", _claimed(results, tmp_path / "out"))
    else:
        monkeypatch.setattr(module, "experiment", _tiny(module))
    tracked = REPO / "experiments" / f"{name}.png"
    before = tracked.stat().st_mtime_ns if tracked.exists() else None
    assert module.main(["--out", str(tmp_path / "out"), "--figure", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "out" / f"{name}.md").read_text().startswith("|")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert (tracked.stat().st_mtime_ns if tracked.exists() else None) == before


CLAIMED = {  # script -> the fixture of its claim test's results
    "edge_of_stability": "edge_of_stability_rows",
    "init_scale_plateau": "init_scale_plateau_results",
    "label_noise_losses": "label_noise_losses_rows",
    "hessian_outliers": "hessian_outliers_results",
}


def _claimed(results, out: Path):
    """`experiment` returning the claim test's results; main's --out reaches it."""

    def experiment(*args, **kwargs):
        if args:  # the scripts whose runs go under --out
            assert Path(args[0]) == out, args
        return results

    return experiment


def _tiny(module):
    original = module.experiment
    if module.__name__ == "catapult":
        return lambda **kw: original(rates=(1.5, 5.0), steps=20, width=64)
    if module.__name__ == "pgd_escape_dimension":
        return lambda **kw: original(dimensions=(2, 4), seeds=2, steps=150)
    if module.__name__ == "deep_linear_stages":
        return lambda out, **kw: original(out, steps=200)
    return lambda steps: original(steps=20)
