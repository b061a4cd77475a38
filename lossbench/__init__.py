"""lossbench: experiments on optimization pathologies in JAX.

The public API (imported lazily, so `import lossbench.losses` stays free of Hydra):

    cfg = lossbench.compose("model=deep_linear", "init=normal", "init.scale=1e-3")
    summary = lossbench.run(cfg, "outputs/deep_linear")
    frame = lossbench.load_run("outputs/deep_linear")      # or load_sweep("multirun/...")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "compose": "lossbench.api",
    "run": "lossbench.runner",
    "load_run": "lossbench.analysis",
    "load_sweep": "lossbench.analysis",
    "ConfigError": "lossbench.errors",
    "Dataset": "lossbench.data",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'lossbench' has no attribute {name!r}")
