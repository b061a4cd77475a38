"""Analytic surfaces: loss functions of the parameters themselves, with no data.

A `Surface` is `fn(x, a, b) -> scalar` for a coordinate vector `x` of shape `(dim,)` and two
real coefficients. For every surface `a = b = 1` gives the canonical surface of the
literature; other values rescale terms as the surface's `params` says, and coefficients a
surface does not use are ignored. `critical_points(dim, a, b)` lists the known critical points
as `CriticalPoint(point, kind, value)` with `kind` in `KINDS`, so that experiments can start
at, or near, a saddle, a maximum or a minimum, and tests can check the Hessian there.

    SURFACES["escape_saddle"].fn(jnp.zeros(2), 1.0, 1.0)        # 0.0, the strict saddle
    get_surface("rosenbrock").critical_points(3, 1.0, 1.0)      # [(ones(3), "minimum", 0.0)]

Every surface is also a model option (`model=rosenbrock`): a `Point` module whose parameters
are the coordinates `x` and whose output is the surface's value, so the loss is the output and
there is no data. The option's fields are `dim` and the coefficients the surface uses; it
implies `data=none` (hence `loss=none`) and `init=point`, and reports the coordinates `x_i` of
every logged step.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lossbench.errors import ConfigError
from lossbench.models.base import MODELS

KINDS = (
    "minimum",
    "maximum",
    "strict_saddle",  # a negative Hessian eigenvalue (Jin et al., 2017)
    "degenerate_saddle",  # not an extremum, but the Hessian has no negative eigenvalue
    "non_differentiable_minimum",
)


class CriticalPoint(NamedTuple):
    point: np.ndarray  # float64, shape (dim,)
    kind: str  # one of KINDS
    value: float


@dataclass(frozen=True)
class Surface:
    """An analytic surface: `fn(x, a, b)`, jnp and differentiable where the surface is."""

    name: str
    fn: Callable[[jax.Array, Any, Any], jax.Array]
    default_dim: int
    points: Callable[[int, float, float], list[CriticalPoint]]  # use `critical_points`
    doc: str
    params: str  # what `a` and `b` do
    min_dim: int = 1
    max_dim: int | None = None
    positive: tuple[str, ...] = ("a", "b")  # coefficients that must be > 0 (for the point list)
    domain: tuple[float, float] = (-2.0, 2.0)  # a box per coordinate for plots and starts
    reference: str = ""

    def __call__(self, x: jax.Array, a: Any = 1.0, b: Any = 1.0) -> jax.Array:
        return self.fn(x, a, b)

    def check(self, dim: int, a: float = 1.0, b: float = 1.0) -> None:
        """Raise `ConfigError` (key `model.dim`, `model.a`, `model.b`) for values not allowed."""
        if dim < self.min_dim or (self.max_dim is not None and dim > self.max_dim):
            top = "" if self.max_dim is None else f" and <= {self.max_dim}"
            raise ConfigError("model.dim", dim, f">= {self.min_dim}{top} for surface {self.name}")
        for key, value in (("a", a), ("b", b)):
            if key in self.positive and not float(value) > 0:
                raise ConfigError(f"model.{key}", value, f"> 0 for surface {self.name}")

    def critical_points(self, dim: int, a: float = 1.0, b: float = 1.0) -> list[CriticalPoint]:
        """The known critical points at these coefficients (see `doc` for what is listed)."""
        self.check(dim, a, b)
        return self.points(dim, float(a), float(b))


SURFACES: dict[str, Surface] = {}


def register(surface: Surface) -> Surface:
    SURFACES[surface.name] = surface
    return surface


def get_surface(name: str) -> Surface:
    if name not in SURFACES:
        raise ConfigError("model.name", name, f"one of {sorted(SURFACES)}")
    return SURFACES[name]


def _origin(dim: int, kind: str, value: float = 0.0) -> list[CriticalPoint]:
    return [CriticalPoint(np.zeros(dim), kind, value)]


def _kind_from_eigs(eigs: np.ndarray, tol: float = 1e-9) -> str:
    """Second-order type of a non-degenerate critical point (numerically found points)."""
    scale = tol * max(1.0, float(np.max(np.abs(eigs))))
    if np.all(eigs > scale):
        return "minimum"
    if np.all(eigs < -scale):
        return "maximum"
    if np.any(eigs < -scale):
        return "strict_saddle"
    return "degenerate_saddle"


def _newton_points(
    f: Callable, grad: Callable, hess: Callable, lo: float, hi: float, n: int = 31
) -> list[CriticalPoint]:
    """All critical points of a 2-d polynomial reached by Newton's method from an n x n grid."""
    u = np.linspace(lo, hi, n)
    z = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    with np.errstate(all="ignore"):
        for _ in range(60):
            step = np.linalg.solve(hess(z), grad(z)[..., None])[..., 0]
            z = z - step
        g = np.linalg.norm(grad(z), axis=-1)
    z = z[np.isfinite(g) & (g < 1e-9) & np.all(np.abs(z) < 10 * max(abs(lo), abs(hi)), axis=-1)]
    unique: list[np.ndarray] = []
    for p in z:
        if all(np.max(np.abs(p - q)) > 1e-6 for q in unique):
            unique.append(p)
    out = [
        CriticalPoint(p, _kind_from_eigs(np.linalg.eigvalsh(hess(p))), float(f(p))) for p in unique
    ]
    return sorted(out, key=lambda c: (KINDS.index(c.kind), round(c.value, 9), tuple(c.point)))


