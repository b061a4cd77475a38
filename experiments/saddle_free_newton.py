"""Saddle-free Newton against gradient descent and Newton's method at the saddle of 5x² − y²
(Dauphin et al. 2014, Fig. 2).

All three start at (1, 10⁻³), next to the strict saddle at the origin, whose Hessian is
diag(10, −2). Newton's step −H⁻¹g jumps onto the saddle and stays: it is attracted by every
critical point. Gradient descent (η = 0.05) leaves along −y, but slowly, by a factor 1 + 2η
per step. Saddle-free Newton (`lossbench.optimizers.escape.saddle_free_newton`, step
−|H|⁻¹g in a Krylov space) rescales both directions by their curvature: x is solved in one step
and y doubles every step, so it escapes an order of magnitude sooner than gradient descent.

    .venv/bin/python experiments/saddle_free_newton.py   # outputs/experiments/saddle_free_newton/
    .venv/bin/python experiments/saddle_free_newton.py --figure experiments/saddle_free_newton.png
"""

from __future__ import annotations

import sys
from functools import partial

import _gallery
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossbench.models.surfaces import SURFACES
from lossbench.optimizers.escape import saddle_free_newton

NAME = "saddle_free_newton"
A, B = 5.0, 1.0  # 5x² − y²: quadratic_saddle with a = 5, b = 1
START = (1.0, 1e-3)
ESCAPED = -1.0  # escaped once the loss is below this (|y| > 1 near x = 0)


def loss_fn(point):
    return SURFACES["quadratic_saddle"].fn(point, A, B)


def newton() -> optax.GradientTransformationExtraArgs:
    """Newton's method, x ← x − H⁻¹g, with the dense Hessian of the loss (2 parameters)."""

    def update(updates, state, params=None, **extra):
        del extra
        return -jnp.linalg.solve(jax.hessian(loss_fn)(params), updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


METHODS = {
    "gradient descent (η = 0.05)": lambda: optax.sgd(0.05),
    "Newton": newton,
    "saddle-free Newton": lambda: saddle_free_newton(1.0, rank=2, damping=1e-6),
}


@partial(jax.jit, static_argnames=("method", "steps"))
def trajectory(method: str, steps: int):
    """The points x_0 … x_steps of `method` from START."""
    tx = METHODS[method]()
    start = jnp.asarray(START, jnp.float32)

    def step(carry, _):
        point, state = carry
        grads = jax.grad(loss_fn)(point)
        updates, state = tx.update(grads, state, point, value_fn=loss_fn)
        point = point + updates
        return (point, state), point

    _, points = jax.lax.scan(step, (start, tx.init(start)), length=steps)
    return jnp.concatenate([start[None], points])


def experiment(steps: int = 100) -> dict[str, dict]:
    results = {}
    for method in METHODS:
        points = np.asarray(trajectory(method, steps), np.float64)
        losses = A * points[:, 0] ** 2 - B * points[:, 1] ** 2
        escaped = np.flatnonzero(losses < ESCAPED)
        results[method] = {
            "points": points,
            "losses": losses,
            "escape_step": int(escaped[0]) if escaped.size else None,
            "closest_to_saddle": float(np.linalg.norm(points, axis=1).min()),
        }
    return results


def table(results) -> str:
    lines = ["| method | steps to loss < −1 | closest distance to the saddle |", "|---|---|---|"]
    for method, r in results.items():
        escape = "never" if r["escape_step"] is None else str(r["escape_step"])
        lines.append(f"| {method} | {escape} | {r['closest_to_saddle']:.3g} |")
    return "\n".join(lines)


def figure(results):
    import matplotlib.pyplot as plt

    fig, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    xs, ys = np.linspace(-1.2, 1.2, 200), np.linspace(-3, 3, 200)
    grid_x, grid_y = np.meshgrid(xs, ys)
    ax_path.contour(xs, ys, A * grid_x**2 - B * grid_y**2, levels=25, linewidths=0.5)
    for method, r in results.items():
        shown = r["points"][np.abs(r["points"][:, 1]) < 3]
        ax_path.plot(shown[:, 0], shown[:, 1], ".-", ms=3, lw=0.8, label=method)
        inside = np.flatnonzero(~(r["losses"] > -1e3))  # cut where it leaves the axis
        end = inside[0] + 1 if inside.size else len(r["losses"])
        ax_loss.plot(np.arange(end), r["losses"][:end], label=method)
    ax_path.plot(0, 0, "kx", ms=8, label="saddle")
    ax_path.set_xlim(xs[0], xs[-1])
    ax_path.set_ylim(ys[0], ys[-1])
    ax_path.set_xlabel("x")
    ax_path.set_ylabel("y")
    ax_path.set_title("5x² − y² from (1, 10⁻³)", fontsize=9)
    ax_path.legend(fontsize=7, loc="lower left")
    ax_loss.set_yscale("symlog", linthresh=1e-3)
    ax_loss.axhline(ESCAPED, color="gray", lw=0.8, ls="--", label="escaped (loss −1)")
    ax_loss.set_ylim(-1e3, 10)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss: Newton stays at the saddle's value 0", fontsize=9)
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    results = experiment(args.steps)
    return _gallery.publish(args, NAME, table(results), figure(results))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
