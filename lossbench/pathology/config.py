"""Thresholds of the regime diagnosis (`detect.*`), Hydra-free, and their check.

Every threshold is a ratio of quantities measured at one probe (or over a few neighbouring
probes), so multiplying the loss by a constant (and, for gradient descent, dividing the
learning rate by it) changes no label. The rules themselves are in `lossbench.pathology`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossbench.errors import ConfigError


@dataclass
class DetectConfig:
    """Thresholds of the regime diagnosis; `lossbench.pathology`'s docstring has the rules.

    Notation, per probe: L the loss, g = ||g||, lambda_max / lambda_min the extreme probed
    eigenvalues, |lambda| = max(|lambda_max|, |lambda_min|), eta the step size (gradient
    descent family only), gap = L - floor, floor = min(0, lowest loss from this probe on).
    """

    name: str = "default"
    # stationary: s = g^2 / (2 |lambda| gap) <= grad_tol (one line search along -g can remove
    # at most a grad_tol share of what is left to lose)
    grad_tol: float = 1e-3
    # certain negative curvature: -lambda_min / |lambda| > neg_tol (Ritz values never lie
    # below the true lambda_min; the tolerance only covers float32 rounding)
    neg_tol: float = 1e-4
    # strict saddle: the negative curvature dominates the gradient,
    # mu = -lambda_min gap / g^2 >= escape_ratio (escape rate along it >= 10x descent rate)
    escape_ratio: float = 10.0
    # flat: eta |lambda| <= flat_tol (gradient descent family; else |lambda| <= flat_tol times
    # the run's largest |lambda|, the only reference an adaptive optimizer leaves)
    flat_tol: float = 1e-3
    # basin of a minimum: s <= basin_tol (a convex quadratic bowl has s <= 1; the slack
    # covers higher-order terms) and mu <= basin_escape (negative curvature, if any, acts at
    # most 1% as fast as the gradient)
    basin_tol: float = 2.0
    basin_escape: float = 0.01
    window: int = 5  # probes per window of the time-local tests (centred on the probe)
    # oscillation: in the window the loss goes up by >= oscillation_rise of what it goes down
    # (sign changes of the loss differences) ...
    oscillation_rise: float = 0.1
    # ... or (gradient descent family) the loss falls by <= oscillation_efficiency of the
    # first-order prediction sum(eta g^2): a failed Armijo (1966) sufficient-decrease test
    oscillation_efficiency: float = 0.05
    # plateau: the loss falls by <= plateau_rate of its gap per step over the window
    plateau_rate: float = 1e-4
    # edge of stability: lambda_max >= (1 - eos_margin) * eos_threshold (Cohen et al. 2021)
    eos_margin: float = 0.1
    # divergence: a non-finite value or L - L0 > blowup |L0| (absorbing), or L > L0 + rise |L0|
    # (L0 the first loss: the run is worse than where it started)
    rise: float = 1.0
    blowup: float = 1e6
    # relative resolution of the loss (float32 sums): gap >= resolution * |L|
    resolution: float = 1e-6


_DEFAULTS = DetectConfig()
FIELDS = tuple(f.name for f in dataclasses.fields(DetectConfig))

# key: (lowest allowed, whether the lowest is allowed, highest, whether it is allowed, words)
_RANGES = {
    "grad_tol": (0.0, False, math.inf, False, "a number > 0"),
    "neg_tol": (0.0, True, 1.0, False, "a number in [0, 1)"),
    "escape_ratio": (0.0, True, math.inf, False, "a number >= 0"),
    "flat_tol": (0.0, True, math.inf, False, "a number >= 0"),
    "basin_tol": (0.0, True, math.inf, False, "a number >= 0"),
    "basin_escape": (0.0, True, math.inf, False, "a number >= 0"),
    "window": (1, True, math.inf, False, "an integer >= 1"),
    "oscillation_rise": (0.0, False, math.inf, False, "a number > 0"),
    "oscillation_efficiency": (-math.inf, False, 1.0, False, "a number < 1"),
    "plateau_rate": (0.0, True, math.inf, False, "a number >= 0"),
    "eos_margin": (0.0, True, 1.0, False, "a number in [0, 1)"),
    "rise": (0.0, False, math.inf, False, "a number > 0"),
    "blowup": (0.0, False, math.inf, False, "a number > 0"),
    "resolution": (0.0, True, 1.0, False, "a number in [0, 1)"),
}


def param(cfg: Any, name: str) -> Any:
    """`cfg.name` (attribute or key), or the `DetectConfig` default when `cfg` lacks it."""
    default = getattr(_DEFAULTS, name)
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def check_detect(cfg: Any) -> None:
    """Raise `ConfigError` (key `detect.<name>`, the value, what is allowed) for a bad threshold.

    `cfg` is anything with `DetectConfig`'s attributes or keys; missing ones take defaults.
    """
    for key, (low, low_ok, high, high_ok, words) in _RANGES.items():
        value = param(cfg, key)
        if key == "window" and (isinstance(value, bool) or not float(value).is_integer()):
            raise ConfigError(f"detect.{key}", value, words)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"detect.{key}", value, words)
        above = value > low or (low_ok and value == low)
        below = value < high or (high_ok and value == high)
        if math.isnan(value) or not (above and below):
            raise ConfigError(f"detect.{key}", value, words)


__all__ = ["FIELDS", "DetectConfig", "check_detect", "param"]