# ---------------------------------------------------------------------------------------------
# quadratic_saddle


def _quadratic_saddle(x, a, b):
    return a * x[0] ** 2 - b * jnp.sum(x[1:] ** 2)


register(
    Surface(
        name="quadratic_saddle",
        fn=_quadratic_saddle,
        default_dim=2,
        points=lambda dim, a, b: _origin(dim, "strict_saddle"),
        doc="a*x1^2 - b*(x2^2 + ... + xn^2): one ascending and n-1 descending directions; "
        "a strict saddle at the origin, value 0, Hessian diag(2a, -2b, ..., -2b). "
        "Unbounded below: a run that escapes diverges.",
        params="a: curvature/2 of the ascending axis x1; b: minus curvature/2 of the others",
        min_dim=2,
        reference="Dauphin et al. (2014)",
    )
)

# ---------------------------------------------------------------------------------------------
# monkey_saddle


def _monkey_saddle(x, a, b):
    return a * (x[0] ** 3 - 3.0 * x[0] * jnp.sum(x[1:] ** 2))


register(
    Surface(
        name="monkey_saddle",
        fn=_monkey_saddle,
        default_dim=2,
        points=lambda dim, a, b: _origin(dim, "degenerate_saddle"),
        doc="a*(x1^3 - 3*x1*(x2^2 + ... + xn^2)); n = 2 is the monkey saddle x^3 - 3xy^2. "
        "Its only critical point is the origin, value 0, where gradient and Hessian vanish: "
        "a degenerate saddle that second-order tests cannot tell from a flat region.",
        params="a: overall scale; b unused",
        min_dim=2,
        positive=("a",),
        reference="Anandkumar & Ge (2016), higher-order saddles",
    )
)

# ---------------------------------------------------------------------------------------------
# rosenbrock


def _rosenbrock(x, a, b):
    return jnp.sum(100.0 * b * (x[1:] - x[:-1] ** 2) ** 2 + a * (1.0 - x[:-1]) ** 2)


register(
    Surface(
        name="rosenbrock",
        fn=_rosenbrock,
        default_dim=2,
        points=lambda dim, a, b: [CriticalPoint(np.ones(dim), "minimum", 0.0)],
        doc="sum_i 100*b*(x_{i+1} - x_i^2)^2 + a*(1 - x_i)^2 (the chained n-d form): a curved, "
        "ill-conditioned valley; global minimum at (1, ..., 1), value 0 (Hessian eigenvalues "
        "about 1002 and 0.4 at n = 2). For 4 <= n <= 7 there is also a local minimum near "
        "(-1, 1, ..., 1), not listed.",
        params="a: weight of the (1 - x_i)^2 terms; b: valley steepness (multiplies 100)",
        min_dim=2,
        reference="Rosenbrock (1960); the n-d local minimum: Kok & Sandrock (2009)",
    )
)

# ---------------------------------------------------------------------------------------------
# himmelblau


def _himmelblau(x, a, b):
    return (x[0] ** 2 + x[1] - 11.0) ** 2 + (x[0] + x[1] ** 2 - 7.0) ** 2


def _himmelblau_np(z):
    x, y = z[..., 0], z[..., 1]
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def _himmelblau_grad(z):
    x, y = z[..., 0], z[..., 1]
    u, v = x**2 + y - 11.0, x + y**2 - 7.0
    return np.stack([4 * x * u + 2 * v, 2 * u + 4 * y * v], -1)


def _himmelblau_hess(z):
    x, y = z[..., 0], z[..., 1]
    u, v = x**2 + y - 11.0, x + y**2 - 7.0
    hxx, hxy, hyy = 4 * u + 8 * x**2 + 2, 4 * x + 4 * y, 4 * v + 8 * y**2 + 2
    return np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], -2)


