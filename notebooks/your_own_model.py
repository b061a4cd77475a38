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
# # Probing your own model and loss from Python
#
# `lossbench.curvature` needs no config, no Hydra and no run directory: give it a loss
# function `loss_fn(params, *args)` over any pytree of parameters and it returns Hessian
# eigenvalues (Lanczos, both ends), the trace (Hutchinson) and the spectral density (stochastic
# Lanczos quadrature, Ghorbani et al. 2019). The arguments after `params` are traced, so the
# same function called with new data of the same shapes compiles nothing.
#
# Here the model is a small two-layer tanh network written in plain JAX, and the loss is one a
# data loader would not know how to call: a class-weighted squared hinge with an L2 penalty,
# taking inputs, labels, per-class weights and the penalty as four separate arguments.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_iris

from lossbench.curvature import hessian_eigenvalues, hessian_trace, spectral_density

jax.config.update("jax_enable_x64", True)  # float64, to compare with the dense Hessian below

x, y = load_iris(return_X_y=True)
x = (x - x.mean(0)) / x.std(0)
key = jax.random.key(0)
k1, k2 = jax.random.split(key)
params = {
    "hidden": {"w": jax.random.normal(k1, (4, 6)) / 2.0, "b": jnp.zeros(6)},
    "out": {"w": jax.random.normal(k2, (6, 3)) / np.sqrt(6), "b": jnp.zeros(3)},
}


def predict(params, inputs):
    hidden = jnp.tanh(inputs @ params["hidden"]["w"] + params["hidden"]["b"])
    return hidden @ params["out"]["w"] + params["out"]["b"]


def weighted_squared_hinge(params, inputs, labels, class_weights, l2):
    """Crammer-Singer style multiclass squared hinge, each example weighted by its class."""
    scores = predict(params, inputs)
    true = jnp.take_along_axis(scores, labels[:, None], axis=1)
    margins = jnp.maximum(0.0, 1.0 + scores - true).at[jnp.arange(len(labels)), labels].set(0.0)
    per_example = jnp.sum(margins**2, axis=1)
    penalty = sum(jnp.sum(w**2) for w in jax.tree_util.tree_leaves(params))
    return jnp.mean(class_weights[labels] * per_example) + 0.5 * l2 * penalty


data = (jnp.asarray(x), jnp.asarray(y), jnp.array([1.0, 2.0, 1.0]), 1e-3)
print("loss at init:", float(weighted_squared_hinge(params, *data)))

# %% [markdown]
# ## Train it a little with optax, then probe the curvature

# %%
import optax  # noqa: E402

optimizer = optax.adam(1e-2)
state = optimizer.init(params)


@jax.jit
def step(params, state, *data):
    loss, grads = jax.value_and_grad(weighted_squared_hinge)(params, *data)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


for _ in range(300):
    params, state, loss = step(params, state, *data)
print("loss after 300 Adam steps:", float(loss))

eig = hessian_eigenvalues(
    weighted_squared_hinge,
    params,
    *data,
    key=jax.random.key(1),
    lanczos_steps=30,
    top_k=3,
    bottom_k=2,
)
trace = hessian_trace(weighted_squared_hinge, params, *data, key=jax.random.key(2), samples=200)
print("top eigenvalues   ", np.asarray(eig.top))
print("bottom eigenvalues", np.asarray(eig.bottom))
print(f"trace {float(trace.estimate):.3f} ± {float(trace.sem):.3f} (Hutchinson, 200 probes)")

# %% [markdown]
# ## Checked against the dense Hessian
#
# With 51 parameters the full Hessian is small: `jax.hessian` plus `eigh` is the ground truth
# the Lanczos values must match.

# %%
flat, unravel = ravel_pytree(params)
dense = jax.jit(jax.hessian(lambda v: weighted_squared_hinge(unravel(v), *data)))(flat)
exact = np.linalg.eigvalsh(np.asarray(dense))
print("dense top 3   ", exact[::-1][:3])
print("dense bottom 2", exact[:2])
print("dense trace   ", exact.sum())
np.testing.assert_allclose(np.asarray(eig.top), exact[::-1][:3], rtol=1e-6, atol=1e-8)
np.testing.assert_allclose(np.asarray(eig.bottom), exact[:2], rtol=1e-6, atol=1e-8)
assert abs(float(trace.estimate) - exact.sum()) < 4 * float(trace.sem) + 1e-9

# %% [markdown]
# ## The spectral density
#
# SLQ gives nodes and weights whose weights sum to 1; smoothing them with a Gaussian gives a
# density to compare with the histogram of the exact eigenvalues.

# %%
slq = spectral_density(
    weighted_squared_hinge, params, *data, key=jax.random.key(3), lanczos_steps=40, samples=8
)
grid = np.linspace(exact.min() - 0.5, exact.max() + 0.5, 600)
density = np.asarray(slq.density(jnp.asarray(grid), sigma=0.1))
figure, ax = plt.subplots(figsize=(7, 3))
ax.hist(exact, bins=60, density=True, alpha=0.4, label="dense eigvalsh")
ax.plot(grid, density, label="SLQ, 8 probes × 40 steps")
ax.set_yscale("log")
ax.set_ylim(density.max() * 1e-4, density.max() * 3)
ax.set_xlabel("Hessian eigenvalue")
ax.set_ylabel("density")
ax.legend()
figure.tight_layout()
assert abs(float(np.asarray(slq.weights).sum()) - 1.0) < 1e-6
