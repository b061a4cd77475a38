"""Hessian outliers (Sagun, Evci, Güney, Dauphin & Bottou 2017; Papyan 2020) and the gradient
in the top eigenspace (Gur-Ari, Roberts & Dyer 2018) for a softmax cross-entropy classifier
with C = 10 classes.

The claim: the Hessian spectrum of a trained C-class softmax network is a bulk near zero plus
about C outliers (C − 1 for the Gauss-Newton part G = JᵀH_zJ, whose per-example output Hessian
diag(p) − ppᵀ has rank C − 1), carried by the class structure of the data; and after a few
steps of training the gradient lies mostly in the span of those top eigenvectors.

Setup: `data=blobs` (a Gaussian mixture, 10 classes in 20 dimensions, centres N(0, 3²), spread
6, 1000 points, 800 for training), a ReLU MLP 20-32-32-10 (2058 parameters, so the dense
Hessian is the ground truth), full-batch gradient descent with momentum 0.9 at η = 0.1. At
logged steps: the dense Hessian H (`jax.hessian`) and Gauss-Newton G (JᵀH_zJ / n), their
eigenvalues, the largest gap λ_k / λ_{k+1} among the top 30, and the overlap
‖P_k g‖² / ‖g‖² of the full-batch gradient with the top-k eigenspace of H, k = C − 1 and C.
At the step shown in the figure: lossbench's SLQ density (`lossbench.curvature
.spectral_density`) and top-k Lanczos eigenvalues (`hessian_eigenvalues`), checked against
the dense ones.

    .venv/bin/python experiments/hessian_outliers.py  # → outputs/experiments/hessian_outliers/
    .venv/bin/python experiments/hessian_outliers.py --figure experiments/hessian_outliers.png
"""

from __future__ import annotations

import sys

import _gallery
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import scipy.linalg
from jax.flatten_util import ravel_pytree

from lossbench import compose
from lossbench.curvature import hessian_eigenvalues, spectral_density
from lossbench.data.base import make_dataset

NAME = "hessian_outliers"
CLASSES = 10
CHECKPOINTS = (0, 5, 20, 100, 300, 1000)
TOP = 30  # eigenvalues searched for the largest gap


def blobs(dim=20, spread=6.0, n=1000):
    cfg = compose(
        "data=blobs",
        f"data.classes={CLASSES}",
        f"data.dim={dim}",
        f"data.n={n}",
        f"data.spread={spread}",
    )
    data = make_dataset(cfg.data)
    return jnp.asarray(data.train["x"]), jnp.asarray(data.train["y"])


