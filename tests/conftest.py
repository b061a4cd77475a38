"""Shared test helpers: compose configs the way the CLI does, run them in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import lossbench

REPO = Path(__file__).resolve().parent.parent

# Quiet, small defaults for in-process runs; tests add their own overrides after these.
FAST = ["trainer.progress=false", "trainer.save_params=false"]


@contextmanager
def hydra_session():
    """Yields `compose(overrides) -> typed config object` (`lossbench.compose`)."""
    yield lambda overrides: lossbench.compose(*overrides)


def compose_config(overrides: list[str]):
    """The typed config object the CLI would build from `overrides`."""
    return lossbench.compose(*overrides)


def run_overrides(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[dict, Path]:
    run_dir = tmp_path / name
    return lossbench.run(compose_config([*FAST, *overrides]), run_dir), run_dir


def cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the `lossbench` console script in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    exe = Path(sys.executable).parent / "lossbench"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600
    )


@pytest.fixture(autouse=True)
def _fast_compiles():
    """Most XLA optimizations off: test problems are tiny, so compiling is nearly all their
    cost. Benchmarks (benchmarks/) keep the optimizations on."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
