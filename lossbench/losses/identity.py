"""`loss=none`: the model's output is the objective (analytic surfaces, with `data=none`)."""

from __future__ import annotations

from lossbench.losses.base import declare


def _none(value, targets):
    """The model's output itself."""
    return value


NONE = declare(
    "none",
    _none,
    purpose="surface",
    takes="value",
    convex=False,
    differentiable=False,
    twice_differentiable=False,
    bounded=False,
    min_zero=False,
    robust=False,
    source="lossbench",
    notes="no loss: the model's output is the objective (analytic surfaces); its properties "
    "are the surface's",
)
