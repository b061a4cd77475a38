"""Ground-truth tests for lossbench.curvature: every figure against a dense `jax.hessian`.

The reference is `eigh` of the dense Hessian (or Gauss-Newton matrix) of a small tanh MLP
(1,244 parameters) trained a little, so its spectrum has both signs. Float64 runs inside the
`x64` fixture only, so other test files keep JAX's float32 default. Compilation dominates the
run time, so the jitted functions are defined once at module level and shared between tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx
from jax.flatten_util import ravel_pytree

from lossbench import curvature as cv
from lossbench.schema import ProbeConfig, freeze

SIZES = (10, 32, 24, 4)
LANCZOS_STEPS = 80
BLOCK_NAMES = [f"layers/{i}/{leaf}" for i in range(3) for leaf in ("bias", "kernel")]

# One xdist worker runs this module (`--dist loadgroup`): the dense Hessian and Gauss-Newton
# references (module fixtures) are built once, not once per worker.
pytestmark = pytest.mark.xdist_group("curvature_dense_references")


def init_mlp(key, sizes=SIZES):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        key, sub = jax.random.split(key)
        kernel = jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in)
        layers.append({"kernel": kernel, "bias": jnp.zeros(fan_out)})
    return {"layers": layers}


@jax.jit
def init_mlp64(key):
    """`init_mlp` in float64 as one program (call inside x64)."""
    return as_dtype(init_mlp(key), jnp.float64)


@jax.jit
def make_batch(key):
    """128 float64 inputs and their labels (call inside x64)."""
    key_x, key_y = jax.random.split(key)
    x = jax.random.normal(key_x, (128, SIZES[0]), jnp.float64)
    return x, jax.random.randint(key_y, (128,), 0, SIZES[-1])


def predict(params, x):
    for index, layer in enumerate(params["layers"]):
        x = x @ layer["kernel"] + layer["bias"]
        if index < len(params["layers"]) - 1:
            x = jnp.tanh(x)
    return x


def cross_entropy(logits, labels):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def mse(outputs, targets):
    return jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


def probe_loss(params, batch):
    x, labels = batch
    return cross_entropy(predict(params, x), labels)


def as_dtype(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


# numpy, not jax ops: each eager jax op is a compile of its own (ravel_pytree's order)
def flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def flat_rows(tree_with_leading_axis):
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree_with_leading_axis)]
    return np.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)


def leading(tree, index):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], tree)


def zeros_like(tree):
    return jax.tree_util.tree_map(np.zeros_like, tree)


# one program each, shared by the fixture and the tests (the MLP's shapes, any dtype)
GRAD = jax.jit(jax.grad(probe_loss))


@jax.jit
def descend(params, batch, steps):
    """`steps` gradient-descent steps of size 0.5."""
    step = lambda _, p: jax.tree_util.tree_map(lambda a, g: a - 0.5 * g, p, GRAD(p, batch))
    return jax.lax.fori_loop(0, steps, step, params)


@jax.jit
def dense_hessian(params, batch):
    flat_params, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: probe_loss(unravel(f), batch))(flat_params)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def problem():
    """A trained-a-little MLP, its data and the dense Hessian's spectrum (float64, numpy)."""
    with jax.enable_x64(True):
        params = init_mlp64(jax.random.PRNGKey(0))
        x, labels = make_batch(jax.random.PRNGKey(1))
        params = descend(params, (x, labels), 50)
        hessian = np.asarray(dense_hessian(params, (x, labels)))
        n = hessian.shape[0]
        values = np.linalg.eigvalsh(hessian)
        _, vectors = scipy.linalg.eigh(hessian, subset_by_index=[n - 5, n - 1])
        return {
            "params": jax.tree_util.tree_map(np.asarray, params),
            "batch": (np.asarray(x), np.asarray(labels)),
            "hessian": np.asarray(hessian),
            "values": values,
            "vectors": vectors,  # the top 5, ascending like values
            "grad": flat(GRAD(params, (x, labels))),
        }


def inputs64(problem):
    """Params and batch as float64 jax arrays (call inside the x64 fixture)."""
    x, labels = problem["batch"]
    return as_dtype(problem["params"], jnp.float64), (jnp.asarray(x), jnp.asarray(labels))


def loss_at(batch):
    return lambda p: probe_loss(p, batch)


@jax.jit
def eigen_80(params, batch, key):
    return cv.hessian_eigenvalues(
        loss_at(batch), params, key=key, lanczos_steps=LANCZOS_STEPS, top_k=5, bottom_k=3
    )


@jax.jit
def eigen_15_both_residuals(params, batch, key, v0):
    """15 steps: bottom pairs unconverged, so their residuals are large enough to compare."""
    options = dict(key=key, lanczos_steps=15, top_k=3, bottom_k=3, v0=v0)
    return (
        cv.hessian_eigenvalues(loss_at(batch), params, residuals="lanczos", **options),
        cv.hessian_eigenvalues(loss_at(batch), params, residuals="matvec", **options),
    )


def test_the_reference_spectrum_has_both_signs(problem):
    values = problem["values"]
    assert values[0] < -0.01 * values[-1] < 0 < values[-1]


def test_hvp_and_matvecs_equal_dense_hessian_products(problem, x64):
    params, batch = inputs64(problem)
    unravel = ravel_pytree(params)[1]
    v = jax.random.normal(jax.random.PRNGKey(2), (problem["hessian"].shape[0],), jnp.float64)

    @jax.jit
    def products(params, batch, v):
        loss = loss_at(batch)
        return (
            cv.hvp(loss, params, unravel(v)),
            cv.hessian_matvec(loss, params)(unravel(v)),
            cv.hessian_matvec(loss, params, linearize=False)(unravel(v)),
            cv.hvp(jax.jit(loss), params, unravel(v)),
        )

    for product in products(params, batch, v):
        np.testing.assert_allclose(flat(product), problem["hessian"] @ v, rtol=1e-10, atol=1e-12)


