"""Every declared loss property, checked numerically (in float64).

Each loss gets a `Case`: an affine 1-D `line` through the points where a non-smooth loss would
break (its variable also fixes the shapes of the random draws), an outlier ray `far(s)`
(residual / wrong margin -> inf) and a ray `best(s)` towards the target. The objective is the
batch mean of the loss, compiled once per case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.flatten_util import ravel_pytree

from lossbench.losses import LOSSES
from lossbench.schema import freeze

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)
H = 1e-5  # finite-difference step
SMOOTH, KINK = 1e-3, 0.1  # derivative jumps below SMOOTH agree; above KINK they differ
FAR = (10.0, 20.0, 40.0, 80.0)


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


Make = Callable[[float], tuple[Any, Any]]  # -> (variable, targets)


@dataclass
class Case:
    loss: str
    line: Make  # t -> (variable, targets); affine in t
    points: tuple[float, ...]  # where to compare one-sided derivatives along the line
    far: Make  # s -> an outlier at distance s
    best: Make  # s -> towards the target as s grows
    targets: Callable[[np.random.Generator], Any]  # random targets shaped as line's
    cfg: dict = field(default_factory=dict)
    learned: bool = False  # the variable is {"outputs": ..., "extra": ...}
    id: str = ""

    @property
    def config(self):
        return freeze(LOSSES.schema(self.loss)(**self.cfg))

    @property
    def properties(self):
        return LOSSES[self.loss].properties_for(self.config)

    def objective(self, variable, targets):
        loss, cfg = LOSSES[self.loss], self.config
        if self.learned:
            return loss(variable["outputs"], targets, cfg, variable["extra"]).mean()
        return loss(variable, targets, cfg, loss.init_extra(cfg)).mean()

    def _layout(self):
        """The leaves' shapes and tree of the case's variable, and its direction along the line
        (flat): computed once, then every flattening is numpy (eager JAX ops are slow calls)."""
        if "_layout_" not in self.__dict__:
            leaves, tree = jax.tree.flatten(self.line(0.0)[0])
            direction = ravel_pytree(self.line(1.0)[0])[0] - ravel_pytree(self.line(0.0)[0])[0]
            self._layout_ = [np.shape(x) for x in leaves], tree, np.asarray(direction)
        return self._layout_

    def value_and_grad(self, variable, targets):
        """f and its gradient flattened (`ravel_pytree` order), as float and numpy array."""
        if "_compiled" not in self.__dict__:  # one compilation per case: shapes never change

            def flat(variable, targets):
                value, grad = jax.value_and_grad(self.objective)(variable, targets)
                return value, ravel_pytree(grad)[0]

            self._compiled = jax.jit(flat)
        variable = jax.tree.map(lambda x: np.asarray(x, np.float64), variable)
        value, grad = self._compiled(variable, targets)
        return float(value), np.asarray(grad)

    def value(self, variable, targets) -> float:
        return self.value_and_grad(variable, targets)[0]

    def grad_norm(self, variable, targets) -> float:
        return float(np.linalg.norm(self.value_and_grad(variable, targets)[1]))

    def unravel(self, flat):
        """The variable whose `ravel_pytree` is `flat` (numpy leaves)."""
        shapes, tree, _ = self._layout()
        ends = np.cumsum([math.prod(shape) for shape in shapes])[:-1]
        parts = np.split(np.asarray(flat, np.float64), ends)
        return jax.tree.unflatten(tree, [p.reshape(s) for p, s in zip(parts, shapes, strict=True)])

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self._layout()[0])

    def on_line(self, t) -> tuple[float, float]:
        """f(t) and f'(t) along the line (the gradient times the line's direction)."""
        value, grad = self.value_and_grad(*self.line(t))
        return value, float(grad @ self._layout()[2])


def a(*rows):
    return jnp.asarray(rows, dtype=jnp.float64)


ONE, ZERO = np.ones(1, int), np.zeros(1, int)


def _regression(loss, **cfg):
    return Case(
        loss,
        lambda t: (a([t, 0.0]), a([0.0, 0.0])),  # residual t
        (0.0, 1.0, -1.0),
        lambda s: (a([s, 0.0]), a([0.0, 0.0])),
        lambda s: (a([0.3, -0.2]), a([0.3, -0.2])),
        lambda rng: rng.normal(size=(1, 2)),
        cfg,
    )


def _score(loss, **cfg):
    return Case(
        loss,
        lambda t: (a([t]), ONE),  # margin t
        (1.0, 0.0, -1.0),
        lambda s: (a([-s]), ONE),
        lambda s: (a([s]), ONE),
        lambda rng: rng.integers(0, 2, 1),
        cfg,
    )


def _logits(loss, id="", **cfg):
    return Case(
        loss,
        lambda t: (a([t, 0.0, 0.0]), ZERO),  # z_y - z_j = t; sparsemax support changes at -1/2
        (1.0, 0.0, -0.5),
        lambda s: (a([-s, 0.0, 0.0]), ZERO),
        lambda s: (a([s, 0.0, 0.0]), ZERO),
        lambda rng: rng.integers(0, 3, 1),
        cfg,
        id=id,
    )


def _pair(left, right):
    return {"left": a(left), "right": a(right)}


COSINE = Case(
    "cosine",
    # dissimilar pair with cos = t / sqrt(1 + t^2): the hinge at cos = margin = 0 is at t = 0
    lambda t: (_pair([1.0, 0.0, 0.0], [t, 1.0, 0.0]), ZERO),
    (0.0,),
    lambda s: (_pair([1.0, 0.0, 0.0], [-s, 1.0, 0.0]), ONE),
    lambda s: (_pair([1.0, 2.0, 0.0], [1.0, 2.0, 0.0]), ONE),
    lambda rng: rng.integers(0, 2, 1),
    {"margin": 0.0},
)
CONTRASTIVE = Case(
    "contrastive",
    # dissimilar pair at distance |t|: max(0, m - |t|)^2 / 2 has a kink at t = 0
    lambda t: (_pair([t, 0.0, 0.0], [0.0, 0.0, 0.0]), ZERO),
    (0.0, 1.0),
    lambda s: (_pair([s, 0.0, 0.0], [0.0, 0.0, 0.0]), ONE),
    lambda s: (_pair([1.0, 2.0, 0.0], [1.0, 2.0, 0.0]), ONE),
    lambda rng: rng.integers(0, 2, 1),
)


def _triplet(positive, negative):
    return {"anchor": a([0.0, 0.0, 0.0]), "positive": a(positive), "negative": a(negative)}


TRIPLET = Case(
    "triplet",
    lambda t: (_triplet([t, 0.0, 0.0], [0.0, 3.0, 0.0]), ZERO),
    (2.0,),  # d(a, p) = |t| reaches d(a, n) - margin = 2
    lambda s: (_triplet([s, 0.0, 0.0], [0.0, 3.0, 0.0]), ZERO),
    lambda s: (_triplet([0.0, 0.0, 0.0], [0.0, s, 0.0]), ZERO),
    lambda rng: np.zeros(1),
)

_V1 = np.random.default_rng(1).normal(size=(3, 3))
_V2 = _V1 + 0.3 * np.random.default_rng(2).normal(size=(3, 3))
_DIR = np.array([0.0, 1.0, -1.0])


def _views_moved(t):
    """Three inputs' two views; the second view of the first input moved by t along _DIR."""
    return {"view1": jnp.asarray(_V1), "view2": jnp.asarray(_V2).at[0].add(t * _DIR)}, None


