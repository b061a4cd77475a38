"""Compile once per machine: JAX's persistent compilation cache under the user's cache dir.

A second run of a same-shaped config (or a notebook's second session) loads the compiled
programs from disk instead of compiling them again. On by default for the command line;
`LOSSBENCH_NO_CACHE=1` turns it off. The cache lives in `$LOSSBENCH_CACHE_DIR`, else
`$XDG_CACHE_HOME/lossbench/jax`, else `~/.cache/lossbench/jax`; deleting it is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

NO_CACHE_ENV = "LOSSBENCH_NO_CACHE"
CACHE_DIR_ENV = "LOSSBENCH_CACHE_DIR"
# Programs that compile faster than this are not worth a disk round trip (JAX's default is
# 1 s, which skips most of a small run's programs: its chunk, probe and init each compile in
# 0.1-1 s on CPU).
MIN_COMPILE_SECONDS = 0.05


def cache_dir() -> Path:
    """Where the cache lives (see the module docstring)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lossbench" / "jax"


def cache_disabled() -> bool:
    """True when `LOSSBENCH_NO_CACHE` is set to anything but "", "0" or "false"."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in ("", "0", "false")


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its directory, or None when
    `LOSSBENCH_NO_CACHE` is set or the directory cannot be created (then nothing changes)."""
    if cache_disabled():
        return None
    directory = Path(path) if path is not None else cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def cache_by_default() -> None:
    """The cache as the command line has it, for the library's compiled functions (called by
    `lossbench.curvature.operators.compiled` at its first call, not at import): nothing when
    the user chose a directory of their own (`jax_compilation_cache_dir`) or none
    (`LOSSBENCH_NO_CACHE`), or once it has run."""
    global _defaulted
    if _defaulted:
        return
    _defaulted = True
    import jax

    if jax.config.jax_compilation_cache_dir is None and enable_compilation_cache():
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()  # takes effect even if JAX compiled before


_defaulted = False  # cache_by_default has run in this process

__all__ = ["cache_by_default", "cache_dir", "enable_compilation_cache"]
