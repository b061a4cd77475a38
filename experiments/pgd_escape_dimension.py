"""Perturbed gradient descent escapes a strict saddle in a time that grows like log d
(Jin, Ge, Netrapalli, Kakade & Jordan 2017).

The surface, in d dimensions, is f(x) = −½γx₁² + x₁⁴/4 + ½ Σ_{i>1} xᵢ²: a strict saddle at the
origin (Hessian diag(−γ, 1, …, 1)) and minima at x₁ = ±√γ of value −γ²/4. Every run starts
exactly at the saddle, where the gradient is zero, so plain gradient descent never moves;
`lossbench`'s PGD (`lossbench.optimizers.escape.perturbed_gd`) adds one perturbation drawn
uniformly from a ball of radius r, then descends at step η. Only the perturbation's component
along x₁ escapes, and for a uniform direction in d dimensions it is about r/√d, which then grows
by 1 + ηγ per step: the escape time is ≈ ln(c√d / r) / ln(1 + ηγ), linear in ln d with slope
½ / ln(1 + ηγ) — the log d (not poly d) dependence of Jin et al.'s Theorem 3.

    .venv/bin/python experiments/pgd_escape_dimension.py          # into outputs/experiments/
    .venv/bin/python experiments/pgd_escape_dimension.py \
        --figure experiments/pgd_escape_dimension.png                  # the gallery's figure
"""

from __future__ import annotations

import sys
from functools import partial

import _gallery
import jax
import jax.numpy as jnp
import numpy as np

from lossbench.optimizers.escape import perturbed_gd

NAME = "pgd_escape_dimension"
GAMMA, LR, RADIUS = 1.0, 0.1, 1e-3
ESCAPED = -(GAMMA**2) / 8  # escaped: half-way down to the minima's value −γ²/4
DIMENSIONS = (2, 8, 32, 128, 512, 2048, 8192)


def loss_fn(x):
    return -0.5 * GAMMA * x[0] ** 2 + 0.25 * x[0] ** 4 + 0.5 * jnp.sum(x[1:] ** 2)


@partial(jax.jit, static_argnames=("dim", "steps", "seeds"))
def escape_steps(key, dim: int, steps: int, seeds: int):
    """Per seed, the first step at which the loss is below ESCAPED (`steps` if never)."""
    tx = perturbed_gd(LR, RADIUS, g_thres=1e-6, t_thres=10 * steps)  # one perturbation

    def one(key):
        def step(carry, key):
            x, state = carry
            updates, state = tx.update(jax.grad(loss_fn)(x), state, x, key=key)
            x = x + updates
            return (x, state), loss_fn(x)

        x0 = jnp.zeros(dim)
        _, losses = jax.lax.scan(step, (x0, tx.init(x0)), jax.random.split(key, steps))
        below = losses < ESCAPED
        return jnp.where(below.any(), jnp.argmax(below) + 1, steps)

    return jax.vmap(one)(jax.random.split(key, seeds))


def predicted_slope() -> float:
    return 0.5 / np.log(1 + LR * GAMMA)


def experiment(dimensions=DIMENSIONS, seeds: int = 64, steps: int = 400, key: int = 0) -> dict:
    """Escape steps per dimension (all seeds), their means, and the fit mean = a + b ln d."""
    times = {d: np.asarray(escape_steps(jax.random.key(key), d, steps, seeds)) for d in dimensions}
    means = np.array([times[d].mean() for d in dimensions])
    slope, intercept = np.polyfit(np.log(dimensions), means, 1)
    return {
        "times": times,
        "means": means,
        "slope": float(slope),
        "intercept": float(intercept),
        "predicted_slope": predicted_slope(),
        "never": int(sum((t >= steps).sum() for t in times.values())),
        "steps": steps,
    }


def table(result) -> str:
    lines = ["| d | mean escape steps | std | min | max |", "|---|---|---|---|---|"]
    for d, t in result["times"].items():
        lines.append(f"| {d} | {t.mean():.1f} | {t.std():.1f} | {t.min()} | {t.max()} |")
    lines.append("")
    lines.append(
        f"fit: mean = {result['intercept']:.1f} + {result['slope']:.2f} ln d; predicted slope "
        f"½/ln(1 + ηγ) = {result['predicted_slope']:.2f}; runs that never escaped: "
        f"{result['never']}"
    )
    return "\n".join(lines)


def figure(result):
    import matplotlib.pyplot as plt

    dims = np.array(list(result["times"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    spread = [result["times"][d] for d in dims]
    ax.boxplot(spread, positions=np.log(dims), widths=0.4, showfliers=False, manage_ticks=False)
    ax.plot(np.log(dims), result["means"], "o", color="tab:red", label="mean over seeds")
    fit = result["intercept"] + result["slope"] * np.log(dims)
    ax.plot(
        np.log(dims), fit, "--", color="tab:red", label=f"fit: slope {result['slope']:.2f} per ln d"
    )
    theory = result["means"][0] + result["predicted_slope"] * (np.log(dims) - np.log(dims[0]))
    ax.plot(
        np.log(dims),
        theory,
        ":",
        color="black",
        label=f"½/ln(1+ηγ) = {result['predicted_slope']:.2f} per ln d",
    )
    ax.set_xticks(np.log(dims), [str(d) for d in dims])
    ax.set_xlabel("dimension d (log scale)")
    ax.set_ylabel("steps to escape the saddle")
    ax.set_title(f"PGD from a strict saddle, r = {RADIUS}, η = {LR}, γ = {GAMMA}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--seeds", type=int, default=64)
    args = parser.parse_args(argv)
    result = experiment(seeds=args.seeds)
    return _gallery.publish(args, NAME, table(result), figure(result))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