NTXENT = Case(
    "ntxent",
    _views_moved,
    (0.0, 1.0),
    _views_moved,
    lambda s: ({"view1": s * jnp.eye(3), "view2": s * jnp.eye(3)}, None),
    lambda rng: None,
)

_CTC_TARGETS = {
    "labels": np.array([[1, 2]]),
    "label_paddings": np.zeros((1, 2)),
    "logit_paddings": np.zeros((1, 5)),
}
_CTC_LOGITS = np.random.default_rng(3).normal(size=(1, 5, 3))
_CTC_DIR = np.random.default_rng(4).normal(size=(1, 5, 3))


def _ctc_targets(rng):
    padded = rng.integers(0, 2)
    return {
        "labels": rng.integers(1, 3, (1, 2)),
        "label_paddings": np.array([[0.0, padded]]),
        "logit_paddings": np.array([[0.0] * 4 + [padded]]),
    }


CTC = Case(
    "ctc",
    lambda t: (jnp.asarray(_CTC_LOGITS) + t * _CTC_DIR, _CTC_TARGETS),
    (0.0, 1.0),
    # every frame says blank, strongly: the labels are ever less likely
    lambda s: (jnp.zeros((1, 5, 3)).at[..., 0].set(s), _CTC_TARGETS),
    # every frame says the path 1 1 0 2 2, strongly
    lambda s: (s * jax.nn.one_hot(jnp.asarray([[1, 1, 0, 2, 2]]), 3), _CTC_TARGETS),
    _ctc_targets,
)