def test_eigenvalues_float64_match_dense_eigh(problem, x64):
    params, batch = inputs64(problem)
    result, values = eigen_80(params, batch, jax.random.PRNGKey(3)), problem["values"]
    lam_max, lam_min = values[-1], values[0]
    assert result.top.dtype == jnp.float64
    np.testing.assert_allclose(result.top, values[::-1][:5], rtol=1e-8)
    np.testing.assert_allclose(result.lambda_max, lam_max, rtol=1e-8)
    assert abs(result.lambda_min - lam_min) <= 1e-4 * abs(lam_min)
    assert result.bottom[0] == result.lambda_min
    np.testing.assert_allclose(result.bottom, values[:3], rtol=0, atol=1e-3 * lam_max)
    # Ritz values are Rayleigh quotients: never below the true λmin (up to rounding), so a
    # negative one is certain negative curvature.
    assert np.all(np.asarray(result.bottom) >= lam_min - 1e-10 * lam_max)
    assert result.lambda_min < 0
    assert np.all(np.diff(result.top) <= 0) and np.all(np.diff(result.bottom) >= 0)


def test_eigenvalues_float32_match_dense_eigh(problem):
    x, labels = problem["batch"]
    params, batch = as_dtype(problem["params"], jnp.float32), (jnp.asarray(x, jnp.float32), labels)
    result = eigen_80(params, batch, jax.random.PRNGKey(3))
    assert result.top.dtype == jnp.float32
    np.testing.assert_allclose(result.top, problem["values"][::-1][:5], rtol=1e-3)
    assert abs(result.lambda_min - problem["values"][0]) <= 1e-2 * abs(problem["values"][0])


def test_ritz_vectors_and_residuals_match_dense(problem, x64):
    params, batch = inputs64(problem)
    hessian, lam_max = problem["hessian"], problem["values"][-1]
    zeros = zeros_like(params)  # zero v0: a cold start
    by_lanczos, by_matvec = eigen_15_both_residuals(params, batch, jax.random.PRNGKey(4), zeros)
    np.testing.assert_array_equal(by_lanczos.top, by_matvec.top)
    for result in (by_lanczos, by_matvec):
        for values, vectors, reported in (
            (result.top, result.top_vectors, result.residuals_top),
            (result.bottom, result.bottom_vectors, result.residuals_bottom),
        ):
            rows = flat_rows(vectors)
            np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, rtol=1e-10)
            rayleigh = np.einsum("kn,kn->k", rows, rows @ hessian)
            np.testing.assert_allclose(rayleigh, values, rtol=1e-10)
            dense = np.linalg.norm(rows @ hessian - np.asarray(values)[:, None] * rows, axis=1)
            np.testing.assert_allclose(reported, dense, rtol=1e-4, atol=1e-10 * lam_max)
        assert np.min(result.residuals_bottom) > 1e-4 * lam_max  # the comparison is not vacuous
    top_dense = problem["vectors"][:, -1]
    assert abs(flat_rows(by_lanczos.top_vectors)[0] @ top_dense) > 1 - 1e-6


def test_warm_start_from_the_top_eigenvector_reduces_its_residual(problem, x64):
    params, batch = inputs64(problem)
    unravel = ravel_pytree(params)[1]
    zeros = zeros_like(params)
    warm_vector = unravel(jnp.asarray(problem["vectors"][:, -1]))
    for seed in range(3):
        cold, _ = eigen_15_both_residuals(params, batch, jax.random.PRNGKey(seed), zeros)
        warm, _ = eigen_15_both_residuals(params, batch, jax.random.PRNGKey(seed), warm_vector)
        assert warm.residuals_top[0] < cold.residuals_top[0] / 10
        # the random part of the start keeps the bottom of the spectrum in view
        assert warm.lambda_min <= 0.9 * cold.lambda_min < 0


@jax.jit
def saddle_eigenvalues(origin, key):
    saddle = lambda p: p["x"] ** 2 - p["y"] ** 2
    return cv.hessian_eigenvalues(saddle, origin, key=key, lanczos_steps=80, top_k=2, bottom_k=2)


def test_saddle_eigenvalues_are_exactly_plus_minus_two(x64):
    """f(x, y) = x² - y² at the origin; steps clipped from 80 to 2."""
    origin = {"x": jnp.zeros((), jnp.float64), "y": jnp.zeros((), jnp.float64)}
    for seed in range(3):
        result = saddle_eigenvalues(origin, jax.random.PRNGKey(seed))
        np.testing.assert_allclose(result.top, [2, -2], rtol=1e-14)
        np.testing.assert_allclose(result.bottom, [-2, 2], rtol=1e-14)
        np.testing.assert_allclose(abs(result.top_vectors["x"][0]), 1, rtol=1e-14)
        np.testing.assert_allclose(abs(result.bottom_vectors["y"][0]), 1, rtol=1e-14)
        np.testing.assert_allclose(result.residuals_top, 0, atol=1e-14)


def test_plain_float32_call_on_the_saddle():
    saddle = lambda p: p["x"] ** 2 - p["y"] ** 2
    origin = {"x": jnp.zeros(()), "y": jnp.zeros(())}
    result = cv.hessian_eigenvalues(saddle, origin, key=jax.random.PRNGKey(0), top_k=2)
    assert result.top.dtype == jnp.float32
    np.testing.assert_allclose(result.top, [2, -2], rtol=1e-6)
    np.testing.assert_allclose(result.bottom, [-2], rtol=1e-6)


