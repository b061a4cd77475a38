"""Shared test helpers: compose configs the way the CLI does, run them in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lossbench.cli import CONFIG_DIR
from lossbench.schema import register_configs

REPO = Path(__file__).resolve().parent.parent

# Quiet, small defaults for in-process runs; tests add their own overrides after these.
FAST = ["trainer.progress=false", "trainer.save_params=false"]


@contextmanager
def hydra_session():
    """Initialise Hydra once; yields `compose(overrides) -> typed config object`."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda overrides: OmegaConf.to_object(
            compose(config_name="config", overrides=list(overrides))
        )
    GlobalHydra.instance().clear()


def compose_config(overrides: list[str]):
    """The typed config object the CLI would build from `overrides`."""
    with hydra_session() as compose_one:
        return compose_one(overrides)


def run_overrides(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[dict, Path]:
    from lossbench.runner import run

    run_dir = tmp_path / name
    return run(compose_config([*FAST, *overrides]), run_dir), run_dir


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
