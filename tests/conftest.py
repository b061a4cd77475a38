"""Shared test helpers: compose configs the way the CLI does, run them in-process."""

from __future__ import annotations

import io
import logging.config
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

# XLA flags for the test processes, set before JAX starts its backend (the subprocesses the
# tests start inherit them). Compiling is most of the suite's time: the older CPU emitters
# compile a test-sized program in ~0.4x the CPU time of the fusion emitters (measured on the
# chunks of a small MLP, an SFN and a CNN run) and run it about as fast.
FAST_COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def _with_xla_flags(flags: tuple[str, ...]) -> str:
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def _xla_accepts(flags: tuple[str, ...]) -> bool:
    """XLA aborts a process on a flag it does not know (older jaxlib): try in a subprocess."""
    env = {**os.environ, "XLA_FLAGS": _with_xla_flags(flags)}
    code = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return done.returncode == 0


if "PYTEST_XDIST_WORKER" not in os.environ and _xla_accepts(FAST_COMPILE_FLAGS):
    os.environ["XLA_FLAGS"] = _with_xla_flags(FAST_COMPILE_FLAGS)  # xdist workers inherit it
# What `_fast_compiles` below does in this process, for the `lossbench` subprocesses too.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Under pytest-xdist every worker's XLA would use every core: `-n 2` on 2 cores ran 4 busy
# threads. One thread each (the flags `lossbench.launchers.threads` gives parallel jobs).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    from lossbench.launchers.threads import thread_env

    os.environ.update(thread_env(1))

import lossbench  # noqa: E402
from lossbench.compile_cache import CACHE_DIR_ENV, enable_compilation_cache  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# One persistent compilation cache for the session, shared by the xdist workers and the
# `lossbench` subprocesses (they inherit the variable): a program the suite compiled once, in
# any process, is loaded from disk after that. Set by the first process (the controller,
# before it starts the workers) in a fresh temporary directory, so no run depends on a cache
# left by an earlier one and ~/.cache is not written; set LOSSBENCH_CACHE_DIR to keep one
# between runs, LOSSBENCH_NO_CACHE=1 for none.
_OWN_CACHE = None
if not os.environ.get(CACHE_DIR_ENV):
    _OWN_CACHE = tempfile.mkdtemp(prefix="lossbench-test-jax-cache-")
    os.environ[CACHE_DIR_ENV] = _OWN_CACHE
enable_compilation_cache()


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


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
    """Run the `lossbench` console script in a subprocess: for what only a process shows
    (signals, launchers, tracebacks, the installed script). Else use `cli_in_process`."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    exe = Path(sys.executable).parent / "lossbench"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600
    )


@dataclass
class Completed:
    """What `cli_in_process` returns: the fields of `subprocess.CompletedProcess` tests read."""

    returncode: int
    stdout: str
    stderr: str


def cli_in_process(*args: str, cwd: Path | None = None, env: dict | None = None) -> Completed:
    """`lossbench ARGS` through `lossbench.cli.main` in this process: the exit code, stdout
    and stderr a subprocess would give, without starting Python, JAX and Hydra again (seconds
    a call on a loaded 2-core machine). The environment, working directory, `sys.argv` and the
    root logger's handlers are restored afterwards. Hydra's job logging (`dictConfig`) would
    first close every logging handler of the process, absl's among them, which closes the
    stream it holds (pytest's capture): here it leaves the existing handlers open."""
    from lossbench import cli as entry
    from lossbench import hydra_callbacks

    saved_env = {k: os.environ.get(k) for k in [*(env or {}), "HYDRA_FULL_ERROR"]}
    saved_argv, saved_cwd = sys.argv[:], os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_clear = logging.config._clearExistingHandlers
    # state one process keeps for its one invocation: the last task's failure, ended sweeps
    entry._Outcome.failure = None
    hydra_callbacks.SWEEPS.clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update(env or {})
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        logging.config._clearExistingHandlers = lambda: None
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                entry.main(list(args))
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # sys.exit("message"): Python prints it and exits 1
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        logging.config._clearExistingHandlers = saved_clear
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()  # the job's log file and console handlers
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Completed(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _fast_compiles():
    """Most XLA optimizations off: test problems are tiny, so compiling is nearly all their
    cost. Benchmarks (benchmarks/) keep the optimizations on."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort, so the same order on every xdist worker): with
    `-n 2` the long ones start at once and the short ones fill in beside them, instead of one
    long test running alone at the end."""
    slow_groups = {group for item in items if _is_slow(item) for group in _groups(item)}
    # a test shares its xdist_group's place (one fixture build), slow if any of them is
    items.sort(key=lambda item: not (_is_slow(item) or slow_groups & _groups(item)))
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        _suffix_xdist_groups(items)


def _is_slow(item) -> bool:
    return item.get_closest_marker("slow") is not None


def _groups(item) -> set[str]:
    return {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }


def _suffix_xdist_groups(items) -> None:
    """`--dist loadgroup` sends the tests of one `xdist_group` to one worker by reading a
    `@group` suffix that pytest-xdist (3.8) writes into `item._nodeid`; pytest 9.2 keeps node
    ids structured in `item._id`, so the suffix was lost and the groups silently ignored:
    each worker built the shared module fixtures again (pytest-dev/pytest-xdist#1386). The
    suffix goes where pytest 9.2 reads it (as pytest-dev/pytest-xdist#1388 does); nothing
    changes where the id already has it or pytest has no structured ids."""
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: xdist's own suffix works
        return
    for item in items:
        names = sorted(_groups(item))
        suffix = f"@{'_'.join(dict.fromkeys(names))}"
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = coerce_node_id(item.nodeid + suffix)
