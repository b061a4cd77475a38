"""Analytic surfaces: every listed critical point is critical, of its kind, at its value."""

from __future__ import annotations

import itertools
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lossbench.errors import ConfigError
from lossbench.models.surfaces import KINDS, SURFACES, get_surface

NAMES = [
    "quadratic_saddle",
    "monkey_saddle",
    "rosenbrock",
    "himmelblau",
    "six_hump_camel",
    "escape_saddle",
    "plateau",
    "abs_valley",
    "quadratic",
]


def _cases():
    for name in NAMES:
        s = SURFACES[name]
        dims = {s.default_dim}
        if s.max_dim is None:
            dims.add(s.min_dim + 1)
        params = [(1.0, 1.0)] + ([(0.5, 2.0)] if s.positive else [])
        for dim, (a, b) in itertools.product(sorted(dims), params):
            yield pytest.param(name, dim, a, b, id=f"{name}-d{dim}-a{a}-b{b}")


@cache
def _derivatives(name):
    fn = SURFACES[name].fn
    return jax.jit(fn), jax.jit(jax.grad(fn)), jax.jit(jax.hessian(fn))


def test_registry_names_are_fixed():
    assert set(NAMES) <= set(SURFACES)
    for s in SURFACES.values():
        assert s.doc and s.params and s.min_dim <= s.default_dim


@pytest.mark.parametrize("name,dim,a,b", list(_cases()))
def test_critical_points_have_their_kind(name, dim, a, b):
    surface = SURFACES[name]
    points = surface.critical_points(dim, a, b)
    assert points, "every surface lists at least one critical point"
    f, grad, hess = _derivatives(name)
    with jax.enable_x64(True):
        for point, kind, value in points:
            assert kind in KINDS
            x = jnp.asarray(point, jnp.float64)
            assert x.shape == (dim,)
            scale = max(1.0, abs(value))
            assert float(f(x, a, b)) == pytest.approx(value, abs=1e-8 * scale)
            if kind == "non_differentiable_minimum":
                rng = np.random.default_rng(0)
                for d in rng.normal(size=(20, dim)):
                    assert float(f(x + 1e-3 * d, a, b)) > value
                continue
            assert float(jnp.linalg.norm(grad(x, a, b))) < 1e-7 * scale
            eigs = np.asarray(jnp.linalg.eigvalsh(hess(x, a, b)))
            tol = 1e-7 * max(1.0, np.abs(eigs).max())
            if kind == "minimum":
                assert eigs.min() > tol, eigs
            elif kind == "maximum":
                assert eigs.max() < -tol, eigs
            elif kind == "strict_saddle":
                assert eigs.min() < -tol, eigs
            elif kind == "degenerate_saddle":
                assert eigs.min() >= -tol and np.abs(eigs).min() <= tol, eigs
                moves = [
                    float(f(x + 1e-3 * s * e, a, b)) - value for e in np.eye(dim) for s in (1, -1)
                ]
                assert min(moves) < 0 < max(moves), "a saddle: the value falls and rises nearby"


def test_documented_values():
    ones = SURFACES["rosenbrock"].critical_points(5)
    assert len(ones) == 1 and np.allclose(ones[0].point, 1.0) and ones[0].value == 0.0

    himmelblau = SURFACES["himmelblau"].critical_points(2)
    kinds = [c.kind for c in himmelblau]
    assert kinds.count("minimum") == 4 and kinds.count("maximum") == 1
    assert kinds.count("strict_saddle") == 4
    assert any(np.allclose(c.point, [3.0, 2.0]) for c in himmelblau)
    assert all(c.value == pytest.approx(0.0, abs=1e-12) for c in himmelblau if c.kind == "minimum")
    top = next(c for c in himmelblau if c.kind == "maximum")
    assert top.value == pytest.approx(181.617, abs=1e-3)

    camel = SURFACES["six_hump_camel"].critical_points(2)
    best = sorted(camel, key=lambda c: c.value)[:2]
    assert [c.kind for c in best] == ["minimum", "minimum"]
    assert all(c.value == pytest.approx(-1.0316, abs=1e-4) for c in best)
    assert sorted(np.round(c.point[0], 4) for c in best) == [-0.0898, 0.0898]
    assert sum(c.kind == "minimum" for c in camel) == 6

    escape = SURFACES["escape_saddle"].critical_points(2)
    minima = [c for c in escape if c.kind == "minimum"]
    assert sorted(c.point[1] for c in minima) == pytest.approx([-np.sqrt(2), np.sqrt(2)])
    assert all(c.value == pytest.approx(-1.0) for c in minima)
    (saddle,) = [c for c in escape if c.kind == "strict_saddle"]
    assert np.allclose(saddle.point, 0.0) and saddle.value == 0.0
    assert len(SURFACES["escape_saddle"].critical_points(3)) == 9

    assert SURFACES["monkey_saddle"].critical_points(2)[0].kind == "degenerate_saddle"
    assert SURFACES["abs_valley"].critical_points(2)[0].kind == "non_differentiable_minimum"


def test_plateau_gradient_vanishes_far_from_the_minimum():
    s = SURFACES["plateau"]
    grad = jax.grad(s.fn)
    near = float(jnp.linalg.norm(grad(jnp.array([1.0, 0.0]), 1.0, 1.0)))
    far = float(jnp.linalg.norm(grad(jnp.array([6.0, 0.0]), 1.0, 1.0)))
    assert near > 0.5 and far < 1e-6
    assert float(s.fn(jnp.array([6.0, 0.0]), 1.0, 1.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("factor,diverges", [(0.9, False), (1.1, True)])
def test_quadratic_gd_diverges_beyond_two_over_curvature(factor, diverges):
    s, lam = SURFACES["quadratic"], 4.0
    grad = jax.grad(s.fn)
    lr = factor * 2.0 / lam
    step = lambda i, x: x - lr * grad(x, lam, 1.0)
    x = jax.jit(lambda x: jax.lax.fori_loop(0, 100, step, x))(jnp.array([1.0, 1.0]))
    value = float(s.fn(x, lam, 1.0))
    assert (value > 1e6) if diverges else (value < 1e-6)


def test_coefficients_can_be_traced():
    s = SURFACES["escape_saddle"]
    out = jax.jit(jax.grad(s.fn, argnums=(1, 2)))(jnp.array([0.5, 1.0]), 1.0, 1.0)
    assert np.isfinite(np.asarray(out)).all()


def test_checks_name_the_key():
    with pytest.raises(ConfigError, match="model.name"):
        get_surface("nope")
    with pytest.raises(ConfigError, match="model.dim"):
        SURFACES["himmelblau"].critical_points(3)
    with pytest.raises(ConfigError, match="model.dim"):
        SURFACES["quadratic_saddle"].check(1)
    with pytest.raises(ConfigError, match="model.b"):
        SURFACES["escape_saddle"].critical_points(2, 1.0, -1.0)
    SURFACES["himmelblau"].check(2, -5.0, 0.0)  # coefficients it does not use
