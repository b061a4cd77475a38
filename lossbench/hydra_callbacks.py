"""Hydra callbacks: claim the run (or sweep) directory before Hydra writes into it, and print
the table of a sweep's jobs when it ends. Configured under `hydra.callbacks` in config.yaml.

Hydra writes `.hydra/` and the job log into the output directory before the task starts,
so the check that a directory is new or empty (`lossbench.rundir`) runs here, first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench.errors import EXIT_BAD_CONFIG, ConfigError
from lossbench.rundir import Claim, claim_run_dir

CLAIMS: dict[Path, Claim] = {}  # run directory -> what claiming it did (run mode, this process)
SWEEPS: list[tuple[Path, bool]] = []  # (sweep dir, a job failed) of sweeps ended here


def fail(message: str, code: int = EXIT_BAD_CONFIG) -> None:
    """One line on stderr, then exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _trainer_flags(config: DictConfig) -> dict:
    return {
        "resume": bool(OmegaConf.select(config, "trainer.resume", default=False)),
        "overwrite": bool(OmegaConf.select(config, "trainer.overwrite", default=False)),
    }


class ClaimRunDir(Callback):
    """Refuse a run or sweep directory that holds files lossbench was not told to touch."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # so `${hydra:...}` in the dir resolves
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        try:
            CLAIMS[run_dir] = claim_run_dir(run_dir, **_trainer_flags(config))
        except ConfigError as exc:
            fail(str(exc))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        flags = _trainer_flags(config)
        if flags["resume"] and not sweep_dir.is_dir():
            fail(ConfigError("trainer.resume", True, f"an existing sweep ({sweep_dir})").args[0])
        try:
            if not flags["resume"]:
                claim_run_dir(sweep_dir, key="hydra.sweep.dir", overwrite=flags["overwrite"])
        except ConfigError as exc:
            fail(str(exc))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from lossbench.analysis import format_sweep_table, sweep_table

        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
        table = sweep_table(sweep_dir)
        SWEEPS.append((sweep_dir, bool((table["status"] == "failed").any())))
        print(format_sweep_table(table), file=sys.stderr)
        print(f"sweep dir: {sweep_dir}", file=sys.stderr)
