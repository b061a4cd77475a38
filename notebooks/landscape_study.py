# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A landscape study
#
# `lossbench.landscape` evaluates a loss on lines and planes through parameter space, as pure
# functions on pytrees: filter-normalised random planes (Li et al. 2018), Hessian eigenvector
# directions, and the straight line between two solutions with its barrier (Frankle et al.
# 2020). For a saved run, `lossbench landscape RUN_DIR kind=filter` does the same from the
# command line; here everything is in Python, on a small MLP trained on scikit-learn's digits.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

from lossbench.landscape import (
    barrier_height,
    eigen_directions,
    evaluate_grid,
    evaluate_points,
    linear_path,
    random_directions,
)

digits = load_digits()
x = jnp.asarray(digits.data[:600] / 16.0, jnp.float32)
y = jnp.asarray(digits.target[:600])
data = (x, y)


def init(key, widths=(64, 32, 10)):
    keys = jax.random.split(key, len(widths) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, widths[:-1], widths[1:], strict=True)
    ]


def logits(params, inputs):
    for layer in params[:-1]:
        inputs = jax.nn.relu(inputs @ layer["w"] + layer["b"])
    return inputs @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, data):
    inputs, labels = data
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, inputs), labels).mean()


def metrics(params, data):
    inputs, labels = data
    return {
        "loss": loss_fn(params, data),
        "accuracy": jnp.mean(jnp.argmax(logits(params, inputs), -1) == labels),
    }


optimizer = optax.sgd(0.5)


@jax.jit
def train(params, data):
    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss_fn)(params, data)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=400)
    return params


solutions = [train(init(jax.random.key(seed)), data) for seed in (0, 1)]
for seed, params in enumerate(solutions):
    print(f"seed {seed}:", {k: round(float(v), 4) for k, v in metrics(params, data).items()})

# %% [markdown]
# ## A filter-normalised plane
# Two Gaussian directions, each filter (a kernel's output unit, its last axis in JAX) rescaled
# to the norm of the same filter of the weights; biases left out (`one_d="zero"`). The whole
# grid is one compiled program.

# %%
center = solutions[0]
directions = random_directions(jax.random.key(7), center, 2)
axis = np.linspace(-1.0, 1.0, 21)
plane = evaluate_grid(metrics, center, directions, (axis, axis), data)
figure, ax = plt.subplots(figsize=(5, 4.5))
levels = np.quantile(plane["loss"], np.linspace(0.0, 0.95, 20))
contours = ax.contour(axis, axis, plane["loss"].T, levels=np.unique(levels))
ax.clabel(contours, fontsize=6)
ax.plot(0, 0, "*", color="tab:red", ms=10, label="trained weights")
ax.set_xlabel("α (direction 1)")
ax.set_ylabel("β (direction 2)")
ax.set_title("train loss on a filter-normalised plane")
ax.legend()
figure.tight_layout()
centre_loss = plane["loss"][10, 10]
print("loss at the centre", centre_loss, " lowest on the plane", plane["loss"].min())
np.testing.assert_allclose(centre_loss, metrics(center, data)["loss"], rtol=1e-4)

# %% [markdown]
# ## Along the sharpest direction
# `eigen_directions` runs Lanczos (`lossbench.curvature`) for the top Hessian eigenvectors. Near
# a minimum the loss along the top unit eigenvector v grows like L₀ + ½ λmax t², so a slice
# along it is the sharpest one through the point — and a filter-normalised direction scaled to
# the same length sees much less curvature.

# %%
eig = eigen_directions(loss_fn, center, data, key=jax.random.key(3), top_k=1, bottom_k=1)
lam = float(eig["top_values"][0])
t = np.linspace(-0.3, 0.3, 31)
along_top = evaluate_points(metrics, center, (eig["top"][0],), t[:, None], data)["loss"]
l0 = float(metrics(center, data)["loss"])
quadratic = l0 + 0.5 * lam * t**2
print(f"λmax = {lam:.3f}, λmin = {float(eig['bottom_values'][0]):.4f}")
figure, ax = plt.subplots(figsize=(6, 3))
ax.plot(t, along_top, label="loss along the top eigenvector")
ax.plot(t, quadratic, "--", label="L₀ + ½ λmax t²")
ax.set_xlabel("t (unit-norm step)")
ax.set_ylabel("train loss")
ax.legend()
figure.tight_layout()
h = t[16] - t[15]  # the second difference at t = 0 measures the curvature along v
curvature = (along_top[16] + along_top[14] - 2 * along_top[15]) / h**2
print(f"second difference along v: {curvature:.3f} (λmax {lam:.3f})")
assert abs(curvature - lam) < 0.05 * lam

# %% [markdown]
# ## Are the two solutions in one basin?
# The straight line from seed 0's weights to seed 1's: its barrier is the largest excess of the
# loss over the chord between the ends. Two independently trained networks, with hidden units
# in different orders, are usually separated by a barrier.

# %%
line = linear_path(metrics, solutions[0], solutions[1], data, points=41)
height, where = barrier_height(line["t"], line["loss"])
print(f"barrier {height:.3f} at t = {where:.2f}")
figure, ax = plt.subplots(figsize=(6, 3))
ax.plot(line["t"], line["loss"], label="train loss")
ax.plot(line["t"], line["accuracy"], label="train accuracy")
ax.set_xlabel("t (0: seed 0, 1: seed 1)")
ax.legend()
figure.tight_layout()
assert height > 0.1 and 0.1 < where < 0.9