def _multitask(learned):
    def heads(logits, values, log_var=0.0):
        outputs = {"logits": a(logits), "values": a(values)}
        if not learned:
            return outputs
        return {"outputs": outputs, "extra": {"log_var": jnp.stack([0.0, log_var])}}

    targets = {"logits": ZERO, "values": np.zeros((1, 2))}
    return Case(
        "multitask",
        # logits, regression residual and (learned) regression log-variance all move with t
        lambda t: (heads([t, 0.0, 0.0], [0.5 + t, 0.0], t), targets),
        (0.0, 1.0),
        lambda s: (heads([0.0, 0.0, 0.0], [s, 0.0]), targets),
        lambda s: (heads([s, 0.0, 0.0], [0.0, 0.0]), targets),
        lambda rng: {"logits": rng.integers(0, 3, 1), "values": rng.normal(size=(1, 2))},
        {"learned_weights": learned},
        learned=learned,
        id="multitask-learned" if learned else "multitask-fixed",
    )


CASES = [
    _regression("mse"),
    _regression("mae"),
    _regression("huber", delta=1.0),
    _regression("log_cosh", scale=1.0),
    _regression("quantile", quantile=0.8),
    _regression("welsch", scale=1.0),
    _logits("cross_entropy"),
    _logits("focal", gamma=2.0),
    _logits("sparsemax"),
    _logits("multiclass_hinge", "multiclass_hinge-cs", variant="crammer_singer"),
    _logits("multiclass_hinge", "multiclass_hinge-ww", variant="weston_watkins"),
    _logits("zero_one"),
    _score("binary_cross_entropy"),
    _score("logistic"),
    _score("hinge", margin=1.0),
    _score("squared_hinge", margin=1.0),
    _score("exponential"),
    _score("savage"),
    COSINE,
    CONTRASTIVE,
    TRIPLET,
    NTXENT,
    CTC,
    _multitask(learned=False),
    _multitask(learned=True),
]


def _ids(cases):
    return [c.id or c.loss for c in cases]


def _select(prop, value):
    cases = [c for c in CASES if getattr(c.properties, prop) == value]
    return pytest.mark.parametrize("case", cases, ids=_ids(cases))


def test_every_loss_has_a_case():
    assert {c.loss for c in CASES} == set(LOSSES) - {"none"}  # none: the surfaces' tests


# --- convexity: the midpoint inequality f((x + y) / 2) <= (f(x) + f(y)) / 2 ----------------


def _midpoint_gap(case, x, y, targets):
    """f(mid) - (f(x) + f(y)) / 2 and a tolerance, for flat x, y of the case's variable."""
    fx, fy, fm = (case.value(case.unravel(v), targets) for v in (x, y, (x + y) / 2))
    return fm - (fx + fy) / 2, 1e-9 * (1.0 + abs(fx) + abs(fy))


@_select("convex", True)
@SETTINGS
@given(data=st.data())
def test_convex_losses_satisfy_the_midpoint_inequality(case, data):
    vector = hnp.arrays(np.float64, case.size, elements=st.floats(-6, 6))
    x, y = data.draw(vector, "x"), data.draw(vector, "y")
    targets = case.targets(np.random.default_rng(data.draw(st.integers(0, 2**16), "seed")))
    gap, tol = _midpoint_gap(case, x, y, targets)
    assert gap <= tol


def _violated_on_line(case) -> bool:
    """Is the midpoint inequality violated by a chord of a grid on the case's line?"""
    values = np.array([case.on_line(t)[0] for t in np.linspace(-8.0, 8.0, 161)])
    for d in range(1, 81):
        ends = values[: -2 * d], values[2 * d :]
        gap = values[d:-d] - (ends[0] + ends[1]) / 2
        if np.any(gap > 1e-6 * (1.0 + np.abs(ends[0]) + np.abs(ends[1]))):
            return True
    return False


