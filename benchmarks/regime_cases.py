"""The labelled problems of the regime benchmark (`benchmarks/regimes.py`, its docstring has
the labels and the reasons): runs recorded exactly as lossbench records probes, with exact
float64 Hessians, and the regime known by construction at each probe.

One saddle rule for train and held-out alike: a run is at a saddle while it has covered less
than 1% of the way from the saddle to where it goes, measured in the coordinate the escape
moves along; `descent` is labelled only well beyond (`saddle_labels`: 10% of the distance,
`hessian_labels`: 5% of the loss drop, `deep_linear`: 10% of it); in between: left out.
  - At a non-degenerate saddle (`saddle_labels`, `hessian_labels`) that coordinate is the
    distance from the saddle; the loss there falls as the distance squared, so 1% of the way
    is ~1e-4 of the loss drop. (`hessian_labels` once used 1% of the loss drop, ~10% of the
    way: on the six-hump camel from 1e-5 it labelled `strict_saddle` probes 3-5% of the way
    to the minimum, where the loss had fallen 0.2-0.5% of the drop and the gradient could buy
    1.1e-3 to 2.4e-3 of the loss in one line search; every other case's labelled saddles buy
    <= 4e-4, and the train rule leaves such probes out.)
  - Deep linear networks (`deep_linear`) escape along Saxe et al.'s (2014) mode strength a,
    in which the loss is linear near a stage (L_k - L ~ s_k a): 1% of the loss drop is 0.5%
    of the way in a.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

SCALES = (1e-3, 1.0, 1e3)


# ---------------------------------------------------------------------------------------------
# trajectories with exact probes


@dataclass(frozen=True)
class Method:
    """How the iterate moves: gradient descent, heavy ball, PGD (Jin et al. 2017) or noisy GD."""

    lr: float
    momentum: float = 0.0
    radius: float = 0.0  # PGD: perturbation ball radius
    g_thres: float = 0.0  # PGD: perturb when ||g|| <= g_thres ...
    t_thres: int = 0  # ... at most once per t_thres steps; stop after a failed one
    noise: float = 0.0  # noisy GD: gradient noise std at step 0 (decays as (1 + t)^-0.55)


@dataclass
class Case:
    name: str
    split: str  # "train" or "held-out"
    loss: Callable  # unscaled loss of a flat float64 vector
    x0: np.ndarray
    method: Method
    steps: int
    every: int
    label: Callable  # (x, loss, step) -> regime or None, in unscaled terms
    seed: int = 0
    dwell: int = 2  # a label needs this many probes on each side to share it (transitions)


def _move(case: Case, c: float) -> np.ndarray:
    """Iterates x_0 .. x_steps of `case` with the loss scaled by c (step size lr / c)."""
    m = case.method
    grad = jax.jit(jax.grad(lambda x: c * case.loss(x)))
    value = jax.jit(lambda x: c * case.loss(x))
    rng = np.random.default_rng(case.seed)
    x = np.asarray(case.x0, float).copy()
    v = np.zeros_like(x)
    xs = [x.copy()]
    since, stopped, anchor = m.t_thres, False, None
    lr = m.lr / c
    for t in range(case.steps):
        g = np.asarray(grad(x))
        if m.noise:
            g = g + c * m.noise * (1 + t) ** -0.55 * rng.standard_normal(x.shape)
        if m.radius and not stopped:  # Jin et al. (2017), Algorithm 2 with its termination
            failed = since == m.t_thres and anchor is not None
            if failed and float(value(x)) - anchor > -c * m.g_thres * m.radius:
                stopped = True  # no sufficient decrease after the last perturbation
            if not stopped and np.linalg.norm(g) <= c * m.g_thres and since >= m.t_thres:
                anchor = float(value(x))
                xi = rng.standard_normal(x.shape)
                xi *= m.radius * rng.uniform() ** (1 / x.size) / np.linalg.norm(xi)
                x = x + xi
                since = 0
            since = min(since + 1, m.t_thres)
        v = m.momentum * v + g
        x = x - lr * v
        xs.append(x.copy())
    return np.array(xs)


def probe_records(case: Case, c: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """The probes of one run (loss scaled by c) and the label of every probe (None: left out).

    Computed in float64 (`jax.enable_x64` only inside this call)."""
    with jax.enable_x64(True):
        return _probe_records(case, c)


def _probe_records(case: Case, c: float) -> tuple[pd.DataFrame, np.ndarray]:
    xs = _move(case, c)
    steps = np.arange(0, case.steps + 1, case.every)

    @jax.jit
    def probe(x):
        loss = case.loss(x)
        eigs = jnp.linalg.eigvalsh(jax.hessian(case.loss)(x))
        return loss, jnp.linalg.norm(jax.grad(case.loss)(x)), eigs[-1], eigs[0]

    loss, g, top, bottom = (np.asarray(v) for v in jax.vmap(probe)(jnp.asarray(xs[steps])))
    m = case.method
    lr = m.lr / c
    frame = pd.DataFrame(
        {
            "step": steps,
            "seed": case.seed,
            "loss": c * loss,
            "grad_norm": c * g,
            "lambda_max": c * top,
            "lambda_min": c * bottom,
            "two_over_lr": 2.0 / lr,
            "eos_threshold": (2.0 + 2.0 * m.momentum) / lr,
        }
    )
    labels = np.array(
        [case.label(xs[s], float(v), int(s)) for s, v in zip(steps, loss, strict=True)],
        dtype=object,
    )
    return frame, settled(labels, case.dwell)


def settled(labels: np.ndarray, dwell: int) -> np.ndarray:
    """Labels kept only where the `dwell` probes on each side carry the same one: a regime
    is seen over a window of probes, so the probes next to a change are left out."""
    out = labels.copy()
    for shift in range(1, dwell + 1):
        out[shift:][labels[shift:] != labels[:-shift]] = None
        out[:-shift][labels[:-shift] != labels[shift:]] = None
    return out


# ---------------------------------------------------------------------------------------------
# problems


def escape_saddle(offset=2.0):
    """x^2 - y^2 + y^4/4 + offset: strict saddle at 0, minima at (0, +-sqrt 2)."""
    return lambda z: z[0] ** 2 - z[1] ** 2 + z[1] ** 4 / 4 + offset


def saddle_labels(y_index=1, y_min=np.sqrt(2.0), convex_from=np.sqrt(2 / 3)):
    """strict_saddle while the unstable coordinate y is below 1% of the way to the minimum
    (and the others below 0.02); descent from 10% of the way until the Hessian turns convex;
    minimum past it."""

    def label(x, loss, step):
        y = abs(x[y_index])
        if y < 0.01 * y_min and np.abs(np.delete(x, y_index)).max() < 0.02:
            return "strict_saddle"
        if 0.1 * y_min < y < 0.9 * convex_from:
            return "descent"
        if y > 1.1 * convex_from:
            return "minimum"
        return None

    return label


def six_hump_camel(offset=2.0):
    """The six-hump camel function + offset: a strict saddle at 0 (loss `offset`, Hessian
    eigenvalues +-sqrt(65)), global minima `CAMEL_MINIMA` (loss offset - 1.0316)."""
    return lambda x: (
        (4 - 2.1 * x[0] ** 2 + x[0] ** 4 / 3) * x[0] ** 2
        + x[0] * x[1]
        + (-4 + 4 * x[1] ** 2) * x[1] ** 2
        + offset
    )


CAMEL_MINIMA = (np.array([0.0898, -0.7126]), np.array([-0.0898, 0.7126]))


def hessian_labels(loss_fn, saddle, minima):
    """strict_saddle while the iterate is within 1% of the way from the saddle (or maximum) to
    the nearest minimizer, in distance (the module's saddle rule, as `saddle_labels`);
    minimum where the Hessian is positive definite and a minimizer is within 0.3; descent
    where the Hessian is indefinite, more than 5% of the way down in loss (~20% in distance)."""
    hess = jax.jit(jax.hessian(loss_fn))
    low = min(float(loss_fn(jnp.asarray(m))) for m in minima)
    top = float(loss_fn(jnp.asarray(saddle))) if saddle is not None else np.inf
    reach = min(np.linalg.norm(m - saddle) for m in minima) if saddle is not None else 0.0

    def label(x, loss, step):
        lam = np.linalg.eigvalsh(np.asarray(hess(jnp.asarray(x))))
        near_min = min(np.linalg.norm(x - m) for m in minima) < 0.3
        if saddle is not None and np.linalg.norm(x - saddle) <= 0.01 * reach:
            return "strict_saddle"
        if lam[0] > 0.05 * lam[-1] and near_min:
            return "minimum"
        if lam[0] < 0 and top - loss > 0.05 * (top - low) and not near_min:
            return "descent"
        return None

    return label


def deep_linear(depth, singular_values):
    d = len(singular_values)
    target = jnp.diag(jnp.asarray(singular_values, float))

    def loss(z):
        ws = z.reshape(depth, d, d)
        product = ws[0]
        for w in ws[1:]:
            product = w @ product
        return 0.5 * jnp.sum((product - target) ** 2)

    levels = [0.5 * sum(s**2 for s in singular_values[k:]) for k in range(d)] + [0.0]

    def label(x, value, step):
        for k in range(d):
            top, low = levels[k], levels[k + 1]
            drop = top - low
            if abs(value - top) <= 0.01 * drop:
                return "strict_saddle"
            if low + 0.1 * drop < value < top - 0.1 * drop:
                return "descent"
        return "minimum" if value <= 1e-3 * levels[d - 1] else None

    return loss, label, d * d * depth


def quadratic(curvatures, offset=0.0):
    lam = jnp.asarray(curvatures, float)
    return lambda z: 0.5 * jnp.sum(lam * z**2) + offset


def eos_labels(eta_lambda, initial):
    def label(x, loss, step):
        if eta_lambda > 2 and loss > 2 * initial:
            return "divergence"
        if eta_lambda >= 1.8:
            return "edge_of_stability"
        return "minimum"

    return label


def abs_valley(a=1.0, b=1.0):
    return lambda z: a * jnp.abs(z[0]) + b * jnp.sum(z[1:] ** 2)


def kink_labels(lr, a=1.0, b=1.0):
    def label(x, loss, step):
        if abs(x[0]) <= lr * a and b * np.sum(x[1:] ** 2) < 0.05 * lr * a:
            return "oscillation"
        if abs(x[0]) > 3 * lr * a:
            return "descent"
        return None

    return label


def gaussian_well(a=1.0, offset=0.0):
    """1 - exp(-|x|^2 / (2 a^2)) + offset: a minimum at 0 inside a plateau."""
    return lambda z: 1.0 - jnp.exp(-jnp.sum(z**2) / (2 * a**2)) + offset


def well_labels(a, lr):
    def label(x, loss, step):
        r = np.linalg.norm(x) / a
        slope = r * np.exp(-(r**2) / 2) / a  # ||g||
        if r > 2.5 and lr * slope**2 / max(loss, 1e-300) < 1e-4 / 3:
            return "plateau"
        if 1.2 < r < 2.2:
            return "descent"
        if r < 0.7:
            return "minimum"
        return None

    return label


def newton_critical_point(loss_fn, guess, iterations=20):
    """The critical point of `loss_fn` near `guess` by Newton's method on the gradient."""
    hess, grad = jax.jit(jax.hessian(loss_fn)), jax.jit(jax.grad(loss_fn))
    x = np.asarray(guess, float)
    for _ in range(iterations):
        x = x - np.linalg.solve(np.asarray(hess(jnp.asarray(x))), np.asarray(grad(jnp.asarray(x))))
    return x


def always(regime):
    return lambda x, loss, step: regime


def resolved(regime, initial):
    """`regime` while the loss is above float32 resolution of the initial loss (1e-6 L0);
    below it a run cannot tell the loss from its floor (left out)."""
    return lambda x, loss, step: regime if loss > 1e-6 * initial else None


def logistic_regression(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d))
    labels = (features @ np.array([1.0, -2.0, 0.5]) + 1.5 * rng.standard_normal(n) > 0) * 2 - 1
    X, y = jnp.asarray(features), jnp.asarray(labels, float)
    loss = lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (X @ w)))
    best = float(loss(jnp.asarray(newton_critical_point(loss, np.zeros(d)))))  # the optimum
    start = float(loss(jnp.zeros(d)))

    def label(x, value, step):
        return "minimum" if value - best <= 0.1 * (start - best) else None

    return loss, label


