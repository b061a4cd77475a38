"""`hydra/launcher=joblib_jax`: joblib worker processes with XLA threads split between them."""

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _Joblib

from lossbench.launchers.threads import limited_threads, threads_per_job


class JoblibLauncher(_Joblib):
    """Hydra's joblib launcher, each worker held to its share of the cores
    (`threads_per_job`; default: cores // jobs that run at once)."""

    def __init__(self, threads_per_job: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads_per_job = threads_per_job

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        n_jobs = int(self.joblib.get("n_jobs") or -1)
        threads = self.threads_per_job or threads_per_job(n_jobs, len(job_overrides))
        with limited_threads(threads):
            return super().launch(job_overrides, initial_job_idx)
