"""Landscapes: slices, filter normalisation, trajectory PCA, barriers, Bézier curves, snapshots,
and `lossbench landscape` on a saved run, checked against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lossbench.landscape import (
    barrier_height,
    bezier_path,
    curvature_grid,
    eigen_directions,
    evaluate_grid,
    evaluate_points,
    filter_normalize,
    fit_bezier,
    linear_path,
    random_directions,
    trajectory_pca,
)
from lossbench.snapshots import load_snapshot, load_snapshots, save_snapshot, snapshot_steps
from lossbench.surfaces import SURFACES


def himmelblau(params, data=None):
    return SURFACES["himmelblau"].fn(params["x"], 1.0, 1.0)


def test_slice_along_coordinate_axes_is_the_surface_on_the_grid():
    with jax.enable_x64(True):
        origin = {"x": jnp.array([0.3, -0.7])}
        axes = ({"x": jnp.array([1.0, 0.0])}, {"x": jnp.array([0.0, 1.0])})
        a, b = np.linspace(-4, 4, 21), np.linspace(-3, 5, 17)
        values = evaluate_grid(himmelblau, origin, axes, (a, b), chunk=16)["loss"]
    x, y = np.meshgrid(0.3 + a, -0.7 + b, indexing="ij")
    expected = (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2
    assert values.shape == (21, 17)
    np.testing.assert_allclose(values, expected, rtol=1e-13, atol=1e-12)


def _flax_params(module) -> dict:
    return nnx.split(module, nnx.Param)[1].to_pure_dict()


class _ConvNet(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(8, 4, (5, 5), rngs=rngs)
        self.head = nnx.Linear(4, 10, rngs=rngs)


class _DenseNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(64, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 10, rngs=rngs)


@pytest.mark.parametrize("net", [_DenseNet, _ConvNet])
def test_filter_normalised_directions_match_the_weights_filter_norms(net):
    params = _flax_params(net(nnx.Rngs(0)))
    params = jax.tree_util.tree_map(lambda w: w + 0.1, params)  # nonzero biases too
    first, second = random_directions(jax.random.key(1), params, 2)
    flat_w = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_d = jax.tree_util.tree_leaves(first)
    kernels = 0
    for (path, w), d in zip(flat_w, flat_d, strict=True):
        w, d = np.asarray(w), np.asarray(d)
        if w.ndim == 1:
            assert np.all(d == 0), path  # biases zeroed by default
            continue
        kernels += 1
        for unit in range(w.shape[-1]):  # flax: one filter per output unit, the LAST axis
            np.testing.assert_allclose(
                np.linalg.norm(d[..., unit]), np.linalg.norm(w[..., unit]), rtol=1e-5
            )
        # a random direction, not the weights rescaled: filters point elsewhere
        cos = np.vdot(d, w) / (np.linalg.norm(d) * np.linalg.norm(w))
        assert abs(cos) < 0.5, path
        # normalising along the first axis (the PyTorch layout) would give other norms
        assert not np.allclose(np.linalg.norm(d[0]), np.linalg.norm(w[0]), rtol=1e-3)
    assert kernels >= 2
    # two independent directions
    assert not np.allclose(jax.tree_util.tree_leaves(second)[1], flat_d[1])
    kept = filter_normalize(first, params, one_d="weights")
    for (_, w), d in zip(flat_w, jax.tree_util.tree_leaves(kept), strict=True):
        if np.ndim(w) == 1:
            np.testing.assert_array_equal(d, w)  # Li et al.'s code without ignore='biasbn'


def test_filter_directions_need_kernels():
    with pytest.raises(ValueError, match="kind='filter' is not allowed"):
        random_directions(jax.random.key(0), {"x": jnp.zeros(2)})


def _random_tree(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (5, 3)), "b": jax.random.normal(k2, (3,))}


def test_pca_of_a_straight_trajectory_has_one_component_and_recovers_positions():
    final, step = _random_tree(jax.random.key(0)), _random_tree(jax.random.key(1))
    positions = np.array([3.0, 2.2, 1.5, 0.9, 0.4, 0.1, 0.0])
    snapshots = [
        jax.tree_util.tree_map(lambda f, s, c=c: f + c * s, final, step) for c in positions
    ]
    pca = trajectory_pca(snapshots, final)
    assert pca.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-6)
    assert pca.explained_variance_ratio[1] == pytest.approx(0.0, abs=1e-6)
    length = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree_util.tree_leaves(step)))
    np.testing.assert_allclose(pca.coords[:, 0], positions * length, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pca.coords[:, 1], 0, atol=1e-5)
    unit = jax.tree_util.tree_map(lambda s: s / length, step)
    for d, u in zip(
        jax.tree_util.tree_leaves(pca.directions[0]), jax.tree_util.tree_leaves(unit), strict=True
    ):
        np.testing.assert_allclose(d, u, atol=1e-5)


def test_pca_of_a_planar_trajectory_recovers_both_coordinates():
    final = _random_tree(jax.random.key(0))
    u, v = _random_tree(jax.random.key(1)), _random_tree(jax.random.key(2))
    t = np.linspace(0, 1, 12)
    xy = np.stack([2 * (1 - t), np.sin(3 * t) * (1 - t)], 1)
    snapshots = [
        jax.tree_util.tree_map(lambda f, a, b, c=c: f + c[0] * a + c[1] * b, final, u, v)
        for c in xy
    ]
    pca = trajectory_pca(snapshots, final)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-6)
    # coordinates in the PCA plane preserve every pairwise distance of the trajectory
    flat = np.stack(
        [np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(s)]) for s in snapshots]
    )
    true = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    got = np.linalg.norm(pca.coords[:, None] - pca.coords[None], axis=-1)
    np.testing.assert_allclose(got, true, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pca.coords[-1], 0, atol=1e-5)


def double_well(params, data=None):
    """h (x² - 1)² + c y²: minima (±1, 0) at 0, a saddle at the origin at height h."""
    x, y = params["x"][0], params["x"][1]
    return 2.0 * (x**2 - 1) ** 2 + 1.0 * y**2


def test_line_between_equal_parameters_is_flat():
    point = {"x": jnp.array([0.4, -1.3])}
    path = linear_path(double_well, point, point, points=11)
    np.testing.assert_array_equal(path["loss"], np.full(11, double_well(point)))
    assert barrier_height(path["t"], path["loss"])[0] == 0.0


def test_double_well_barrier_equals_the_analytic_height():
    with jax.enable_x64(True):
        # symmetric: minima (-1, 0) and (1, 0), the straight line crosses the saddle, h = 2
        path = linear_path(double_well, {"x": jnp.array([-1.0, 0.0])}, {"x": jnp.array([1.0, 0.0])})
        assert barrier_height(path["t"], path["loss"]) == pytest.approx((2.0, 0.5), abs=1e-12)
        # tilted ends (-1, 0.5) and (1, -0.5): the excess over the chord is h - c/4 at t = 1/2
        path = linear_path(
            double_well, {"x": jnp.array([-1.0, 0.5])}, {"x": jnp.array([1.0, -0.5])}, points=101
        )
        assert barrier_height(path["t"], path["loss"]) == pytest.approx((1.75, 0.5), abs=1e-12)


def ring(params, data=None):
    """(‖x‖² - 1)²: a circle of minima; chords between them cross a barrier."""
    return (jnp.sum(params["x"] ** 2) - 1.0) ** 2


@pytest.mark.slow
def test_bezier_curve_falls_below_the_linear_barrier():
    start, end = {"x": jnp.array([-1.0, 0.0])}, {"x": jnp.array([0.6, 0.8])}
    line = linear_path(ring, start, end, points=101)
    linear = barrier_height(line["t"], line["loss"])[0]
    assert linear == pytest.approx(0.64, abs=1e-3)  # chord at distance cos(63.4°) = 0.447
    bend, history = fit_bezier(ring, start, end, key=jax.random.key(0), steps=400, lr=0.02)
    curve = bezier_path(ring, start, bend, end, points=101)
    curved = barrier_height(curve["t"], curve["loss"])[0]
    assert curved < 0.05 * linear
    assert history[-50:].mean() < 0.05 * history[:5].mean()
    np.testing.assert_allclose(curve["loss"][[0, -1]], 0, atol=1e-6)  # the ends stay put


def saddle(params, data=None):
    """½ xᵀ A x + 0.1 ‖x‖⁴ with A = R diag(3, 1, -2) Rᵀ: a strict saddle at 0, H = A."""
    x = params["x"]
    return 0.5 * x @ SADDLE_A @ x + 0.1 * jnp.sum(x**2) ** 2


_R = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
SADDLE_A = jnp.asarray(_R @ np.diag([3.0, 1.0, -2.0]) @ _R.T, jnp.float32)


def test_saddle_slices_curve_down_along_the_bottom_and_up_along_the_top_eigenvector():
    point = {"x": jnp.zeros(3)}
    eig = eigen_directions(saddle, point, key=jax.random.key(0), top_k=1, bottom_k=1)
    np.testing.assert_allclose([eig["top_values"][0], eig["bottom_values"][0]], [3, -2], rtol=1e-4)
    h = 0.05
    steps = np.array([[-h], [0.0], [h]])
    for vector, curvature in ((eig["top"][0], 3.0), (eig["bottom"][0], -2.0)):
        f = evaluate_points(saddle, point, (vector,), steps)["loss"]
        second = (f[0] - 2 * f[1] + f[2]) / h**2
        assert np.sign(second) == np.sign(curvature)
        assert second == pytest.approx(curvature, rel=1e-2)


def test_curvature_grid_matches_the_dense_hessian_at_every_point():
    """λmax, λmin on a 3×3 grid around the saddle: H(x) = A + 0.4 (‖x‖² I + 2 x xᵀ)."""
    origin = {"x": jnp.array([0.1, -0.2, 0.3])}
    e1, e2 = {"x": jnp.array([1.0, 0.0, 0.0])}, {"x": jnp.array([0.0, 1.0, 0.0])}
    axes = (np.array([-3.0, 0.0, 0.5]), np.array([-3.0, 0.0, 1.0]))
    got = curvature_grid(saddle, origin, (e1, e2), axes, key=jax.random.key(0), lanczos_steps=3)
    for i, a in enumerate(axes[0]):
        for j, b in enumerate(axes[1]):
            x = np.array([0.1 + a, -0.2 + b, 0.3])
            dense = np.asarray(SADDLE_A) + 0.4 * (x @ x * np.eye(3) + 2 * np.outer(x, x))
            low, *_, high = np.linalg.eigvalsh(dense)
            assert got["lambda_max"][i, j] == pytest.approx(high, rel=1e-4)
            assert got["lambda_min"][i, j] == pytest.approx(low, rel=1e-4, abs=1e-5)
    assert got["lambda_min"][0, 0] > 0 > got["lambda_min"][1, 1]  # a minimum-like corner


def _digits_problem(*overrides):
    from lossbench import compose
    from lossbench.problem import build_problem
    from lossbench.schema import freeze

    return build_problem(freeze(compose("trainer.progress=false", *overrides)))


@pytest.mark.parametrize(
    "overrides",
    [(), ("model=linear", "loss=mse", "loss.l2=0.01"), ("model.activation=relu",)],
    ids=["mlp", "linear+l2", "relu"],
)
def test_first_layer_split_equals_the_plain_evaluation(overrides):
    """On a plane the first layer's pre-activation X W0 + a X D1 + b X D2 is computed from
    three products made once: the same metrics as the plain evaluation, point by point."""
    from lossbench.landscape import first_layer_split
    from lossbench.landscape.runs import make_metrics_fn, run_data

    problem = _digits_problem(*overrides)
    params = problem.init_params(jax.random.key(0))
    directions = random_directions(jax.random.key(1), params, 2, one_d="weights")  # biases move
    data = run_data(problem)
    split = first_layer_split(problem, params, {"": "train", "test_": "test"})
    assert split is not None
    axes = (np.linspace(-1, 1, 5), np.linspace(-0.5, 1.5, 4))
    plain = evaluate_grid(make_metrics_fn(problem), params, directions, axes, data, chunk=1)
    for chunk in (1, 8):
        fast = evaluate_grid(split, params, directions, axes, data, chunk=chunk)
        assert sorted(fast) == sorted(plain)
        for name in ("loss", "test_loss"):
            np.testing.assert_allclose(fast[name], plain[name], rtol=1e-5)
        for name in ("accuracy", "test_accuracy"):
            if name in plain:
                np.testing.assert_allclose(fast[name], plain[name], atol=1.5 / 1438)
    assert np.ptp(plain["loss"]) > 0.1 * np.min(plain["loss"])  # a plane, not a constant


def test_first_layer_split_refuses_other_models():
    from lossbench.landscape import first_layer_split

    problem = _digits_problem("model=deep_linear")
    assert first_layer_split(problem, problem.init_params(jax.random.key(0))) is None


def test_snapshots_round_trip_without_pickle(tmp_path):
    params = {
        "layers": {0: {"kernel": np.ones((2, 3, 4)), "bias": np.arange(3.0)}, 1: {"w": np.eye(2)}},
        "scale": np.float32(2.0),
    }
    for step in (0, 250, 20):
        save_snapshot(tmp_path, step, jax.tree_util.tree_map(lambda a, s=step: a + s, params))
    assert snapshot_steps(tmp_path) == [0, 20, 250]
    names = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert names == ["step_0000000.npz", "step_0000020.npz", "step_0000250.npz"]  # no temp file
    with np.load(tmp_path / "snapshots" / "step_0000020.npz", allow_pickle=False) as data:
        assert sorted(data.files) == sorted(
            ["['layers'][0]['bias']", "['layers'][0]['kernel']", "['layers'][1]['w']", "['scale']"]
        )
    steps, trees = load_snapshots(tmp_path)
    assert steps == [0, 20, 250]
    np.testing.assert_array_equal(trees[2]["layers"][0]["bias"], np.arange(3.0) + 250)
    assert jax.tree_util.tree_structure(trees[0]) == jax.tree_util.tree_structure(params)
    like = load_snapshot(tmp_path / "snapshots" / "step_0000020.npz", like=params)
    np.testing.assert_array_equal(like["layers"][1]["w"], np.eye(2) + 20)


def test_snapshot_write_is_atomic(tmp_path, monkeypatch):
    save_snapshot(tmp_path, 5, {"w": np.zeros(3)})

    def broken(handle, **arrays):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        save_snapshot(tmp_path, 5, {"w": np.ones(3)})
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["step_0000005.npz"]
    np.testing.assert_array_equal(load_snapshots(tmp_path)[1][0]["w"], np.zeros(3))


RUN = [
    "data=blobs",
    "model.widths=[8]",
    "trainer.steps=60",
    "trainer.seeds=2",
    "trainer.save_params=true",
    "probe=off",
]


# the tests of `saved_run` run on one xdist worker (`--dist loadgroup`): trained once
SAVED_RUN_GROUP = pytest.mark.xdist_group("landscape_saved_run")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A two-seed run with its final parameters, and snapshots on a straight line to them."""
    from conftest import run_overrides

    from lossbench.results import load_params

    summary, run_dir = run_overrides(tmp_path_factory.mktemp("landscape"), RUN)
    final = load_params(run_dir)  # leading seed axis
    offset = jax.tree_util.tree_map(
        lambda a: np.asarray(jax.random.normal(jax.random.key(3), a.shape)), final
    )
    positions = {0: 2.0, 20: 1.2, 40: 0.5, 60: 0.0}
    for step, c in positions.items():
        save_snapshot(
            run_dir, step, jax.tree_util.tree_map(lambda f, o, c=c: f + c * o, final, offset)
        )
    return summary, run_dir, positions


