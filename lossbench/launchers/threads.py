"""Parallel jobs on one machine without oversubscribed cores.

Each process's XLA (and OpenMP / BLAS) uses every core unless told otherwise, so `n` parallel
jobs on `c` cores run `n * c` threads. `thread_env(k)` is the environment that holds a job to
`k` threads; the `joblib_jax` launcher (hydra_plugins/lossbench_launchers/joblib_jax.py) sets
it for its worker processes (they inherit it when loky starts them, before JAX starts there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Only `--` flags: XLA's parser reads no flag after a bare token (the widely copied
# `intra_op_parallelism_threads=1` is one, not an XLA flag), so a bare one would silently
# drop the flags after it, a user's device count among them.
SINGLE_THREAD_XLA = ("--xla_cpu_multi_thread_eigen=false",)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads: int, environ: dict | None = None) -> dict[str, str]:
    """Environment variables that keep a process to `threads` CPU threads (XLA's own pool is
    single-threaded when `threads == 1`, the only count its flags can set). Flags the user
    set in `XLA_FLAGS` are kept; variables already set are left alone."""
    environ = os.environ if environ is None else environ
    env = {name: str(threads) for name in THREAD_VARS if name not in environ}
    if threads == 1:
        flags = environ.get("XLA_FLAGS", "").split()
        names = {f.split("=")[0] for f in flags}
        flags += [f for f in SINGLE_THREAD_XLA if f.split("=")[0] not in names]
        env["XLA_FLAGS"] = " ".join(flags)
    return env


def threads_per_job(n_jobs: int, n_tasks: int, cores: int | None = None) -> int:
    """Cores divided among the jobs that run at once (joblib's `n_jobs=-1`: one per core)."""
    cores = cores or os.cpu_count() or 1
    running = cores if n_jobs < 0 else n_jobs
    return max(1, cores // max(1, min(running, n_tasks)))


@contextmanager
def limited_threads(threads: int) -> Iterator[dict[str, str]]:
    """Set `thread_env(threads)` in this process (processes started inside inherit it), and
    restore the environment afterwards."""
    env = thread_env(threads)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
