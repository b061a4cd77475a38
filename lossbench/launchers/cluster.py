"""Hydra launchers for clusters: submitit's SLURM and local launchers, with lossbench's resume.

`hydra/launcher=slurm` (or `slurm_local`, the same path on this machine) selects these; they
need the `slurm` extra (`pip install "lossbench[slurm]"`, which brings hydra-submitit-launcher).
Their `env` key sets environment variables in the job's process before JAX starts there
(`XLA_PYTHON_CLIENT_PREALLOCATE=false`: JAX would take 75% of the GPU's memory at once).

A job that SLURM preempts or is about to time out gets a signal: SIGTERM (preemption) or
SIGUSR2 (submitit's `--signal=USR2@signal_delay_s` before the time limit). Either one makes
the run stop at its next chunk boundary, checkpoint and record `interrupted` (lossbench's
`StopOnSignals`); the job is then requeued, and when the requeued job starts in the same job
directory and finds an unfinished run there, it runs with `trainer.resume=true`. A job that
died without a word (kill -9, a lost node) resumes the same way from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, open_dict

from lossbench.stopping import EXIT_CODES

SUMMARY_FILE = "summary.json"  # lossbench.results' names; importing it would load numpy
CHECKPOINT_DIR = "checkpoint"  # before the job's thread limits are set
FINISHED = ("completed", "diverged", "failed")
RESUME = "trainer.resume=true"


def latest_checkpoint(run_dir: Path) -> int | None:
    """The last checkpointed step in `run_dir` (orbax keeps one folder per step), or None."""
    folder = run_dir / CHECKPOINT_DIR
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=None)


def should_resume(run_dir: Path) -> bool:
    """True when `run_dir` holds a run that did not finish and has a checkpoint to go on from
    (interrupted, or still `running` because its process died)."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return False
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return False
    return status not in FINISHED and latest_checkpoint(run_dir) is not None


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text()).get("status")
    except (OSError, ValueError):
        return None


class Resuming:
    """Mixed into submitit's launchers (hydra_plugins/lossbench_launchers/slurm.py): resume
    an unfinished run found in the job directory, turn SIGUSR2 into lossbench's graceful
    stop, and requeue a job that stopped on a signal."""

    def __init__(self, env: dict | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}

    def _job_dir(self, overrides: list[str], job_dir_key: str, job_num: int) -> Path:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = job_num
        HydraConfig.instance().set_config(config)
        sweep_dir = str(OmegaConf.select(config, job_dir_key))
        return Path(sweep_dir, str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> Any:
        os.environ.update(self.env)
        Singleton.set_state(singleton_state)
        setup_globals()
        overrides = [o for o in sweep_overrides if o != RESUME]
        job_dir = self._job_dir(overrides, job_dir_key, job_num)
        if should_resume(job_dir):
            overrides.append(RESUME)
        # submitit's own SIGUSR2 handler would exit mid-chunk: stop at the chunk boundary
        previous = signal.signal(signal.SIGUSR2, _stop_gracefully)
        try:
            return super().__call__(overrides, job_dir_key, job_num, job_id, singleton_state)
        except SystemExit as exc:
            if exc.code in EXIT_CODES.values() and _status(job_dir) == "interrupted":
                self._requeue(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            raise
        finally:
            signal.signal(signal.SIGUSR2, previous)

    def _requeue(self, *args: Any) -> None:
        """Put this job back in the queue (submitit's checkpoint-and-requeue, at a clean point);
        the requeued job resumes from the checkpoint the run just wrote."""
        import submitit
        from submitit.core import job_environment

        env = submitit.JobEnvironment()
        paths = env.paths
        delayed = submitit.helpers.DelayedSubmission.load(paths.submitted_pickle)
        # SIGUSR2 comes before the time limit: each such requeue spends one of max_num_timeout
        countdown = delayed._timeout_countdown - int(_TIME_LIMIT_SIGNALS[0] > 0)
        if countdown < 0:
            return
        job_environment._checkpoint(delayed, paths.submitted_pickle, countdown)
        env._requeue(countdown)


_TIME_LIMIT_SIGNALS = [0]  # SIGUSR2s this process received


def _stop_gracefully(signum, frame) -> None:
    """SIGUSR2 (the time limit is near): ask the run to stop, as SIGTERM does."""
    _TIME_LIMIT_SIGNALS[0] += 1
    os.kill(os.getpid(), signal.SIGTERM)