def _load(run_dir, name):
    from lossbench.landscape import load_landscape

    return load_landscape(run_dir / "landscape" / f"{name}.npz")  # allow_pickle=False


@pytest.mark.slow
@SAVED_RUN_GROUP
def test_landscape_command_on_a_saved_run(saved_run, capsys):
    import matplotlib.pyplot as plt
    from jax.flatten_util import ravel_pytree

    from lossbench.landscape import figures, landscape_main
    from lossbench.landscape.runs import final_params, run_context

    summary, run_dir, positions = saved_run
    final_loss = summary["final_loss_per_seed"]

    assert landscape_main([str(run_dir), "kind=filter", "grid=5", "curvature=3"]) == 0
    plane = _load(run_dir, "filter")
    assert plane["loss"].shape == (5, 5) and plane["lambda_max"].shape == (3, 3)
    assert plane["loss"][2, 2] == pytest.approx(final_loss[0], rel=1e-5)  # the centre is final
    assert plane["test_accuracy"][2, 2] == pytest.approx(summary["final_test_accuracy_per_seed"][0])
    assert plane["lambda_max"][1, 1] == pytest.approx(plane["center_lambda_max"], rel=1e-2)
    assert np.all(plane["lambda_min"] <= plane["lambda_max"])
    for name in ("filter_contour.png", "filter_surface.png", "filter_curvature.png"):
        assert (run_dir / "landscape" / name).stat().st_size > 0

    assert landscape_main([str(run_dir), "kind=pca", "grid=5"]) == 0
    pca = _load(run_dir, "pca")
    assert pca["explained_variance_ratio"][0] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(pca["path_steps"], list(positions))
    distance = np.linalg.norm(pca["path"], axis=1)
    np.testing.assert_allclose(
        distance / distance[0], np.array(list(positions.values())) / 2, atol=1e-4
    )

    fig = figures.plot_contour(pca)  # the projected path drawn, its start and end marked
    lines = {line.get_label(): line.get_xydata() for line in fig.axes[0].lines}
    np.testing.assert_allclose(lines["trajectory"], pca["path"])
    np.testing.assert_allclose(lines["start"], pca["path"][:1])
    np.testing.assert_allclose(lines["end (final)"], [[0, 0]])
    plt.close(fig)

    assert landscape_main([str(run_dir), "kind=eigen", "grid=3", "span=0.5"]) == 0
    eigen = _load(run_dir, "eigen")
    context = run_context(run_dir)  # ground truth: the dense Hessian at the final point
    flat, unravel = ravel_pytree(final_params(run_dir, context.problem, 0))
    dense = jax.jit(jax.hessian(lambda v: context.loss_fn(unravel(v), context.data)))(flat)
    exact = np.linalg.eigvalsh(np.asarray(dense, np.float64))
    assert eigen["eigenvalues"][0] == pytest.approx(exact[-1], rel=1e-3)
    assert eigen["eigenvalues"][1] == pytest.approx(exact[0], abs=1e-2 * exact[-1])
    np.testing.assert_allclose(eigen["direction_norms"], 1, rtol=1e-4)  # unit eigenvectors
    assert eigen["loss"][1, 1] == pytest.approx(final_loss[0], rel=1e-5)
    along_top = eigen["loss"][0, 1] - 2 * eigen["loss"][1, 1] + eigen["loss"][2, 1]
    assert along_top > 0  # the top eigenvector curves up

    assert landscape_main([str(run_dir), "kind=line", "grid=9", "bezier=20"]) == 0  # seed 0 -> 1
    line = _load(run_dir, "line")
    assert line["loss"][0] == pytest.approx(final_loss[0], rel=1e-5)
    assert line["loss"][-1] == pytest.approx(final_loss[1], rel=1e-5)
    assert line["barrier_loss"] >= 0
    assert line["bezier_loss"][0] == pytest.approx(final_loss[0], rel=1e-5)
    assert (run_dir / "landscape" / "line.png").exists()
    fig = figures.plot_line(line)  # the barrier height written on the curve
    assert f"barrier {line['barrier_loss']:.3g}" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)

    # other=RUN_DIR2 (here the run itself): seed 0 to seed 0 is a flat line, no barrier
    assert (
        landscape_main([str(run_dir), "kind=line", "grid=5", f"other={run_dir}", "name=self"]) == 0
    )
    flat_line = _load(run_dir, "self")
    np.testing.assert_allclose(flat_line["loss"], final_loss[0], rtol=1e-5)
    assert flat_line["barrier_loss"] == pytest.approx(0, abs=1e-5 * final_loss[0])
    capsys.readouterr()