@cache
def _himmelblau_points() -> tuple[CriticalPoint, ...]:
    return tuple(_newton_points(_himmelblau_np, _himmelblau_grad, _himmelblau_hess, -6.0, 6.0))


register(
    Surface(
        name="himmelblau",
        fn=_himmelblau,
        default_dim=2,
        points=lambda dim, a, b: list(_himmelblau_points()),
        doc="(x^2 + y - 11)^2 + (x + y^2 - 7)^2: four global minima, value 0, at (3, 2), "
        "(-2.805, 3.131), (-3.779, -3.283), (3.584, -1.848); a local maximum at "
        "(-0.271, -0.923), value 181.6; four strict saddles. Points found by Newton's method.",
        params="a, b unused",
        min_dim=2,
        max_dim=2,
        positive=(),
        domain=(-5.0, 5.0),
        reference="Himmelblau (1972)",
    )
)

# ---------------------------------------------------------------------------------------------
# six_hump_camel


def _six_hump_camel(x, a, b):
    u, v = x[0], x[1]
    return (4.0 - 2.1 * u**2 + u**4 / 3.0) * u**2 + u * v + (-4.0 + 4.0 * v**2) * v**2


def _camel_np(z):
    x, y = z[..., 0], z[..., 1]
    return (4.0 - 2.1 * x**2 + x**4 / 3.0) * x**2 + x * y + (-4.0 + 4.0 * y**2) * y**2


def _camel_grad(z):
    x, y = z[..., 0], z[..., 1]
    return np.stack([8 * x - 8.4 * x**3 + 2 * x**5 + y, x - 8 * y + 16 * y**3], -1)


def _camel_hess(z):
    x, y = z[..., 0], z[..., 1]
    hxx, hxy, hyy = 8 - 25.2 * x**2 + 10 * x**4, np.ones_like(x), -8 + 48 * y**2
    return np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], -2)


@cache
def _camel_points() -> tuple[CriticalPoint, ...]:
    return tuple(_newton_points(_camel_np, _camel_grad, _camel_hess, -3.0, 3.0))


register(
    Surface(
        name="six_hump_camel",
        fn=_six_hump_camel,
        default_dim=2,
        points=lambda dim, a, b: list(_camel_points()),
        doc="(4 - 2.1x^2 + x^4/3)x^2 + xy + (-4 + 4y^2)y^2: six local minima, two of them "
        "global, value -1.0316, at (0.0898, -0.7126) and (-0.0898, 0.7126); two local maxima "
        "and seven strict saddles (one at the origin). Points found by Newton's method.",
        params="a, b unused",
        min_dim=2,
        max_dim=2,
        positive=(),
        reference="Dixon & Szego (1978); Molga & Smutnicki (2005)",
    )
)

# ---------------------------------------------------------------------------------------------
# escape_saddle


def _escape_saddle(x, a, b):
    y = x[1:]
    return a * x[0] ** 2 + jnp.sum(-b * y**2 + y**4 / 4.0)


def _escape_points(dim: int, a: float, b: float) -> list[CriticalPoint]:
    r = float(np.sqrt(2.0 * b))
    if dim <= 7:
        combos = itertools.product((0.0, r, -r), repeat=dim - 1)
    else:  # 3^(dim-1) points: keep the origin and the two symmetric minima
        combos = [(0.0,) * (dim - 1), (r,) * (dim - 1), (-r,) * (dim - 1)]
    out = []
    for ys in combos:
        m = sum(y != 0.0 for y in ys)  # each nonzero coordinate lowers the value by b^2
        kind = "minimum" if m == dim - 1 else "strict_saddle"
        out.append(CriticalPoint(np.array((0.0, *ys)), kind, -m * b * b))
    return sorted(out, key=lambda c: (KINDS.index(c.kind), c.value, tuple(c.point)))


register(
    Surface(
        name="escape_saddle",
        fn=_escape_saddle,
        default_dim=2,
        points=_escape_points,
        doc="a*x1^2 + sum_{i>=2} (-b*x_i^2 + x_i^4/4); n = 2, a = b = 1 is x^2 - y^2 + y^4/4. "
        "Strict saddle at the origin (value 0, Hessian diag(2a, -2b, ...)); minima where every "
        "x_i (i >= 2) is +-sqrt(2b), value -(n-1)*b^2, curvature 4b there. Points with some "
        "x_i = 0 are strict saddles. Listed: all 3^(n-1) points for n <= 7, else the origin "
        "and the two symmetric minima.",
        params="a: curvature/2 of the stable axis x1; b: depth of the double wells",
        min_dim=2,
        reference="Ge et al. (2015); Jin et al. (2017)",
    )
)