@jax.jit
def degenerate_cases(key):
    origin = {"x": jnp.zeros(()), "y": jnp.zeros(())}
    bowl = lambda p: p["x"] ** 2 + p["y"] ** 2
    flat_origin = lambda p: p["x"] ** 3 * p["y"] ** 2
    return (
        cv.hessian_eigenvalues(bowl, origin, key=key, lanczos_steps=10, top_k=2),
        cv.hessian_eigenvalues(flat_origin, origin, key=key, lanczos_steps=10),
        cv.spectral_density(bowl, origin, key=key, lanczos_steps=5, samples=3),
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_breakdown_gives_exact_values_not_nan(seed):
    """Isotropic bowl (H = 2I) and a zero Hessian: the Krylov space is invariant after 1 step
    (exactly, or up to rounding, depending on the start vector)."""
    bowl, flat_origin, density = degenerate_cases(jax.random.PRNGKey(seed))
    np.testing.assert_allclose([bowl.lambda_max, bowl.lambda_min, bowl.top[0]], 2, rtol=1e-6)
    assert bowl.residuals_top[0] <= 1e-5
    assert np.isnan(bowl.top[1])  # not in the Krylov space: reported as missing
    assert flat_origin.lambda_max == 0 and flat_origin.lambda_min == 0
    np.testing.assert_allclose(density.nodes, 2, rtol=1e-6)
    np.testing.assert_allclose(density.weights.sum(), 1, rtol=1e-6)


@jax.jit(static_argnums=(2, 3))
def quadratic_trace(matrix, key, samples, method):
    """Trace of the Hessian of ½ wᵀ A w, which is A."""
    quadratic = lambda w: 0.5 * w @ matrix @ w
    return cv.hessian_trace(quadratic, matrix[0], key=key, samples=samples, method=method)


@pytest.mark.parametrize("method", ["hutchinson", "xtrace"])
def test_trace_within_three_sem_and_sem_shrinks(problem, x64, method):
    """On the MLP's dense Hessian; the MLP's own HVPs are checked in the probe test."""
    hessian, exact = jnp.asarray(problem["hessian"]), np.trace(problem["hessian"])
    few = quadratic_trace(hessian, jax.random.PRNGKey(5), 10, method)
    many = quadratic_trace(hessian, jax.random.PRNGKey(6), 100, method)
    for result in (few, many):
        assert result.sem > 0 and abs(result.estimate - exact) <= 3 * result.sem
    assert many.sem < few.sem / 2


def test_xtrace_is_exact_when_samples_cover_half_the_dimension(x64):
    result = quadratic_trace(jnp.diag(jnp.arange(-2.0, 4.0)), jax.random.PRNGKey(0), 3, "xtrace")
    np.testing.assert_allclose(result.estimate, 3.0, rtol=1e-12)
    assert result.sem == 0


def test_lanczos_quadrature_reproduces_moments(problem, x64):
    """Gauss quadrature from m Lanczos steps is exact for polynomials of degree ≤ 2m - 1."""
    hessian = jnp.asarray(problem["hessian"])
    v = jax.random.rademacher(jax.random.PRNGKey(7), (hessian.shape[0],), jnp.float64)
    nodes, weights = jax.jit(
        lambda m, v: cv.lanczos_quadrature(lambda u: m @ u, v, lanczos_steps=10)
    )(hessian, v)
    nodes, weights = np.asarray(nodes), np.asarray(weights)  # numpy: no eager op compiles
    np.testing.assert_allclose(weights.sum(), 1, rtol=1e-12)
    q = np.asarray(v) / np.linalg.norm(v)
    power = q
    for degree in range(1, 8):
        power = problem["hessian"] @ power
        np.testing.assert_allclose(np.sum(weights * nodes**degree), q @ power, rtol=1e-8)


def test_spectral_density_integrates_to_one_and_first_moment_is_trace_over_n(problem, x64):
    params, batch = inputs64(problem)
    values, samples = problem["values"], 8
    density = jax.jit(
        lambda p, b, k: cv.spectral_density(loss_at(b), p, key=k, lanczos_steps=30, samples=8)
    )(params, batch, jax.random.PRNGKey(8))
    assert density.nodes.shape == density.weights.shape == (samples, 30)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1 / samples, rtol=1e-12)
    np.testing.assert_allclose(density.weights.sum(), 1, rtol=1e-12)
    # Ritz values interlace: every node lies inside the spectrum.
    slack = 1e-10 * values[-1]
    assert np.all((density.nodes >= values[0] - slack) & (density.nodes <= values[-1] + slack))
    sigma = 0.01 * (values[-1] - values[0])
    grid = np.linspace(values[0] - 8 * sigma, values[-1] + 8 * sigma, 20001)
    np.testing.assert_allclose(np.trapezoid(density.density(grid, sigma), grid), 1, rtol=1e-6)
    # Each sample's first moment is a Hutchinson estimate of tr(H)/n (the exact per-sample
    # identity is tested above); their mean must lie within a few standard errors.
    per_sample = samples * np.sum(density.weights * density.nodes, axis=1)
    sem = per_sample.std(ddof=1) / np.sqrt(samples)
    assert abs(per_sample.mean() - values.mean()) <= 4 * sem
    np.testing.assert_allclose(np.sum(density.weights * density.nodes), per_sample.mean())


def test_negative_mass_counts_negative_eigenvalues_of_a_diagonal_quadratic():
    """Rademacher probes give weight exactly 1/n to each eigenvalue of a diagonal matrix."""
    diagonal = jnp.array([-3.0, -1.5, -0.5, -0.001, 0.0005, 0.7, 1.1, 2.0, 2.5, 3.0, 4.0, 5.0])
    quadratic = lambda w: 0.5 * jnp.sum(diagonal * w**2)
    density = jax.jit(
        lambda w, k: cv.spectral_density(quadratic, w, key=k, lanczos_steps=12, samples=2)
    )(jnp.ones(12), jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.sort(density.nodes[0]), diagonal, atol=1e-5)
    np.testing.assert_allclose(density.weights, 1 / 24, rtol=1e-4)
    np.testing.assert_allclose(density.negative_mass(tol=1e-3), 3 / 12, rtol=1e-4)
    np.testing.assert_allclose(density.negative_mass(tol=0.0), 4 / 12, rtol=1e-4)