@_select("convex", True)
def test_convex_losses_satisfy_the_midpoint_inequality_on_their_line(case):
    assert not _violated_on_line(case)


@_select("convex", False)
def test_non_convex_losses_violate_the_midpoint_inequality(case):
    if _violated_on_line(case):
        return
    # else random pairs in the whole space
    rng = np.random.default_rng(0)
    for trial in range(300):
        scale = (0.5, 2.0, 5.0)[trial % 3]
        x, y = scale * rng.normal(size=case.size), scale * rng.normal(size=case.size)
        gap, tol = _midpoint_gap(case, x, y, case.targets(rng))
        if gap > 1e3 * tol:
            return
    pytest.fail(f"{case.loss}: no midpoint violation found")


# --- differentiability: one-sided derivatives along the line --------------------------------


def _jumps(case, t0):
    """Jumps of the first (finite differences) and second (differences of f') derivative."""
    f = {k: case.on_line(t0 + k * H) for k in (-2, -1, 0, 1, 2)}
    first = abs((f[1][0] - f[0][0]) / H - (f[0][0] - f[-1][0]) / H)
    second = abs((f[2][1] - f[1][1]) / H - (f[-1][1] - f[-2][1]) / H)
    return first, second


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_declared_smoothness_matches_one_sided_derivatives(case):
    props = case.properties
    jumps = [_jumps(case, t0) for t0 in case.points]
    first = max(j1 for j1, _ in jumps)
    second = max(max(j1, j2) for j1, j2 in jumps)
    if props.differentiable:
        assert first < SMOOTH, f"first derivative jumps by {first}"
    else:
        assert first > KINK, f"no kink found: jumps {jumps}"
    if props.twice_differentiable:
        assert second < SMOOTH, f"second derivative jumps by {second}"
    else:
        assert second > KINK, f"no curvature jump found: jumps {jumps}"


def test_huber_curvature_jumps_from_one_to_zero_at_delta():
    case = _regression("huber", delta=0.5)
    slope = {k: case.on_line(0.5 + k * H)[1] for k in (-2, -1, 1, 2)}
    inside, outside = (slope[-1] - slope[-2]) / H, (slope[2] - slope[1]) / H
    assert inside == pytest.approx(1.0, abs=1e-6)
    assert outside == pytest.approx(0.0, abs=1e-9)


# --- minimum 0 at the target -----------------------------------------------------------------


def _random_values(case, n=30):
    rng = np.random.default_rng(5)
    return [
        case.value(case.unravel(3 * rng.normal(size=case.size)), case.targets(rng))
        for _ in range(n)
    ]


@_select("min_zero", True)
def test_min_zero_losses_are_zero_at_the_target_and_nonnegative(case):
    assert abs(case.value(*case.best(3.0))) < 1e-9
    assert min(_random_values(case)) >= -1e-12


@_select("min_zero", False)
def test_other_losses_do_not_reach_zero_at_the_target(case):
    at_3, at_6 = (case.value(*case.best(s)) for s in (3.0, 6.0))
    assert abs(at_3) > 1e-12 and abs(at_6) > 1e-12
    if not case.learned:  # bounded below by 0 (cross entropy: infimum approached, not attained)
        assert 0 < at_6 <= at_3 + 1e-12
        assert min(_random_values(case)) > 0


# --- boundedness and robustness along the outlier ray ----------------------------------------


@_select("bounded", True)
def test_bounded_losses_stay_bounded_far_away(case):
    values = np.array([case.value(*case.far(s)) for s in FAR])
    assert np.all(np.isfinite(values))
    assert values.max() <= 1.1 * values[0] + 1e-6


@_select("bounded", False)
def test_unbounded_losses_grow_far_away(case):
    values = np.array([case.value(*case.far(s)) for s in FAR])
    assert values[-1] > 4 * values[0] > 0


@_select("robust", True)
def test_robust_losses_have_bounded_gradient_far_away(case):
    norms = np.array([case.grad_norm(*case.far(s)) for s in FAR])
    assert np.all(np.isfinite(norms))
    assert norms.max() <= 1.1 * norms[0] + 1e-9


@_select("robust", False)
def test_non_robust_losses_have_growing_gradient_far_away(case):
    norms = np.array([case.grad_norm(*case.far(s)) for s in FAR])
    assert norms[-1] > 4 * norms[0] > 0
