"""Multi-task loss: a weighted sum of per-task losses over the heads of one model.

cfg.tasks names the task losses (e.g. ["cross_entropy", "mse"]) and cfg.weights their fixed
weights. Each task loss reads the head keyed by its `takes`:

    outputs = {"logits": (B, C), "values": (B, d)}     # one head per task
    targets = {"logits": (B,) int, "values": (B, d)}

so at most one task per head kind (logits, score, values). With cfg.learned_weights the task
weights are learned as in Kendall, Gal & Cipolla (2018): extra trainable parameters
`multitask_extra_params(cfg) = {"log_var": zeros(n_tasks)}`, s_i = log sigma_i^2, and

    loss = sum_i w_i (c_i exp(-s_i) L_i + s_i / 2),   c_i = 1/2 for regression, 1 otherwise,

the Gaussian / Boltzmann negative log-likelihood of their eqs. (7) and (10). Call it as
`loss(outputs, targets, cfg, extra)` with `extra` the trained `log_var` pytree.
"""

from __future__ import annotations

from dataclasses import replace

import jax.numpy as jnp

from lossbench.errors import ConfigError
from lossbench.losses.base import LOSSES, Loss, LossProperties, register

HEAD_KINDS = ("logits", "score", "values")


def multitask_heads(cfg) -> dict[str, str]:
    """The heads the model must output, {takes: task loss name}, in cfg.tasks order."""
    return _heads(cfg.tasks, cfg.weights)


def _heads(tasks, weights) -> dict[str, str]:
    tasks, weights = list(tasks), list(weights)
    if not tasks:
        raise ConfigError("loss.tasks", tasks, "at least one task loss")
    if len(weights) != len(tasks):
        raise ConfigError("loss.weights", weights, f"one weight per task in loss.tasks {tasks}")
    if any(w < 0 for w in weights):
        raise ConfigError("loss.weights", weights, "weights >= 0")
    allowed = sorted(
        n for n, loss in LOSSES.items() if loss.trainable and loss.properties.takes in HEAD_KINDS
    )
    heads: dict[str, str] = {}
    for name in tasks:
        if name not in allowed:
            raise ConfigError("loss.tasks", tasks, f"task losses among {allowed}")
        takes = LOSSES[name].properties.takes
        if takes in heads:
            raise ConfigError(
                "loss.tasks",
                tasks,
                f"at most one task per head kind {HEAD_KINDS}: "
                f"{heads[takes]} and {name} both take {takes}",
            )
        heads[takes] = name
    return heads


def multitask_extra_params(cfg) -> dict:
    """Extra trainable parameters: {"log_var": zeros(n_tasks)} when learned, else {}."""
    if not cfg.learned_weights:
        return {}
    return {"log_var": jnp.zeros(len(cfg.tasks))}


def _multitask(
    outputs,
    targets,
    tasks: tuple[str, ...] = ("cross_entropy", "mse"),
    weights: tuple[float, ...] = (1.0, 1.0),
    learned_weights: bool = False,
    *,
    extra,
):
    """Weighted sum of task losses (each at its default hyper-parameters); Kendall, Gal &
    Cipolla (2018) when learned_weights."""
    _heads(tasks, weights)
    total = 0.0
    for i, (name, w) in enumerate(zip(tasks, weights, strict=True)):
        task = LOSSES[name]
        takes = task.properties.takes
        value = task.fn(outputs[takes], targets[takes])
        if learned_weights:
            if not extra or "log_var" not in extra:
                raise ValueError("multitask with learned_weights needs extra={'log_var': ...}")
            s = extra["log_var"][i]
            c = 0.5 if takes == "values" else 1.0
            value = c * jnp.exp(-s) * value + 0.5 * s
        total = total + w * value
    return total


def multitask_properties(cfg) -> LossProperties:
    """Properties under this config: those all tasks share; learned weights break several."""
    props = [LOSSES[name].properties for name in multitask_heads(cfg).values()]
    every = {
        key: all(getattr(p, key) for p in props)
        for key in ("convex", "differentiable", "twice_differentiable", "bounded", "min_zero")
    }
    learned = bool(cfg.learned_weights)
    notes = "tasks " + " + ".join(cfg.tasks)
    if learned:
        every.update(convex=False, bounded=False, min_zero=False)
        notes += (
            "; learned weights: not jointly convex in (outputs, log_var), and unbounded "
            "below as a task loss -> 0 (s_i -> -inf)"
        )
    return replace(
        MULTITASK.properties,
        robust=all(p.robust for p in props),
        notes=notes,
        **every,
    )


MULTITASK = register(
    Loss(
        "loss",
        "multitask",
        _multitask,
        {"task": "multitask"},
        properties=LossProperties(
            purpose="multitask",
            takes="heads",
            convex=True,
            differentiable=True,
            twice_differentiable=True,
            bounded=False,
            min_zero=False,
            robust=False,
            source="lossbench",
            reference="Kendall, Gal & Cipolla (2018)",
            notes="declared for the default tasks cross_entropy + mse with fixed weights; "
            "properties_for(cfg) derives them for other tasks and learned weights",
        ),
        extra_params=multitask_extra_params,
        derive=lambda cfg: multitask_properties(cfg),
    )
)