def dense_output_jacobian(problem):
    """The dense Jacobian J of the MLP outputs (128 × 4) in the parameters: the Gauss-Newton
    matrix of an outer loss is Jᵀ H_out J (call inside x64)."""
    params, (x, _) = inputs64(problem)
    flat_params, unravel = ravel_pytree(params)
    return jax.jacfwd(lambda f: predict(unravel(f), x).reshape(-1))(flat_params)


def dense_output_hessian(problem, loss_on_outputs):
    """The dense Hessian H_out of the outer loss in the flattened outputs (call inside x64)."""
    params, (x, _) = inputs64(problem)
    outputs = predict(params, x)
    return jax.hessian(lambda o: loss_on_outputs(o.reshape(outputs.shape)))(outputs.reshape(-1))


def outer_losses(labels):
    targets = jax.nn.one_hot(labels, SIZES[-1], dtype=jnp.float64)
    return {"mse": lambda o: mse(o, targets), "cross_entropy": lambda o: cross_entropy(o, labels)}


@pytest.fixture(scope="module")
def ggn_reference(problem):
    """Dense Gauss-Newton matrices (MSE, cross-entropy), with the cross-entropy spectrum and
    diagonal-block top eigenvalues."""
    with jax.enable_x64(True):
        labels = jnp.asarray(problem["batch"][1])
        jacobian, output_hessians = jax.jit(
            lambda: (
                dense_output_jacobian(problem),
                {n: dense_output_hessian(problem, f) for n, f in outer_losses(labels).items()},
            )
        )()
    # the products in numpy (its BLAS): XLA's unoptimised float64 dot took seconds
    jacobian = np.asarray(jacobian)
    matrices = {name: jacobian.T @ np.asarray(h) @ jacobian for name, h in output_hessians.items()}
    return {
        **matrices,
        "values": np.linalg.eigvalsh(matrices["cross_entropy"]),
        "blocks": dense_blocks_top(problem, matrices["cross_entropy"]),
    }


@pytest.mark.parametrize("outer", ["mse", "cross_entropy"])
def test_ggn_matvec_equals_dense_jt_h_j(problem, ggn_reference, x64, outer):
    params, (x, labels) = inputs64(problem)
    loss_on_outputs = outer_losses(labels)[outer]
    ggn = ggn_reference[outer]
    unravel = ravel_pytree(params)[1]
    v = jax.random.normal(jax.random.PRNGKey(9), (ggn.shape[0],), jnp.float64)
    predict_at = lambda p: predict(p, x)
    by_vp, by_matvec = jax.jit(
        lambda p, v: (
            cv.ggn_vp(predict_at, loss_on_outputs, p, unravel(v)),
            cv.ggn_matvec(predict_at, loss_on_outputs, p)(unravel(v)),
        )
    )(params, v)
    for product in (by_vp, by_matvec):
        np.testing.assert_allclose(flat(product), ggn @ np.asarray(v), rtol=1e-10, atol=1e-13)
    if outer == "cross_entropy":
        values = ggn_reference["values"]
        result, blocks = jax.jit(
            lambda p, k: (
                cv.ggn_eigenvalues(
                    predict_at, loss_on_outputs, p, key=k, lanczos_steps=LANCZOS_STEPS, top_k=3
                ),
                cv.block_top_ggn_eigenvalues(
                    predict_at, loss_on_outputs, p, key=k, lanczos_steps=LANCZOS_STEPS
                ),
            )
        )(params, jax.random.PRNGKey(10))
        np.testing.assert_allclose(result.top, values[::-1][:3], rtol=1e-8)
        assert result.lambda_min >= -1e-10 * values[-1]  # positive semi-definite
        assert list(blocks) == BLOCK_NAMES
        for name, expected in ggn_reference["blocks"].items():
            np.testing.assert_allclose(blocks[name], expected, rtol=1e-8, err_msg=name)


def dense_blocks_top(problem, matrix):
    """Top eigenvalue of each diagonal block (one per parameter leaf) of a dense matrix."""
    start, tops = 0, {}
    for name, leaf in zip(BLOCK_NAMES, jax.tree_util.tree_leaves(problem["params"]), strict=True):
        stop = start + leaf.size
        tops[name] = np.linalg.eigvalsh(matrix[start:stop, start:stop])[-1]
        start = stop
    return tops


def test_block_top_eigenvalues_equal_dense_diagonal_blocks(problem, x64):
    params, batch = inputs64(problem)
    blocks = jax.jit(
        lambda p, b, k: cv.block_top_eigenvalues(loss_at(b), p, key=k, lanczos_steps=LANCZOS_STEPS)
    )(params, batch, jax.random.PRNGKey(11))
    assert list(blocks) == BLOCK_NAMES
    for name, expected in dense_blocks_top(problem, problem["hessian"]).items():
        np.testing.assert_allclose(blocks[name], expected, rtol=1e-8, err_msg=name)


def test_block_names_of_flax_nnx_state():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])

    _, state = nnx.split(Net(nnx.Rngs(0)), nnx.Param)
    names = [name for name, _, _ in cv.parameter_blocks(state)]
    assert names == ["layers/0/bias", "layers/0/kernel", "layers/1/bias", "layers/1/kernel"]


def probe_config(**overrides):
    settings = dict(
        lanczos_steps=LANCZOS_STEPS, top_k=3, bottom_k=2, trace_samples=20,
        trace_method="hutchinson", density_samples=0, density_steps=20, per_layer=False,
    )  # fmt: skip
    settings.update(overrides)
    return freeze(ProbeConfig(**settings))