def init_mlp(key, sizes):
    params = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        key, k = jax.random.split(key)
        params.append({"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)})
    return params


def logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def dense_curvature(x, y, unravel):
    """A jitted flat-parameter function: H and G (P × P) and the gradient, where
    G = Jᵀ H_z J / n, J the Jacobian of the logits and H_z = diag(p) − ppᵀ per example."""

    def flat_loss(v):
        return loss_fn(unravel(v), x, y)

    @jax.jit
    def curvature(flat):
        jac = jax.jacfwd(lambda v: logits(unravel(v), x))(flat)  # (n, C, P)
        p = jax.nn.softmax(logits(unravel(flat), x))
        # Σ_n J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n, as two Gram matrices
        scaled = (jnp.sqrt(p)[:, :, None] * jac).reshape(-1, flat.size)
        mean_row = jnp.einsum("nc,ncp->np", p, jac)
        ggn = (scaled.T @ scaled - mean_row.T @ mean_row) / x.shape[0]
        return jax.hessian(flat_loss)(flat), ggn, jax.grad(flat_loss)(flat)

    return curvature


def spectra(curvature, flat):
    """The top TOP + 1 eigenvalues of H (descending, with eigenvectors), all of G (descending),
    and the gradient (float64). Only H's top eigenpairs are computed (LAPACK's subset driver):
    about half the CPU of the full eigendecomposition of a 2058 × 2058 matrix."""
    hessian, ggn, grad = (np.asarray(a, np.float64) for a in curvature(flat))
    size = hessian.shape[0]
    h_vals, h_vecs = scipy.linalg.eigh(hessian, subset_by_index=[size - TOP - 1, size - 1])
    return h_vals[::-1], h_vecs[:, ::-1], np.linalg.eigvalsh(ggn)[::-1], grad


def largest_gap(values, top=TOP):
    """(k, λ_k / λ_{k+1}) for the largest ratio among the top `top` eigenvalues."""
    top_vals = values[: top + 1]
    ratios = top_vals[:-1] / top_vals[1:]
    k = int(np.argmax(ratios[:top])) + 1
    return k, float(ratios[k - 1])


def overlap(vecs, grad, k):
    """‖P_k g‖² / ‖g‖², P_k the projector on the top-k eigenvectors (Gur-Ari et al. 2018)."""
    return float(np.sum((vecs[:, :k].T @ grad) ** 2) / np.sum(grad**2))


def experiment(checkpoints=CHECKPOINTS, width=32, lr=0.1, shown=100, slq_steps=80, seed=0) -> dict:
    """Train and measure at every checkpoint; SLQ and Lanczos at the `shown` step."""
    x, y = blobs()
    params = init_mlp(jax.random.key(seed), [x.shape[1], width, width, CLASSES])
    opt = optax.sgd(lr, momentum=0.9)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    curvature = dense_curvature(x, y, ravel_pytree(params)[1])
    rows, done, at_shown = [], 0, None
    for target in checkpoints:
        for _ in range(target - done):
            params, state = step(params, state)
        done = target
        h_vals, h_vecs, g_vals, grad = spectra(curvature, ravel_pytree(params)[0])
        k_h, gap_h = largest_gap(h_vals)
        k_g, gap_g = largest_gap(g_vals)
        accuracy = float(jnp.mean(jnp.argmax(logits(params, x), -1) == y))
        rows.append(
            {
                "step": target,
                "loss": float(loss_fn(params, x, y)),
                "accuracy": accuracy,
                "h_top": h_vals[: TOP + 1],
                "g_top": g_vals[: TOP + 1],
                "h_gap_k": k_h,
                "h_gap": gap_h,
                "g_gap_k": k_g,
                "g_gap": gap_g,
                "h_gap_at_c1": float(h_vals[CLASSES - 2] / h_vals[CLASSES - 1]),
                "overlap_c1": overlap(h_vecs, grad, CLASSES - 1),
                "overlap_c": overlap(h_vecs, grad, CLASSES),
                "overlap_random_c": CLASSES / len(grad),
                "params": len(grad),
            }
        )
        print(f"step {target}: largest gap k = {k_h} (H), {k_g} (G)", flush=True)
        if target == shown:
            at_shown = (params, h_vals, g_vals)
    params, h_vals, g_vals = at_shown
    key = jax.random.key(1)
    lanczos = hessian_eigenvalues(
        loss_fn, params, x, y, key=key, lanczos_steps=80, top_k=2 * CLASSES, bottom_k=1
    )
    density = spectral_density(loss_fn, params, x, y, key=key, lanczos_steps=slq_steps, samples=4)
    return {
        "rows": rows,
        "shown": shown,
        "dense_h": h_vals,
        "dense_g": g_vals,
        "lanczos_top": np.asarray(lanczos.top, np.float64),
        "density": density,
    }


def table(results) -> str:
    lines = [
        "| step | train loss | train acc. | largest gap in H: k, λk/λk+1 | in G: k, λk/λk+1 "
        "| H: λ9/λ10 | gradient overlap, top 9 | top 10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['step']} | {r['loss']:.3g} | {r['accuracy']:.3f} | {r['h_gap_k']}, "
            f"{r['h_gap']:.2f} | {r['g_gap_k']}, {r['g_gap']:.2f} | {r['h_gap_at_c1']:.2f} | "
            f"{r['overlap_c1']:.3f} | {r['overlap_c']:.3f} |"
        )
    top = results["lanczos_top"][:CLASSES]
    error = np.max(np.abs(top - results["dense_h"][:CLASSES]) / results["dense_h"][:CLASSES])
    lines += [
        "",
        f"At step {results['shown']}: top-10 Lanczos eigenvalues {np.round(top, 3).tolist()}, "
        f"largest relative error against the dense Hessian {error:.1e}. A random 10-dimensional "
        f"subspace would hold {results['rows'][0]['overlap_random_c']:.4f} of the gradient.",
    ]
    return "\n".join(lines)


def figure(results):
    rows, shown = results["rows"], results["shown"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    density = results["density"]
    nodes = np.asarray(density.nodes).ravel()
    span = nodes.max() - nodes.min()
    grid = np.linspace(nodes.min() - 0.05 * span, nodes.max() + 0.05 * span, 600)
    values = np.asarray(density.density(jnp.asarray(grid), 0.015 * span))
    axes[0].semilogy(grid, values)
    axes[0].set_ylim(values.max() * 1e-5, values.max() * 2)
    for value in results["lanczos_top"][:CLASSES]:
        axes[0].axvline(value, color="tab:red", lw=0.7, ls="--")
    axes[0].set(xlabel="eigenvalue", ylabel="density (SLQ, 4 × 80 Lanczos steps)")
    axes[0].set_title(
        f"H at step {shown}: SLQ density; dashed: top-10 Lanczos eigenvalues", fontsize=9
    )
    index = np.arange(1, TOP + 2)
    axes[1].semilogy(index, results["dense_h"][: TOP + 1], "o-", ms=3, label="H (dense)")
    axes[1].semilogy(index, results["dense_g"][: TOP + 1], "s--", ms=3, label="G = JᵀH_zJ (dense)")
    axes[1].axvline(CLASSES - 0.5, color="gray", lw=0.8, ls=":", label="between 9 and 10")
    axes[1].set(xlabel="eigenvalue index k", ylabel="λk")
    axes[1].set_title(f"top {TOP + 1} eigenvalues at step {shown}", fontsize=9)
    axes[1].legend(fontsize=8)
    steps = [max(r["step"], 1) for r in rows]
    axes[2].semilogx(steps, [r["overlap_c"] for r in rows], "o-", label="top 10 (C)")
    axes[2].semilogx(steps, [r["overlap_c1"] for r in rows], "s--", label="top 9 (C − 1)")
    axes[2].set(xlabel="step (0 drawn at 1)", ylabel="‖P_k g‖² / ‖g‖²")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_title("gradient overlap with the top-k Hessian eigenspace", fontsize=9)
    axes[2].legend(fontsize=8)
    fig.suptitle(
        "ReLU MLP on a 10-class Gaussian mixture, softmax cross-entropy: C − 1 = 9 outliers "
        "above the bulk (H and G), and the gradient's overlap with the top eigenspace",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    args = _gallery.parser(NAME, __doc__).parse_args(argv)
    results = experiment()
    return _gallery.publish(args, NAME, table(results), figure(results))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
