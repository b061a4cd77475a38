"""Errors every layer may raise, free of Hydra (so `losses`, `curvature`, `pathology` stay light).

A `ConfigError` is a value of the right type that is not allowed; its message is one line,
`key=value is not allowed: what is`, and the command line turns it into exit code 2.
"""

from __future__ import annotations

from typing import Any

EXIT_BAD_CONFIG = 2  # the exit code of a bad config (README: Reliability)


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; the message is one line."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def is_traced(value: Any) -> bool:
    """True for a value a fused sweep traces (one compiled program for many values): its
    checks ran on each job's concrete config before the trace, and Python cannot branch on it."""
    import jax

    return isinstance(value, jax.core.Tracer)


__all__ = ["EXIT_BAD_CONFIG", "ConfigError", "is_traced"]