PROBE_CONFIG = probe_config()
PROBE = cv.make_probe(PROBE_CONFIG, probe_loss)
PROBE_JIT = jax.jit(PROBE)


def test_probe_record_matches_dense_figures(problem, x64):
    params, batch = inputs64(problem)
    zeros = zeros_like(params)
    record, v_next = PROBE_JIT(params, batch, jax.random.PRNGKey(12), zeros)
    assert sorted(record) == sorted(cv.record_keys(PROBE_CONFIG))
    values, vectors, hessian, grad = (problem[k] for k in ("values", "vectors", "hessian", "grad"))
    np.testing.assert_allclose(record["loss"], jax.jit(probe_loss)(params, batch), rtol=1e-12)
    np.testing.assert_allclose(record["grad_norm"], np.linalg.norm(grad), rtol=1e-10)
    np.testing.assert_allclose(
        record["grad_curvature"], grad @ hessian @ grad / (grad @ grad), rtol=1e-10
    )
    np.testing.assert_allclose(record["lambda_max"], values[-1], rtol=1e-8)
    assert abs(record["lambda_min"] - values[0]) <= 1e-4 * abs(values[0])
    np.testing.assert_allclose(record["eig_ratio"], record["lambda_min"] / record["lambda_max"])
    for i in range(1, 4):
        np.testing.assert_allclose(record[f"eig_top_{i}"], values[-i], rtol=1e-8)
        expected_overlap = abs(grad @ vectors[:, -i]) / np.linalg.norm(grad)
        np.testing.assert_allclose(record[f"grad_overlap_{i}"], expected_overlap, atol=1e-6)
        assert record[f"res_top_{i}"] <= 1e-8 * values[-1]
    for i in range(1, 3):
        assert abs(record[f"eig_bottom_{i}"] - values[i - 1]) <= 1e-3 * values[-1]
        assert record[f"res_bottom_{i}"] >= 0
    np.testing.assert_allclose(abs(flat(v_next) @ vectors[:, -1]), 1, atol=1e-8)
    assert abs(record["trace"] - np.trace(hessian)) <= 3 * record["trace_sem"]


def test_probe_under_jit_vmap_over_seeds_matches_unbatched_calls(problem, x64):
    _, batch = inputs64(problem)
    seeds = [init_mlp64(jax.random.PRNGKey(s)) for s in (20, 21)]
    stacked = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *seeds)
    keys = jax.random.split(jax.random.PRNGKey(13), 2)
    # a warm start for seed 0, a cold one (zeros) for seed 1
    v0 = jax.tree_util.tree_map(lambda a: np.concatenate([a[:1], np.zeros_like(a[1:])]), stacked)
    batched, v_next = jax.jit(jax.vmap(PROBE, in_axes=(0, None, 0, 0)))(stacked, batch, keys, v0)
    assert sorted(batched) == sorted(cv.record_keys(PROBE_CONFIG))
    for seed, params in enumerate(seeds):
        record, v_single = PROBE_JIT(params, batch, keys[seed], leading(v0, seed))
        scale = abs(float(record["lambda_max"]))
        for name, value in record.items():
            np.testing.assert_allclose(
                batched[name][seed], value, rtol=1e-7, atol=1e-9 * scale, err_msg=name
            )
        overlap = flat(leading(v_next, seed)) @ flat(v_single)
        np.testing.assert_allclose(abs(overlap), 1, atol=1e-9)
    assert batched["lambda_max"][0] != batched["lambda_max"][1]


def test_probe_at_a_zero_gradient_saddle_has_no_nan():
    cfg = probe_config(
        lanczos_steps=20, top_k=2, bottom_k=2, trace_samples=2, density_samples=1, per_layer=True
    )  # every figure on, per-layer blocks x and y
    saddle = lambda p, batch: p["x"] ** 2 - p["y"] ** 2
    origin = {"x": jnp.zeros(()), "y": jnp.zeros(())}
    record, _ = jax.jit(cv.make_probe(cfg, saddle))(origin, None, jax.random.PRNGKey(0), None)
    assert sorted(record) == sorted(cv.record_keys(cfg, origin))
    for name, value in record.items():
        assert np.all(np.isfinite(value)), name
    assert record["grad_norm"] == 0 and record["grad_curvature"] == 0
    assert record["grad_overlap_1"] == 0 and record["grad_overlap_2"] == 0
    np.testing.assert_allclose([record["lambda_max"], record["lambda_min"]], [2, -2], rtol=1e-6)
    np.testing.assert_allclose(record["eig_ratio"], -1, rtol=1e-6)
    np.testing.assert_allclose(record["trace"], 0, atol=1e-6)
    np.testing.assert_allclose(record["neg_mass"], 0.5, rtol=1e-6)
    assert record["density_nodes"].shape == record["density_weights"].shape == (1, 2)
    np.testing.assert_allclose(record["density_weights"].sum(), 1, rtol=1e-6)
    np.testing.assert_allclose(record["layer_lambda_max/x"], 2, rtol=1e-6)
    np.testing.assert_allclose(record["layer_lambda_max/y"], -2, rtol=1e-6)


def test_probe_with_gauss_newton_curvature(problem, ggn_reference, x64):
    params, batch = inputs64(problem)
    ggn = ggn_reference["cross_entropy"]
    cfg = probe_config(curvature="ggn", trace_samples=0)
    probe = cv.make_probe(
        cfg,
        probe_loss,
        predict=lambda p, b: predict(p, b[0]),
        loss_on_outputs=lambda out, b: cross_entropy(out, b[1]),
    )
    record, _ = jax.jit(probe)(params, batch, jax.random.PRNGKey(16), None)
    assert sorted(record) == sorted(cv.record_keys(cfg))
    grad = problem["grad"]
    np.testing.assert_allclose(record["lambda_max"], ggn_reference["values"][-1], rtol=1e-8)
    assert record["lambda_min"] >= -1e-10 * record["lambda_max"]
    np.testing.assert_allclose(
        record["grad_curvature"], grad @ ggn @ grad / (grad @ grad), rtol=1e-10
    )


