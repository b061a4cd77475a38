"""The catapult phase (Lewkowycz et al. 2020): a wide two-layer network under gradient descent
at step sizes η = c/λ0 across the thresholds c = 2 and c = 4.

The model is the paper's solvable one, f(x) = vᵀUx/√m of width m, fitted with the squared
loss L = (1/2n) Σ (f(xᵢ) − yᵢ)². λ is the top eigenvalue of its neural tangent kernel
Θ/n = JJᵀ/n (the Gauss-Newton λmax), computed exactly at every step; λ0 is its value at
initialisation. The paper's claims: for c < 2 (lazy phase) the loss falls monotonically and λ
stays at λ0; for 2 < c < 4 (catapult phase) the loss first grows, λ falls until ηλ < 2, and
the loss then converges at a flatter point; for c > 4 the run diverges.

    .venv/bin/python experiments/catapult.py       # writes outputs/experiments/catapult/
    .venv/bin/python experiments/catapult.py --figure experiments/catapult.png  # the gallery
"""

from __future__ import annotations

import sys
from functools import partial

import _gallery
import jax
import jax.numpy as jnp
import numpy as np

NAME = "catapult"
RATES = (0.5, 1.5, 2.5, 3.5, 4.5)  # c = η λ0
BLOWUP = 1e6  # diverged: the loss exceeds this multiple of its start


def init(key, n=16, d=8, width=1024):
    """Inputs on the sphere, ±1 targets from a random teacher, and N(0, 1) weights."""
    kx, kt, ku, kv = jax.random.split(key, 4)
    x = jax.random.normal(kx, (n, d))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sign(x @ jax.random.normal(kt, (d,)))
    params = {"u": jax.random.normal(ku, (width, d)), "v": jax.random.normal(kv, (width,))}
    return params, x, y


def predict(params, x):
    return (x @ params["u"].T) @ params["v"] / jnp.sqrt(params["v"].shape[0])


def loss_fn(params, x, y):
    return 0.5 * jnp.mean((predict(params, x) - y) ** 2)


def ntk_top(params, x):
    """The top eigenvalue of JJᵀ/n, J the Jacobian of the outputs in the parameters."""
    jac = jax.jacrev(predict)(params, x)
    flat = jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)], 1)
    return jnp.linalg.eigvalsh(flat @ flat.T / x.shape[0])[-1]


@partial(jax.jit, static_argnames="steps")
def descend(params, x, y, lr, steps):
    """`steps` of gradient descent; the loss and λ before every step."""

    def step(params, _):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        record = (loss, ntk_top(params, x))
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), record

    _, (losses, lams) = jax.lax.scan(step, params, length=steps)
    return losses, lams


def experiment(rates=RATES, steps=150, width=1024, seed=0) -> list[dict]:
    """One run per c = ηλ0 from the same initialisation; a row of numbers per run."""
    params, x, y = init(jax.random.key(seed), width=width)
    lam0 = float(ntk_top(params, x))
    rows = []
    for c in rates:
        lr = c / lam0
        losses, lams = (np.asarray(a, np.float64) for a in descend(params, x, y, lr, steps))
        finite = np.isfinite(losses) & (losses < BLOWUP * losses[0])
        diverged = not finite.all()
        end = int(np.argmin(finite)) if diverged else steps
        rows.append(
            {
                "c": c,
                "width": width,
                "lr": lr,
                "lambda0": lam0,
                "losses": losses[:end],
                "lams": lams[:end],
                "diverged": diverged,
                "steps": end,
                "peak_ratio": float(losses[:end].max() / losses[0]),
                "monotone": bool(np.all(np.diff(losses[:end]) <= 1e-7 * losses[0])),
                "final_loss": float(losses[end - 1]),
                "final_eta_lambda": float(lr * lams[end - 1]),
            }
        )
    return rows


def table(rows) -> str:
    lines = [
        "| c = ηλ0 | outcome | loss peak / start | monotone | final loss | final ηλ |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        outcome = f"diverged at step {r['steps']}" if r["diverged"] else "converged"
        lines.append(
            f"| {r['c']} | {outcome} | {r['peak_ratio']:.3g} | {r['monotone']} | "
            f"{r['final_loss']:.2e} | {r['final_eta_lambda']:.3f} |"
        )
    return "\n".join(lines)


def figure(rows):
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lam) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        label = f"c = {r['c']}" + (" (diverged)" if r["diverged"] else "")
        ax_loss.semilogy(r["losses"], label=label)
        ax_lam.plot(r["lr"] * r["lams"], label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_title("loss: lazy (c < 2), catapult (2 < c < 4), divergent (c > 4)", fontsize=9)
    ax_lam.axhline(2, color="black", ls="--", lw=1, label="ηλ = 2")
    ax_lam.set_yscale("log")
    ax_lam.set_xlabel("step")
    ax_lam.set_ylabel("ηλ (λ: top NTK eigenvalue)")
    ax_lam.set_title(
        f"width {rows[0]['width']} two-layer net, λ0 = {rows[0]['lambda0']:.3f}", fontsize=9
    )
    ax_lam.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = _gallery.parser(NAME, __doc__)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args(argv)
    rows = experiment(steps=args.steps, width=args.width)
    return _gallery.publish(args, NAME, table(rows), figure(rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
