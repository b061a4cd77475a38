"""Optimizers that escape saddle points, registered as `optimizer=` options for any model.

    pgd                 perturbed gradient descent (Jin et al., 2017)
    noisy_gd            gradient descent on annealed noisy gradients (Neelakantan et al., 2015)
    sam                 sharpness-aware minimisation (Foret et al., 2021), optax.contrib.sam
    saddle_free_newton  saddle-free Newton in a Krylov subspace (Dauphin et al., 2014)

Each is an `optax.GradientTransformationExtraArgs` built from the `optimizer` config and the
learning-rate schedule. The training step passes three extra arguments (`lossbench.train`):
`key` (a fresh PRNG key per step and seed: the only source of randomness here, so vmapped seeds
draw different noise), `value_fn(params) -> loss on the current batch` (for Hessian-vector
products) and `grad_fn(params, i) -> its gradient` (optax's SAM convention). Nothing here uses
Python control flow on traced values; where a branch depends on the state it is a `jnp.where`
(under the seed `vmap` a `lax.cond` would run both branches anyway).

Config fields (besides the shared lr, schedule, clip_norm, weight_decay):
    pgd                 radius, g_thres, t_thres
    noisy_gd            momentum, nesterov, noise (eta), noise_decay (gamma)
    sam                 momentum, nesterov, radius (rho)
    saddle_free_newton  rank (k), damping (delta)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lossbench.curvature.lanczos import lanczos, ritz_values_and_vectors
from lossbench.errors import ConfigError, is_traced
from lossbench.optimizers.base import OPTIMIZERS, momentum_or_none

# ---------------------------------------------------------------------------------------------
# pgd


class PerturbedGDState(NamedTuple):
    count: jax.Array  # steps taken (indexes the schedule)
    since_perturbation: jax.Array  # steps since the last perturbation, capped at t_thres
    perturbations: jax.Array  # perturbations so far
    anchor_loss: jax.Array = jnp.nan  # loss where the last perturbation was made
    stopped: jax.Array = False  # Jin et al.'s termination: no more perturbations


def uniform_ball(key: jax.Array, like: Any, radius: float) -> Any:
    """A point drawn uniformly from the ball of `radius` in the space of pytrees like `like`.

    Direction: a normalised Gaussian; distance: `radius * U^(1/d)` for d coordinates.
    """
    flat, unravel = ravel_pytree(like)
    k_direction, k_radius = jax.random.split(key)
    direction = jax.random.normal(k_direction, flat.shape, flat.dtype)
    direction = direction / jnp.linalg.norm(direction)
    distance = radius * jax.random.uniform(k_radius, (), flat.dtype) ** (1.0 / flat.size)
    return unravel(distance * direction)


def perturbed_gd(
    learning_rate: optax.ScalarOrSchedule, radius: float, g_thres: float, t_thres: int
) -> optax.GradientTransformationExtraArgs:
    """Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade & Jordan, 2017, Algorithm 2).

    With step t, gradient g_t and `since` the steps since the last perturbation (t_thres at
    the start, so the first step may perturb):

        perturb_t  = ‖g_t‖ <= g_thres  and  since_t >= t_thres
        x_{t+1}    = x_t - eta_t g_t + [perturb_t] xi_t,   xi_t ~ Uniform(ball(0, radius))

    so perturbations come at most once per t_thres steps, and never while ‖g_t‖ > g_thres.
    xi_t is drawn from the step's `key`. Termination (the paper's): t_thres steps after a
    perturbation made at loss f~, if f(x_t) - f~ > -f_thres the perturbation bought no
    sufficient decrease, x~ was a second-order stationary point, and PGD stops perturbing for
    good (the paper returns x~; training goes on as gradient descent, which stays there).
    f_thres = g_thres * radius, the decrease a gradient of size g_thres buys over one
    perturbation radius (the paper sets it from eps, rho and ell, which lossbench does not
    know). The loss comes from the `value_fn` extra argument, evaluated only at the
    perturbing and the checking steps (a `lax.cond`); without `value_fn` there is no
    termination. One deliberate difference from the paper: the gradient of a perturbing step
    is the one at x_t, not at x_t + xi_t (at most eta * L * radius apart, one step's lag; it
    saves a second gradient every step, since under the seed vmap a conditional gradient
    would be computed at every step).
    """
    schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    f_thres = g_thres * radius

    def init(params):
        del params
        zero = jnp.zeros((), jnp.int32)
        nan = jnp.asarray(jnp.nan, jnp.float32)
        return PerturbedGDState(zero, jnp.asarray(t_thres, jnp.int32), zero, nan, jnp.bool_(False))

    def update(updates, state, params=None, *, key=None, value_fn=None, **extra_args):
        del extra_args
        if key is None:
            raise ValueError("pgd needs the per-step PRNG key: tx.update(..., key=key)")
        lr = schedule(state.count)
        ready = (optax.global_norm(updates) <= g_thres) & (state.since_perturbation >= t_thres)
        stopped = state.stopped
        anchor = state.anchor_loss
        if value_fn is not None and params is not None:
            check = ~stopped & (state.since_perturbation == t_thres) & jnp.isfinite(anchor)
            need = check | (ready & ~stopped)
            loss = jax.lax.cond(
                need,
                lambda p: jnp.asarray(value_fn(p), jnp.float32),
                lambda p: jnp.asarray(jnp.nan, jnp.float32),
                params,
            )
            stopped = stopped | (check & (loss - anchor > -f_thres))
            anchor = jnp.where(ready & ~stopped, loss, jnp.where(check, jnp.nan, anchor))
        perturb = ready & ~stopped
        xi = uniform_ball(key, updates, radius)
        new_updates = jax.tree_util.tree_map(
            lambda g, x: (-lr * g + jnp.where(perturb, x, 0)).astype(g.dtype), updates, xi
        )
        since = jnp.where(perturb, 1, jnp.minimum(state.since_perturbation + 1, t_thres))
        return new_updates, PerturbedGDState(
            optax.safe_increment(state.count),
            since.astype(jnp.int32),
            state.perturbations + perturb.astype(jnp.int32),
            anchor,
            stopped,
        )

    return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# noisy_gd


class AddKeyedNoiseState(NamedTuple):
    count: jax.Array


def add_keyed_noise(eta: float, gamma: float) -> optax.GradientTransformationExtraArgs:
    """`optax.add_noise` with the key passed per step instead of held in the state.

    g_t -> g_t + sqrt(eta / (1 + t)^gamma) * N(0, I), t = 0, 1, ... (Neelakantan et al., 2015):
    the same schedule as `optax.add_noise`, whose key is fixed at construction; a state key
    initialised from a constant would give every vmapped seed the same noise.
    """

    def init(params):
        del params
        return AddKeyedNoiseState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, *, key=None, **extra_args):
        del params, extra_args
        if key is None:
            raise ValueError("noisy_gd needs the per-step PRNG key: tx.update(..., key=key)")
        count = optax.safe_increment(state.count)
        std = jnp.sqrt(eta / count.astype(jnp.float32) ** gamma)
        noise = optax.tree.random_like(key, target_tree=updates, sampler=jax.random.normal)
        return optax.tree.add_scale(updates, std, noise), AddKeyedNoiseState(count)

    return optax.GradientTransformationExtraArgs(init, update)


def noisy_gd(
    learning_rate: optax.ScalarOrSchedule,
    eta: float,
    gamma: float,
    momentum: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Noisy gradient descent: x_{t+1} = x_t - lr_t (g_t + sigma_t z_t), z_t ~ N(0, I),
    sigma_t^2 = eta / (1 + t)^gamma (Neelakantan et al., 2015; `optax.noisy_sgd`), optionally
    with heavy-ball / Nesterov momentum on the noisy gradient. Noise helps gradient descent off
    strict saddles (Ge, Huang, Jin & Yuan, 2015)."""
    return optax.chain(
        add_keyed_noise(eta, gamma),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )


# ---------------------------------------------------------------------------------------------
# sam


def normalize(eps: float = 1e-12) -> optax.GradientTransformation:
    """g -> g / (‖g‖ + eps): `optax.contrib.normalize` without the NaN at g = 0 (the eps of
    Foret et al.'s reference code), so SAM at an exact critical point is a plain step."""

    def update(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        return jax.tree_util.tree_map(lambda g: g / (norm + eps), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sam(outer: optax.GradientTransformation, rho: float) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimisation (Foret, Kleiner, Mobahi & Neyshabur, 2021), one ascent step:

        eps_t = rho g_t / (‖g_t‖ + 1e-12),   g_t^SAM = grad L_B(x_t + eps_t),
        x_{t+1} = x_t + outer(g_t^SAM)

    with the same minibatch B for both gradients. `optax.contrib.sam` in opaque mode (the whole
    two-gradient step happens inside one `update`; `grad_fn(params, i)` gives the second
    gradient); `outer` is e.g. `optax.sgd(lr, momentum)`.
    """
    adversarial = optax.chain(normalize(), optax.sgd(rho))
    inner = optax.contrib.sam(outer, adversarial, sync_period=2, opaque_mode=True)

    def update(updates, state, params=None, *, grad_fn=None, **extra_args):
        del extra_args  # optax's SAM takes grad_fn only; the loop also passes key, value_fn
        if grad_fn is None:
            raise ValueError("sam needs grad_fn: tx.update(..., grad_fn=lambda p, i: grads)")
        return inner.update(updates, state, params, grad_fn=grad_fn)

    return optax.GradientTransformationExtraArgs(inner.init, update)


# ---------------------------------------------------------------------------------------------
# saddle_free_newton


class SaddleFreeNewtonState(NamedTuple):
    count: jax.Array


def saddle_free_newton(
    learning_rate: optax.ScalarOrSchedule,
    rank: int,
    damping: float,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Saddle-free Newton in the Krylov subspace of the gradient (Dauphin et al., 2014).

    With g the incoming gradient (plus `weight_decay * x`), H the Hessian of
    `value_fn` at x (plus `weight_decay * I`) and k = min(rank, number of parameters):
    k Lanczos steps with full reorthogonalisation from g give an orthonormal basis Q (k x n)
    of the Krylov space span{g, Hg, ..., H^(k-1) g} and T = Q H Qᵀ = U diag(theta) Uᵀ. The step
    is

        x_{t+1} = x_t - lr_t [ V diag(1 / (|theta| + damping)) Vᵀ g  +  (I - QᵀQ) g ],  V = QᵀU

    i.e. |H|^-1 g within the subspace, with |H| the matrix of absolute eigenvalues, damped: a
    Newton step along positive curvature and a step *down* (not up, as Newton's would be)
    along negative curvature. Outside the subspace the step is a plain gradient step; since
    the Krylov space is built from g itself, that part is zero up to rounding whenever the
    space is not empty. Dauphin et al. optimise within a Krylov subspace of the Hessian in the
    same spirit (they choose its start and a step size by line search; here both are fixed:
    start g, step lr_t). Costs k Hessian-vector products (forward-over-reverse) per step.

    At a point where g = 0 exactly the Krylov space is empty (Lanczos breaks down at once):
    the step is zero, not NaN, so SFN, like gradient descent, stays at an exact saddle. The
    Lanczos breakdown handling (`lossbench.curvature.lanczos`) also covers g in an invariant
    subspace of fewer than k dimensions.
    """
    schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)

    def init(params):
        del params
        return SaddleFreeNewtonState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None, *, value_fn: Callable | None = None, **extra_args):
        del extra_args
        if value_fn is None or params is None:
            raise ValueError(
                "saddle_free_newton needs params and the loss: tx.update(g, s, params, "
                "value_fn=lambda p: loss(p, batch))"
            )
        flat_params, unravel_params = ravel_pytree(params)
        g, unravel = ravel_pytree(updates)
        g = g + weight_decay * flat_params.astype(g.dtype)
        _, hvp = jax.linearize(jax.grad(lambda x: value_fn(unravel_params(x))), flat_params)

        def matvec(v):
            return hvp(v.astype(flat_params.dtype)).astype(g.dtype) + weight_decay * v

        steps = max(1, min(int(rank), g.size))
        decomposition = lanczos(matvec, g, steps)
        theta, coefficients, first_valid = ritz_values_and_vectors(decomposition)
        valid = jnp.arange(steps) >= first_valid
        vectors = coefficients.T @ decomposition.basis  # (k, n): Ritz vectors, 0 where invalid
        inverse = jnp.where(valid, 1.0 / (jnp.abs(theta) + damping), 0.0)
        inside = vectors.T @ (inverse * (vectors @ g))
        basis = decomposition.basis
        outside = g - basis.T @ (basis @ g)
        step = -schedule(state.count) * (inside + outside)
        return unravel(step), SaddleFreeNewtonState(optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# options: the schedule and the option's fields -> transform, with the checks a type cannot make
#
# pgd and noisy_gd step by lr times a gradient: the 2/lr edge of stability applies. SAM's
# stability threshold depends on rho and on the gradient norm (Long & Bartlett, 2024), SFN's
# step is curvature-scaled: neither gets an edge-of-stability threshold (NaN).


def _require(ok, key: str, value, allowed: str) -> None:
    if not is_traced(value) and not ok:
        raise ConfigError(f"optimizer.{key}", value, allowed)


@OPTIMIZERS.register("pgd", defaults={"lr": 0.1}, edge_of_stability=True)
def _pgd(learning_rate, radius: float = 0.01, g_thres: float = 1e-3, t_thres: int = 10):
    """Perturbed gradient descent (Jin et al. 2017): gradient descent, plus a kick drawn
    uniformly from the ball of `radius` when ||g|| <= g_thres, at most once per t_thres steps."""
    _require(radius > 0, "radius", radius, "a number > 0 (perturbation ball radius)")
    _require(g_thres >= 0, "g_thres", g_thres, "a number >= 0")
    _require(t_thres >= 1, "t_thres", t_thres, "an integer >= 1")
    return perturbed_gd(learning_rate, radius, g_thres, int(t_thres))


@OPTIMIZERS.register("noisy_gd", defaults={"lr": 0.1}, edge_of_stability=True)
def _noisy_gd(
    learning_rate,
    noise: float = 0.01,
    noise_decay: float = 0.55,
    momentum: float = 0.0,
    nesterov: bool = False,
):
    """Noisy gradient descent: g + N(0, noise / (1 + t)^noise_decay) (Neelakantan et al. 2015).
    `noise` is the variance eta at step 0, not a standard deviation."""
    _require(noise >= 0, "noise", noise, "a number >= 0 (noise variance eta)")
    _require(noise_decay >= 0, "noise_decay", noise_decay, "a number >= 0 (gamma)")
    return noisy_gd(learning_rate, noise, noise_decay, momentum_or_none(momentum), nesterov)


@OPTIMIZERS.register("sam", defaults={"lr": 0.1})
def _sam(
    learning_rate,
    radius: float = 0.05,
    momentum: float = 0.9,
    nesterov: bool = False,
    clip_norm: float | None = None,
    weight_decay: float = 0.0,
):
    """Sharpness-aware minimisation (Foret et al. 2021): SGD on the gradient at
    x + radius * g / ||g|| (radius is SAM's rho), two gradients per step."""
    _require(radius > 0, "radius", radius, "a number > 0 (SAM rho)")
    # Clipping and decay are taken here: on the first gradient, SAM would normalise them away.
    # Apply them to the SAM gradient instead.
    outer = []
    if clip_norm is not None:
        outer.append(optax.clip_by_global_norm(clip_norm))
    if is_traced(weight_decay) or weight_decay:
        outer.append(optax.add_decayed_weights(weight_decay))
    outer.append(optax.sgd(learning_rate, momentum=momentum_or_none(momentum), nesterov=nesterov))
    return sam(optax.chain(*outer), radius)


@OPTIMIZERS.register("saddle_free_newton", defaults={"lr": 1.0})
def _saddle_free_newton(
    learning_rate, rank: int = 10, damping: float = 0.1, weight_decay: float = 0.0
):
    """Saddle-free Newton (Dauphin et al. 2014) in the rank-dimensional Krylov space of the
    gradient: step -lr * V diag(1 / (|theta| + damping)) V^T g, `rank` HVPs per step."""
    _require(rank >= 1, "rank", rank, "an integer >= 1 (Krylov dimension)")
    _require(damping > 0, "damping", damping, "a number > 0")
    return saddle_free_newton(learning_rate, int(rank), damping, weight_decay)


__all__ = [
    "AddKeyedNoiseState",
    "PerturbedGDState",
    "SaddleFreeNewtonState",
    "add_keyed_noise",
    "noisy_gd",
    "normalize",
    "perturbed_gd",
    "saddle_free_newton",
    "sam",
    "uniform_ball",
]