def test_probe_config_errors_name_the_key():
    with pytest.raises(ValueError, match="probe.curvature='ggn'"):
        cv.make_probe(probe_config(curvature="ggn"), probe_loss)
    with pytest.raises(ValueError, match="probe.trace_method='exact'"):
        cv.make_probe(probe_config(trace_method="exact"), probe_loss)
    with pytest.raises(ValueError, match="probe.trace_samples=1"):
        cv.make_probe(probe_config(trace_samples=1), probe_loss)


# --- the Lanczos kernel against matfree's (the oracle), warm budgets, compile caching ---


def matfree_ritz_values(matvec, start, num_steps):
    """Ritz values from matfree's full-reorthogonalisation tridiagonalisation."""
    from matfree import decomp

    _, (diagonal, off_diagonal), *_ = decomp.tridiag_sym(
        num_steps, reortho="full", materialize=False, custom_vjp=False
    )(matvec, start)
    return jax.scipy.linalg.eigh_tridiagonal(diagonal, off_diagonal, eigvals_only=True)


@pytest.mark.parametrize("num_steps", [20, 40, 80])
def test_lanczos_kernel_matches_matfree_ritz_values_float64(problem, x64, num_steps):
    hessian = jnp.asarray(problem["hessian"])
    start = jax.random.normal(jax.random.PRNGKey(30), (hessian.shape[0],), jnp.float64)
    # the matrix goes in as an argument: closed over, its 12 MB would be a constant that
    # XLA folds and the compilation cache stores, seconds a compile
    decomposition = jax.jit(lambda m, s: cv.lanczos(lambda v: m @ v, s, num_steps))(hessian, start)
    assert decomposition.size == num_steps
    ours = np.linalg.eigvalsh(np.asarray(decomposition.tridiagonal))
    oracle = np.asarray(
        jax.jit(lambda m, s: matfree_ritz_values(lambda v: m @ v, s, num_steps))(hessian, start)
    )
    scale = problem["values"][-1]
    np.testing.assert_allclose(ours, np.sort(oracle), rtol=1e-6, atol=1e-6 * scale)
    basis = np.asarray(decomposition.basis)
    np.testing.assert_allclose(basis @ basis.T, np.eye(num_steps), atol=1e-12)


def test_lanczos_kernel_keeps_float32_orthogonality_where_plain_lanczos_loses_it():
    """Widely spread eigenvalues: Ritz values converge fast and, without reorthogonalisation,
    the basis loses orthogonality (Paige 1971); one pass plus the conditional second keeps it."""
    diagonal = jnp.concatenate([jnp.geomspace(1e-3, 1.0, 300), jnp.array([5.0, 10.0, 100.0])])
    start = jax.random.normal(jax.random.PRNGKey(31), diagonal.shape)
    decomposition = jax.jit(lambda s: cv.lanczos(lambda v: diagonal * v, s, 120))(start)
    basis = np.asarray(decomposition.basis, np.float64)
    size = int(decomposition.size)
    assert size == 120
    assert np.max(np.abs(basis @ basis.T - np.eye(120))) <= 1e-5
    ritz = np.linalg.eigvalsh(np.asarray(decomposition.tridiagonal, np.float64))
    np.testing.assert_allclose(ritz[-3:], [5.0, 10.0, 100.0], rtol=1e-5)


def test_lanczos_stops_at_a_traced_step_budget():
    diagonal = jnp.arange(1.0, 31.0)
    run = jax.jit(lambda s, budget: cv.lanczos(lambda v: diagonal * v, s, 20, budget))
    for budget in (1, 4, 20):
        decomposition = run(jnp.ones(30), budget)
        assert decomposition.size == budget
        assert np.all(np.asarray(decomposition.basis)[budget:] == 0)
        assert np.all(np.asarray(decomposition.tridiagonal)[budget:] == 0)


def test_short_warm_probe_from_the_top_eigenvector_matches_dense(problem, x64):
    """`warm_steps`: a cold probe (zero v0) runs all steps, a warm one only a few, and both
    give λmax to 1e-6 here (the warm start is the top eigenvector plus 1% noise)."""
    params, batch = inputs64(problem)
    unravel = ravel_pytree(params)[1]
    cfg = probe_config(trace_samples=0, bottom_k=0, top_k=1, warm_steps=3)
    probe = jax.jit(cv.make_probe(cfg, probe_loss))
    zeros = zeros_like(params)
    warm = unravel(jnp.asarray(problem["vectors"][:, -1]))
    values = problem["values"]
    cold_record, cold_vector = probe(params, batch, jax.random.PRNGKey(32), zeros)
    warm_record, _ = probe(params, batch, jax.random.PRNGKey(32), warm)
    np.testing.assert_allclose(cold_record["lambda_max"], values[-1], rtol=1e-8)
    np.testing.assert_allclose(warm_record["lambda_max"], values[-1], rtol=1e-6)
    # 3 steps cannot resolve the bottom: the warm λmin is far above the true one
    assert warm_record["lambda_min"] > 0.5 * values[0]
    assert cold_record["res_top_1"] <= 1e-8 * values[-1]


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_a_bad_warm_steps_is_refused_in_one_line(value):
    with pytest.raises(cv_errors().ConfigError) as error:
        cv.make_probe(probe_config(warm_steps=value), probe_loss)
    message = str(error.value)
    assert message == f"probe.warm_steps={value!r} is not allowed: {cv_probe().WARM_STEPS_ALLOWED}"
    assert "\n" not in message