# ---------------------------------------------------------------------------------------------
# plateau


def _plateau(x, a, b):
    return b * (1.0 - jnp.exp(-jnp.sum(x**2) / (2.0 * a**2)))


register(
    Surface(
        name="plateau",
        fn=_plateau,
        default_dim=2,
        points=lambda dim, a, b: _origin(dim, "minimum"),
        doc="b*(1 - exp(-|x|^2 / (2a^2))): an inverted Gaussian well. One minimum at the "
        "origin, value 0, Hessian (b/a^2)*I; far from it the surface tends to b and the "
        "gradient norm b*r/a^2*exp(-r^2/(2a^2)) vanishes faster than any power: a flat "
        "region with no critical point (|g| < 1e-3*b/a at r = 4.5a).",
        params="a: width of the well; b: height of the plateau",
        domain=(-5.0, 5.0),
        reference="flat regions: Dauphin et al. (2014)",
    )
)

# ---------------------------------------------------------------------------------------------
# abs_valley


def _abs_valley(x, a, b):
    return a * jnp.abs(x[0]) + b * jnp.sum(x[1:] ** 2)


register(
    Surface(
        name="abs_valley",
        fn=_abs_valley,
        default_dim=2,
        points=lambda dim, a, b: _origin(dim, "non_differentiable_minimum"),
        doc="a*|x1| + b*(x2^2 + ... + xn^2): a V-shaped valley; minimum at the origin, value 0, "
        "where the surface is not differentiable in x1. Gradient descent with a constant step "
        "does not converge: it oscillates across the kink with amplitude ~ lr*a (jax takes "
        "d|x|/dx = sign(x), 0 at 0).",
        params="a: slope of the kink along x1; b: curvature/2 of the other coordinates",
        reference="subgradient methods: Shor (1985)",
    )
)

# ---------------------------------------------------------------------------------------------
# quadratic


def _quadratic(x, a, b):
    return 0.5 * (a * x[0] ** 2 + b * jnp.sum(x[1:] ** 2))


register(
    Surface(
        name="quadratic",
        fn=_quadratic,
        default_dim=2,
        points=lambda dim, a, b: _origin(dim, "minimum"),
        doc="0.5*(a*x1^2 + b*(x2^2 + ... + xn^2)): Hessian diag(a, b, ..., b), minimum at the "
        "origin, value 0. Gradient descent with step eta converges iff eta < 2/max(a, b) and "
        "diverges along the sharpest axis beyond it: the edge-of-stability test case.",
        params="a: curvature of x1; b: curvature of the other coordinates",
        reference="Cohen et al. (2021)",
    )
)


# ---------------------------------------------------------------------------------------------
# surfaces as model options


class Point(nnx.Module):
    """The parameters of an analytic surface, one point `x` of shape (dim,); the output is the
    surface's value there (the input, if any, is ignored)."""

    def __init__(self, surface: Surface, dim: int, a: float = 1.0, b: float = 1.0, *, rngs):
        surface.check(dim, a, b)
        self.x = nnx.Param(jnp.zeros((dim,)))
        self.fn, self.a, self.b = surface.fn, a, b

    def __call__(self, x=None):
        return self.fn(self.x[...], self.a, self.b)


def coordinates(params) -> dict:
    """Where on the surface a step started: `x_0`, `x_1`, ... (metrics.parquet columns)."""
    return {f"x_{i}": params["x"][i] for i in range(params["x"].shape[0])}


def _option(surface: Surface):
    """The model option's builder: `dim` and the coefficients the surface uses."""

    def build(*, rngs, **fields) -> Point:
        return Point(surface, rngs=rngs, **fields)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("dim", keyword, default=surface.default_dim, annotation=int)]
    parameters += [
        inspect.Parameter(c, keyword, default=1.0, annotation=float) for c in surface.positive
    ]
    build.__signature__ = inspect.Signature([*parameters, inspect.Parameter("rngs", keyword)])
    build.__annotations__ = {p.name: p.annotation for p in parameters}
    build.__name__ = build.__qualname__ = surface.name
    build.__doc__ = f"{surface.doc}\n\nCoefficients: {surface.params}."
    return build


IMPLIES = {"data": "none", "init": "point"}
for _surface in SURFACES.values():
    MODELS.register(tasks=("surface",), implies=IMPLIES, step_metrics=coordinates)(
        _option(_surface)
    )


__all__ = ["KINDS", "SURFACES", "CriticalPoint", "Point", "Surface", "get_surface", "register"]
