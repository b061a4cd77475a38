"""The in-loop probe of a run: its config fitted to the problem, and the batch it sees."""

from __future__ import annotations

import dataclasses

import numpy as np

from lossbench.errors import ConfigError
from lossbench.problem import Problem


def make_probe_fn(cfg, problem: Problem):
    """The in-loop probe for `cfg.probe`, or None when probes are off."""
    if cfg.probe.every == 0:
        return None
    from lossbench.curvature import make_probe

    # check_probe_config raises ConfigError itself
    return make_probe(cfg.probe, problem.loss, problem.predict, problem.loss_on_outputs)


LANCZOS_FLOOR = 2  # one Lanczos step is a Rayleigh quotient of a random vector, not a probe


def fit_probe(p, problem: Problem):
    """Check the probe keys that need the problem, and fit the Krylov sizes to it: a model
    with fewer parameters than `lanczos_steps` (a 2-D surface) is probed with as many steps
    as it has parameters, which is exact there; `top_k`, `bottom_k` follow."""
    n = problem.param_count
    floor = min(LANCZOS_FLOOR, n)
    if p.every == 0:
        return p
    if p.lanczos_steps < floor:
        raise ConfigError(
            "probe.lanczos_steps",
            p.lanczos_steps,
            f"at least {floor} (fewer Krylov steps give no eigenvalue estimate)",
        )
    for key in ("top_k", "bottom_k"):
        k = getattr(p, key)
        if not 0 <= k <= p.lanczos_steps:
            raise ConfigError(f"probe.{key}", k, f"in [0, probe.lanczos_steps={p.lanczos_steps}]")
    if p.top_k < 1:
        raise ConfigError("probe.top_k", p.top_k, "at least 1")
    if p.curvature == "ggn" and problem.loss_name == "none":
        raise ConfigError("probe.curvature", "ggn", "'hessian' on models that are their own loss")
    if p.batch_size is not None and not 0 < p.batch_size <= problem.data.n_train:
        raise ConfigError(
            "probe.batch_size", p.batch_size, f"null or in [1, {problem.data.n_train}]"
        )
    m = min(p.lanczos_steps, n)
    return dataclasses.replace(
        p,
        lanczos_steps=m,
        top_k=min(p.top_k, m),
        bottom_k=min(p.bottom_k, m),
        density_steps=min(p.density_steps, n),
    )


def probe_batch(cfg, problem: Problem) -> dict:
    """The whole training set, or a fixed subset drawn once from the run's seed."""
    train = problem.data.train
    size = cfg.probe.batch_size
    if size is None or not train:
        return train
    rng = np.random.default_rng(cfg.trainer.seed)
    idx = rng.choice(problem.data.n_train, size, replace=False)
    return {k: v[idx] for k, v in train.items()}