@pytest.mark.parametrize("value", [-0.1, 1.0, "1e-4", False])
def test_a_bad_warm_tolerance_is_refused_in_one_line(value):
    with pytest.raises(cv_errors().ConfigError) as error:
        cv.make_probe(probe_config(warm_tolerance=value), probe_loss)
    expected = f"probe.warm_tolerance={value!r} is not allowed: null or a number in [0, 1)"
    assert str(error.value) == expected


def test_lanczos_stops_once_the_top_ritz_value_settles():
    """A separated top eigenvalue converges in a few steps: with a tolerance the loop stops
    there (rows past the stop zeroed), within the tolerance of the true value; a negative
    tolerance runs every step."""
    diagonal = jnp.concatenate([jnp.linspace(0.0, 1.0, 200), jnp.array([10.0])])
    start = jax.random.normal(jax.random.PRNGKey(33), diagonal.shape)
    run = jax.jit(lambda s, tol: cv.lanczos(lambda v: diagonal * v, s, 40, None, tol))
    stopped, full = run(start, 1e-6), run(start, -1.0)
    assert int(full.size) == 40
    size = int(stopped.size)
    assert 2 <= size < 20
    assert np.all(np.asarray(stopped.basis)[size:] == 0)
    assert np.all(np.asarray(stopped.tridiagonal)[size:] == 0)
    top = np.linalg.eigvalsh(np.asarray(stopped.tridiagonal, np.float64))[-1]
    assert abs(top - 10.0) <= 1e-5 * 10.0
    basis = np.asarray(stopped.basis, np.float64)[:size]
    assert np.max(np.abs(basis @ basis.T - np.eye(size))) <= 1e-5


def test_lanczos_stops_once_the_top_ritz_error_estimate_is_small():
    """`ritz_tolerance`: the run stops at the first step whose top Ritz pair has
    r² / (θ₁ - θ₂) <= tolerance · θ₁, with λmax within that tolerance of the true value; a
    negative tolerance runs every step. (An estimate, not a bound: at 1e-2 it stops after 3
    steps, 1.7e-2 off, while θ₂ still lies in the bulk below λ₂ = 9.)"""
    diagonal = jnp.concatenate([jnp.linspace(0.0, 1.0, 200), jnp.array([9.0, 10.0])])
    start = jax.random.normal(jax.random.PRNGKey(34), diagonal.shape)
    run = jax.jit(lambda s, tol: cv.lanczos(lambda v: diagonal * v, s, 40, None, None, tol))
    full = run(start, -1.0)
    assert int(full.size) == 40
    sizes = []
    for tolerance in (1e-3, 1e-5):
        stopped = run(start, tolerance)
        size = int(stopped.size)
        assert 2 <= size < 40
        assert np.all(np.asarray(stopped.basis)[size:] == 0)
        top = np.linalg.eigvalsh(np.asarray(stopped.tridiagonal, np.float64))[-1]
        assert -1e-5 <= 10.0 - top <= tolerance * 10.0
        sizes.append(size)
    assert sizes[0] < sizes[1]  # a tighter tolerance runs longer


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("ritz_tolerance", -0.1, "null or a number in [0, 1)"),
        ("ritz_tolerance", "1e-4", "null or a number in [0, 1)"),
        ("cold_start", "zeros", "one of ('random', 'gradient')"),
    ],
)
def test_a_bad_ritz_tolerance_or_cold_start_is_refused_in_one_line(key, value, allowed):
    with pytest.raises(cv_errors().ConfigError) as error:
        cv.make_probe(probe_config(**{key: value}), probe_loss)
    assert str(error.value) == f"probe.{key}={value!r} is not allowed: {allowed}"


def test_warm_steps_above_lanczos_steps_runs_lanczos_steps():
    assert cv_probe().warm_steps_of(probe_config(lanczos_steps=20, warm_steps=81)) == 20
    assert cv_probe().warm_steps_of(probe_config(warm_steps=6)) == 6
    assert cv_probe().warm_steps_of(probe_config(warm_steps=6, warm_start=False)) is None
    assert cv_probe().warm_steps_of(probe_config()) is None


def test_the_sharpness_preset_tracks_dense_lambda_max_with_few_warm_steps(problem, x64):
    """The default run's probe (`probe=sharpness`: 30 cold steps, then at most 8 warm ones
    from the last top eigenvector, fewer once λmax moves by <= 1e-4) along a gradient-descent
    path: λmax equals `eigh`'s top eigenvalue of the dense Hessian to 1e-3 at every probe
    (benchmarks/sharpness_warm_start.md)."""
    from lossbench import compose

    cfg = freeze(compose()).probe
    preset = (cfg.name, cfg.lanczos_steps, cfg.top_k, cfg.warm_steps, cfg.warm_tolerance)
    assert preset == ("sharpness", 30, 1, 8, 1e-4)
    params, batch = inputs64(problem)
    probe = jax.jit(cv.make_probe(cfg, probe_loss))
    vector = zeros_like(params)
    for index in range(4):
        record, vector = probe(params, batch, jax.random.PRNGKey(40 + index), vector)
        if index == 0:  # the fixture's parameters: its dense spectrum
            top = problem["values"][-1]
        else:  # the top eigenvalue alone (LAPACK's dsyevr on the dense Hessian)
            hessian = np.asarray(dense_hessian(params, batch))
            n = hessian.shape[0]
            top = scipy.linalg.eigh(hessian, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]
        assert abs(record["lambda_max"] - top) <= 1e-3 * abs(top), index
        params = descend(params, batch, 10)
    assert flat(params).shape[0] > 1000  # many more parameters than steps


def cv_errors():
    import lossbench.errors

    return lossbench.errors


def cv_probe():
    import lossbench.curvature.probe

    return lossbench.curvature.probe