@pytest.mark.slow
@SAVED_RUN_GROUP
@pytest.mark.parametrize(
    "args, message",
    [
        (["grid=abc"], "grid='abc' is not allowed: an integer >= 3"),
        (
            ["kind=hessian"],
            "kind='hessian' is not allowed: one of ['filter', 'eigen', 'pca', 'line']",
        ),
        (["colour=red"], "colour='red' is not allowed: a key in"),
        (["span=-1"], "span='-1' is not allowed: a positive number"),
        (["other=/nonexistent"], "other='/nonexistent' is not allowed: a run directory"),
        (["kind=pca", "seed=5"], "seed=5 is not allowed: a seed index in [0, 1]"),
        (["kind=filter", "bezier=10"], "bezier=10 is not allowed with kind=filter: kind=line"),
        (["kind=line", "span=2"], "span=2.0 is not allowed with kind=line: kind=filter, eigen"),
    ],
)
def test_landscape_command_rejects_bad_arguments_in_one_line(saved_run, capsys, args, message):
    from lossbench.landscape import landscape_main

    _, run_dir, _ = saved_run
    assert landscape_main([str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.slow
@SAVED_RUN_GROUP
def test_lossbench_landscape_console_command(saved_run):
    from conftest import cli, cli_in_process

    _, run_dir, _ = saved_run
    result = cli("landscape", str(run_dir), "grid=2")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: grid='2' is not allowed: an integer >= 3"
    assert cli_in_process("landscape").returncode == 2  # usage


@pytest.mark.slow
@SAVED_RUN_GROUP
def test_landscape_never_overwrites_files_it_did_not_write(saved_run, capsys):
    from lossbench.landscape import landscape_main

    _, run_dir, _ = saved_run
    (run_dir / "landscape").mkdir(exist_ok=True)
    mine = run_dir / "landscape" / "notes.png"
    mine.write_bytes(b"a user's file")
    assert landscape_main([str(run_dir), "kind=line", "grid=5", "name=notes"]) == 2
    assert "name='notes' is not allowed" in capsys.readouterr().err
    assert mine.read_bytes() == b"a user's file"
    assert not (run_dir / "landscape" / "notes.npz").exists()
    assert landscape_main([str(run_dir), "kind=line", "grid=5", "name=mine"]) == 0
    written = run_dir / "landscape" / "mine.npz"
    before = written.stat().st_mtime_ns
    written.write_bytes(b"stale")  # lossbench's own file: rewritten
    assert landscape_main([str(run_dir), "kind=line", "grid=5", "name=mine"]) == 0
    assert written.stat().st_mtime_ns >= before
    assert _load(run_dir, "mine")["t"].shape == (5,)


def test_trainer_snapshot_every_records_the_trajectory_for_pca(tmp_path):
    """`trainer.snapshot_every` saves the parameters at step 0, every N steps and the last;
    the saved parameters are the run's (the last snapshot equals the final checkpoint)."""
    from conftest import run_overrides

    from lossbench.landscape import landscape_main
    from lossbench.results import load_params

    _, run_dir = run_overrides(
        tmp_path,
        [
            "model.widths=[8]",
            "probe=off",
            "trainer.steps=25",
            "trainer.chunk=10",
            "trainer.snapshot_every=10",
            "trainer.save_params=true",
        ],
    )
    steps, trees = load_snapshots(run_dir)
    assert list(steps) == [0, 10, 20, 25]
    final = load_params(run_dir)
    for got, want in zip(
        jax.tree_util.tree_leaves(trees[-1]), jax.tree_util.tree_leaves(final), strict=True
    ):
        np.testing.assert_allclose(np.reshape(got, np.shape(want)), want, rtol=0, atol=0)
    assert landscape_main([str(run_dir), "kind=pca", "grid=3"]) == 0