def cases() -> list[Case]:
    """Every labelled problem, train then held-out (built in float64)."""
    with jax.enable_x64(True):
        return _cases()


def _cases() -> list[Case]:
    out = []
    z = np.zeros

    # --- train -------------------------------------------------------------------------------
    out.append(
        Case(
            "escape_saddle gd",
            "train",
            escape_saddle(),
            np.array([1e-3, 1e-7]),
            Method(0.1),
            300,
            5,
            saddle_labels(),
        )
    )
    f3 = lambda x: x[0] ** 2 + 0.5 * x[2] ** 2 - x[1] ** 2 + x[1] ** 4 / 4 + 1.0
    out.append(
        Case(
            "3-d saddle gd",
            "train",
            f3,
            np.array([2e-3, 1e-7, 1e-3]),
            Method(0.05),
            600,
            10,
            saddle_labels(),
        )
    )
    loss, label, n = deep_linear(2, (3.0, 2.0, 1.0, 0.5))
    x0 = 1e-3 * np.random.default_rng(1).standard_normal(n)
    out.append(Case("deep linear depth 2", "train", loss, x0, Method(0.05), 400, 5, label))
    loss, label, n = deep_linear(3, (3.0, 2.0, 1.0, 0.5))
    x0 = 1e-2 * np.random.default_rng(2).standard_normal(n)
    out.append(Case("deep linear depth 3", "train", loss, x0, Method(0.05), 1500, 25, label))
    for eta_lambda in (1.0, 1.9, 2.3):
        lr = eta_lambda / 4.0
        out.append(
            Case(
                f"quadratic eta*lambda={eta_lambda}",
                "train",
                quadratic([4.0, 1.0]),
                np.array([1.0, 1.0]),
                Method(lr),
                100,
                5,
                eos_labels(eta_lambda, 2.5),
            )
        )
    for every in (5, 4):
        out.append(
            Case(
                f"abs valley every {every}",
                "train",
                abs_valley(),
                np.array([1.03, 0.5]),
                Method(0.1),
                200,
                every,
                kink_labels(0.1),
            )
        )
    out.append(
        Case(
            "monkey saddle at 0",
            "train",
            lambda x: x[0] ** 3 - 3 * x[0] * x[1] ** 2,
            z(2),
            Method(0.1),
            100,
            10,
            always("flat"),
        )
    )
    loss, _, n = deep_linear(3, (3.0, 2.0, 1.0, 0.5))
    out.append(
        Case("deep linear depth 3 at 0", "train", loss, z(n), Method(0.05), 200, 20, always("flat"))
    )
    out.append(
        Case(
            "gaussian well plateau",
            "train",
            gaussian_well(),
            np.array([3.0, 0.3]),
            Method(0.03),
            3000,
            50,
            well_labels(1.0, 0.03),
        )
    )
    loss, label = logistic_regression()
    out.append(Case("logistic regression", "train", loss, z(3), Method(0.5), 300, 10, label))
    out.append(
        Case(
            "pgd escape (Jin termination)",
            "train",
            escape_saddle(),
            z(2),
            Method(0.1, radius=0.01, g_thres=1e-3, t_thres=20),
            400,
            10,
            saddle_labels(),
            seed=3,
        )
    )
    out.append(
        Case(
            "heavy ball ring-down",
            "train",
            quadratic([1.0, 0.2]),
            np.array([1.0, 1.0]),
            Method(0.1, momentum=0.9),
            200,
            3,
            resolved("oscillation", 0.6),
        )
    )
    out.append(
        Case(
            "shallow ramp",
            "train",
            lambda x: 1.0 - 0.01 * x[0],
            z(1),
            Method(0.1),
            500,
            25,
            always("plateau"),
        )
    )

    out.append(
        Case(
            "escape_saddle slow gd",
            "train",
            escape_saddle(1.0),
            np.array([0.5, 1e-4]),
            Method(0.01),
            1500,
            6,
            saddle_labels(),
        )
    )

    # --- held-out ----------------------------------------------------------------------------
    camel = six_hump_camel()
    camel_minima = CAMEL_MINIMA
    out.append(
        Case(
            "six-hump camel saddle",
            "held-out",
            camel,
            np.array([1e-6, 1e-6]),
            Method(0.02),
            300,
            5,
            hessian_labels(camel, z(2), camel_minima),
        )
    )
    himmelblau = lambda x: (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2
    saddle = np.array([-0.27084459, -0.92303856])
    minima = [
        np.array(p)
        for p in ([3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126])
    ]
    out.append(
        Case(
            "himmelblau maximum",
            "held-out",
            himmelblau,
            saddle + 1e-7,
            Method(0.002),
            800,
            10,
            hessian_labels(himmelblau, saddle, minima),
        )
    )
    loss, label, n = deep_linear(2, (5.0, 1.0, 0.2))
    x0 = 1e-4 * np.random.default_rng(4).standard_normal(n)
    out.append(
        Case("deep linear depth 2 (5, 1, 0.2)", "held-out", loss, x0, Method(0.02), 1200, 10, label)
    )
    for eta_lambda in (0.6, 1.95, 2.5):
        lr = eta_lambda / 10.0
        out.append(
            Case(
                f"3-d quadratic eta*lambda={eta_lambda}",
                "held-out",
                quadratic([10.0, 3.0, 1.0]),
                np.array([1.0, 1.0, 1.0]),
                Method(lr),
                60,
                3,
                eos_labels(eta_lambda, 7.0),
            )
        )
    l1 = lambda x: 2 * jnp.abs(x[0]) + 0.5 * x[1] ** 2
    out.append(
        Case(
            "l1 kink",
            "held-out",
            l1,
            np.array([0.77, 0.2]),
            Method(0.05),
            300,
            7,
            kink_labels(0.05, a=2.0, b=0.5),
        )
    )
    out.append(
        Case(
            "noisy gd escape",
            "held-out",
            escape_saddle(),
            z(2),
            Method(0.05, noise=1e-3),
            600,
            10,
            saddle_labels(),
            seed=5,
        )
    )
    out.append(
        Case(
            "x^4 + y^4 at 0",
            "held-out",
            lambda x: x[0] ** 4 + x[1] ** 4 + 0.5,
            z(2),
            Method(0.1),
            100,
            10,
            always("flat"),
        )
    )
    out.append(
        Case(
            "gaussian well a=2",
            "held-out",
            gaussian_well(a=2.0, offset=0.1),
            np.array([6.4, 0.0]),
            Method(0.2),
            4000,
            50,
            well_labels(2.0, 0.2),
        )
    )
    out.append(
        Case(
            "six-hump camel slow",
            "held-out",
            camel,
            np.array([-1e-5, 2e-5]),
            Method(0.004),
            1200,
            6,
            hessian_labels(camel, z(2), camel_minima),
        )
    )
    out.append(
        Case(
            "gaussian well 3-d a=0.5",
            "held-out",
            gaussian_well(a=0.5),
            np.array([1.6, 0.3, -0.2]),
            Method(0.005),
            3000,
            25,
            well_labels(0.5, 0.005),
        )
    )
    out.append(
        Case(
            "heavy ball 3-d",
            "held-out",
            quadratic([2.0, 1.0, 0.5]),
            np.ones(3),
            Method(0.05, momentum=0.95),
            150,
            4,
            resolved("oscillation", 1.75),
        )
    )

    # --- fresh: written after the held-out labels were revised, run once, not tuned on -------
    himmelblau_saddles = [
        newton_critical_point(himmelblau, p) for p in ([0.087, 2.884], [-3.073, -0.081])
    ]
    for saddle, lr, steps, every in (
        (himmelblau_saddles[0], 0.005, 800, 5),
        (himmelblau_saddles[1], 0.002, 1500, 10),
    ):
        out.append(
            Case(
                f"himmelblau saddle {saddle.round(2).tolist()}",
                "fresh",
                himmelblau,
                saddle + np.array([1e-6, -1e-6]),
                Method(lr),
                steps,
                every,
                hessian_labels(himmelblau, saddle, minima),
            )
        )
    loss, label, n = deep_linear(3, (4.0, 1.0))
    x0 = 1e-2 * np.random.default_rng(6).standard_normal(n)
    out.append(Case("deep linear depth 3 (4, 1)", "fresh", loss, x0, Method(0.03), 2000, 20, label))
    out.append(
        Case(
            "gaussian well offset 0.5",
            "fresh",
            gaussian_well(a=1.0, offset=0.5),
            np.array([3.5, -0.5]),
            Method(0.05),
            4000,
            50,
            well_labels(1.0, 0.05),
        )
    )
    out.append(
        Case(
            "heavy ball 2-d",
            "fresh",
            quadratic([3.0, 0.3]),
            np.array([1.0, -1.0]),
            Method(0.05, momentum=0.9),
            200,
            4,
            resolved("oscillation", 1.65),
        )
    )
    return out