def probe_loss_of_arrays(params, x, labels):
    """A module-level loss with its data as arguments (what a notebook should pass)."""
    return cross_entropy(predict(params, x), labels)


def predict_of_arrays(params, x, labels):
    del labels
    return predict(params, x)


def outer_loss_of_arrays(outputs, x, labels):
    del x
    return cross_entropy(outputs, labels)


class CompileCounter:
    """Counts JAX tracing and XLA compilation events while active."""

    def __init__(self):
        from jax._src import dispatch

        self.events = {dispatch.JAXPR_TRACE_EVENT: 0, dispatch.BACKEND_COMPILE_EVENT: 0}

    def __call__(self, event, duration, **kwargs):
        if event in self.events:
            self.events[event] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)

    @property
    def total(self):
        return sum(self.events.values())


def test_curvature_calls_with_new_arrays_of_the_same_shapes_compile_nothing():
    @jax.jit  # one program, not an eager compile per op
    def inputs_of(key):
        key_p, key_x, key_y = jax.random.split(key, 3)
        x = jax.random.normal(key_x, (64, SIZES[0]))
        labels = jax.random.randint(key_y, (64,), 0, SIZES[-1])
        return init_mlp(key_p), x, labels, key

    inputs = lambda seed: inputs_of(jax.random.PRNGKey(seed))

    ggn_parts = (predict_of_arrays, outer_loss_of_arrays)

    def calls(params, x, labels, key):
        return (
            cv.hessian_eigenvalues(
                probe_loss_of_arrays, params, x, labels, key=key, lanczos_steps=8, top_k=2
            ),
            cv.hessian_trace(probe_loss_of_arrays, params, x, labels, key=key, samples=4),
            cv.spectral_density(
                probe_loss_of_arrays, params, x, labels, key=key, lanczos_steps=4, samples=2
            ),
            cv.ggn_eigenvalues(*ggn_parts, params, x, labels, key=key, lanczos_steps=4),
        )

    first, second = inputs(40), inputs(41)
    jax.block_until_ready((first, second))
    with CompileCounter() as counter:
        first_results = jax.block_until_ready(calls(*first))
    assert counter.total > 0  # the counter sees compilations
    with CompileCounter() as counter:
        second_results = jax.block_until_ready(calls(*second))
    assert counter.total == 0, counter.events
    # the arrays are arguments, not constants baked into the first compilation
    assert first_results[0].lambda_max != second_results[0].lambda_max
    # the same figures from a program of its own (jitted here: op by op, its Lanczos loop
    # took ~5 CPU-s, half the test)
    direct = jax.jit(
        lambda params, x, labels, key: cv.eigenvalues_of(
            cv.hessian_matvec(lambda p: probe_loss_of_arrays(p, x, labels), params),
            params,
            key=key,
            lanczos_steps=8,
            top_k=2,
        )
    )(*second)
    np.testing.assert_allclose(second_results[0].top, direct.top, rtol=1e-5)


def test_an_unhashable_loss_is_refused_not_run_uncompiled():
    class Loss:  # defines __eq__ without __hash__: unhashable
        def __eq__(self, other):
            return isinstance(other, Loss)

        def __call__(self, p):
            return jnp.sum(p**2)

    with pytest.raises(TypeError, match="loss_fn=.* is not hashable"):
        cv.hessian_eigenvalues(Loss(), jnp.ones(3), key=jax.random.PRNGKey(0))


def test_batched_trace_equals_the_mean_over_the_same_probes(x64):
    """`lax.map` over batches changes only the schedule: same probes, same numbers."""
    matrix = jax.random.normal(jax.random.PRNGKey(33), (50, 50), jnp.float64)
    matrix = matrix + matrix.T
    key, samples = jax.random.PRNGKey(34), 70
    result = cv.trace_of(lambda v: matrix @ v, jnp.zeros(50), key=key, samples=samples)
    keys = jax.random.split(key, samples)
    # each key's probe, as `trace_of` draws it (vmap: one program, not an eager call a key)
    probes = np.asarray(
        jax.jit(jax.vmap(lambda k: cv.operators.rademacher_probe(k, 50, jnp.float64)))(keys)
    )
    forms = np.einsum("sn,nm,sm->s", probes, matrix, probes)
    np.testing.assert_allclose(result.estimate, forms.mean(), rtol=1e-12)
    np.testing.assert_allclose(result.sem, forms.std(ddof=1) / np.sqrt(samples), rtol=1e-10)
    for backend, kind, size in (("cpu", "trace", 1), ("cpu", "slq", 2), ("gpu", "trace", 40)):
        assert cv.operators.probe_batch_size(26_122, 600, backend, kind) == size
    assert cv.operators.probe_batch_size(50, 70, "cpu") == 70
    assert cv.operators.probe_batch_size(10**8, 600, "gpu") == 1
    with pytest.raises(ValueError, match="kind='SLQ' is not allowed: one of"):
        cv.operators.probe_batch_size(26_122, 600, "cpu", "SLQ")  # not a silent default


def test_rademacher_probes_are_fair_independent_signs():
    """32 signs per random word: every entry ±1, each position fair over many keys, distinct
    keys give distinct vectors, and lengths that are not a multiple of 32 work."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    probes = np.asarray(jax.vmap(lambda k: cv.operators.rademacher_probe(k, 70))(keys))
    assert probes.shape == (4000, 70) and set(np.unique(probes)) == {-1.0, 1.0}
    # each entry's mean has standard deviation 1/sqrt(4000) = 0.016
    assert np.abs(probes.mean(axis=0)).max() < 0.07
    # neighbouring bits of one word are uncorrelated: E[z_i z_j] = 0 (i != j)
    correlation = probes.T @ probes / 4000
    assert np.abs(correlation - np.eye(70)).max() < 0.08
