"""`hydra/launcher=fused`: the sweep's jobs that differ only in numbers and seeds run as one
compiled program (`lossbench.launchers.fused`), each into its own run directory."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def _collect(cfg: DictConfig):
    """The task of the first pass: the job's config and run directory (Hydra has written
    .hydra/ there); training happens once every job is known."""
    return cfg, Path(HydraConfig.get().runtime.output_dir)


class FusedLauncher(Launcher):
    """Compose every job (Hydra writes each job's directory as the basic launcher does),
    then train them fused; `max_batch` caps the rows (jobs x seeds) of one program."""

    def __init__(self, max_batch: int | None = None) -> None:
        self.max_batch = max_batch
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from lossbench.cli import _one_line, _record_failure, objective_value, typed_config
        from lossbench.errors import ConfigError
        from lossbench.launchers.fused import run_fused

        if self.max_batch is not None and not int(self.max_batch) >= 1:
            raise ConfigError("hydra.launcher.max_batch", self.max_batch, "null or an integer >= 1")
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=_collect,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        hydra_cfgs = [ret.return_value[0] for ret in returns]
        run_dirs = [ret.return_value[1] for ret in returns]
        configs: list = []
        for cfg in hydra_cfgs:
            try:
                configs.append(typed_config(cfg))
            except Exception as exc:  # an unknown key: refused like a bad value
                configs.append(exc)

        def failed(i: int, exc: BaseException) -> None:
            _record_failure(run_dirs[i], hydra_cfgs[i], exc)
            print(f"error: job {initial_job_idx + i}: {_one_line(exc)}", file=sys.stderr)

        refused = {i: c for i, c in enumerate(configs) if isinstance(c, BaseException)}
        for i, exc in refused.items():
            failed(i, exc)
        keep = [i for i in range(len(configs)) if i not in refused]
        results = run_fused(
            [configs[i] for i in keep],
            [run_dirs[i] for i in keep],
            max_batch=self.max_batch,
            on_failure=lambda k, exc: failed(keep[k], exc),
            log=lambda line: print(line, file=sys.stderr),
        )
        # what the task returns in a job of its own: the objective, NaN for a failed job (it
        # is in its run directory; the sweep goes on)
        for ret in returns:
            ret.return_value = float("nan")
        for k, result in zip(keep, results, strict=True):
            if isinstance(result, dict):
                returns[k].return_value = objective_value(result, configs[k].objective)
        return returns
