"""Compiled programs kept on disk, so that a second process skips tracing and lowering too.

JAX's persistent compilation cache (`lossbench.compile_cache`) finds a program by its lowered
module: a run that hits it still traces and lowers every program first, 1.3-1.7 s of a warm
command-line run's 4.1-4.7 s (benchmarks/first_call.md). Here the compiled executable itself
(`jax.experimental.serialize_executable`) is stored under a key of what builds it:

- the run's program key (`lossbench.programs.program_key`), its registered builders and
  `_target_`s named by module and qualified name instead of by object;
- the source of every module that comes from no installed distribution (lossbench itself,
  a user's plugins and the helpers they import, a script) and of each builder's module,
  and the versions of Python and of the packages that build programs;
- a digest of the run's data (a builder may compute constants from it);
- the backend, its devices, the CPU, `XLA_FLAGS` and JAX's flags;
- per program, its input signature: tree structure, shapes, dtypes, shardings, static args.

A miss compiles as before (through JAX's cache) and stores what XLA compiled. A program that
JAX's cache held cannot be stored as loaded from there (`compile_fresh`): the second time its
key misses, it is compiled anew and stored. The store is on for the command line's runs
(`enabled()`: a fresh process whose options all come from source files), where JAX's cache is
lossbench's own (`compile_cache.cache_dir()`), with JAX 0.10 on the CPU, the version and the
backend it is tested on; `LOSSBENCH_NO_CACHE=1` turns both off. It is off for
`lossbench.run` in a notebook or a script, where a builder can be redefined, closed over
other values or patched without its source changing (`lossbench.programs` tells those apart
within one process by object). Not seen: a plugin that reads a file other than the data, or
the environment, when it builds (its program is stored as first built: set
`LOSSBENCH_NO_CACHE=1`, or delete `<cache>/programs`, which is always safe). Loading unpickles
what this directory holds: the same trust as JAX's own cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import platform
import site
import sys
import sysconfig
import threading
import time
from pathlib import Path

import jax
import numpy as np

from lossbench.compile_cache import cache_dir, cache_disabled
from lossbench.results import publish, versions

STORE_NAME = "programs"  # the store's directory inside the cache directory
MAX_BYTES = 2 << 30  # the store's size at most: the least recently used entries go first
MAX_FILES = 4096  # and its number of entries
PARTIAL = ".*.tmp"  # a file being written (`results.publish`'s temporary name)
WANTED_SUFFIX = ".wanted"  # a program missed once, loaded from JAX's cache: compile it next time
TESTED_JAX = "0.10."  # the JAX versions the store is tested with; off with any other
# XLA's default, named: JAX's cache key includes the options it is given, so a program compiled
# with these is compiled, not loaded from that cache (`compile_fresh`)
FRESH_OPTIONS = {"xla_embed_ir_in_executable": False}
SUFFIX = ".program"
TRACES_SUFFIX = ".traces"  # a run key whose traced-input program traced (`known_to_trace`)
MAGIC = b"lossbench-program-1\n"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # XLA compiled, or JAX's cache
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # loaded from JAX's cache


@contextlib.contextmanager
def enabled():
    """The store on inside (the command line's runs; see the module docstring)."""
    global _enabled
    before, _enabled = _enabled, True
    try:
        yield
    finally:
        _enabled = before


_enabled = False  # inside `enabled()`


def store_dir() -> Path | None:
    """Where programs are stored, or None when the store is off (see the module docstring)."""
    if not _enabled or cache_disabled() or jax.default_backend() != "cpu":
        return None
    if not jax.__version__.startswith(TESTED_JAX):
        return None
    directory = cache_dir()
    if jax.config.jax_compilation_cache_dir != str(directory):
        return None
    return directory / STORE_NAME


def run_key(program_key: tuple, data) -> str | None:
    """The store's key of a run whose in-process key is `program_key` and whose data arrays are
    the leaves of `data`; None when a builder or target has no source file."""
    config, rows, traced, targets, builders, x64 = program_key
    named, modules = [], set()
    for label, obj in [*targets, *(((g, n), b) for g, n, b in builders)]:
        module = _importable(obj)
        if module is None:
            return None
        modules.add(module.__name__)
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        named.append((label, module.__name__, name))
    digest = hashlib.blake2b(digest_size=20)
    for part in (config, rows, traced, named, x64, _environment()):
        digest.update(repr(part).encode())
    for path in sorted(_source_files(modules)):
        digest.update(path.encode())
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            return None
    try:
        for leaf in jax.tree_util.tree_leaves(data):
            array = np.ascontiguousarray(leaf)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    except (TypeError, ValueError):  # a leaf that is no plain array (PRNG keys, objects)
        return None
    return digest.hexdigest()


def _importable(obj):
    """The module whose source defines a builder, None for one defined where no source file
    is (a notebook cell, `python -c`)."""
    obj = getattr(obj, "func", obj)  # a functools.partial: its function
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return module if getattr(module, "__file__", None) is not None else None


def _source_files(modules: set[str]) -> set[str]:
    """The source files a run's programs may depend on: lossbench's own, the named modules',
    and every loaded module's that no installed distribution or the standard library holds."""
    installed = tuple(_installed_prefixes())
    files = {str(path) for path in Path(__file__).resolve().parent.rglob("*.py")}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        local = file.endswith(".py") and not os.path.abspath(file).startswith(installed)
        if local or name in modules:  # a builder's module, whatever its file (bytecode too)
            files.add(os.path.abspath(file))
    return files


def _installed_prefixes() -> set[str]:
    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(site.getusersitepackages())
    paths = {p for p in paths if p}
    return {os.path.join(p, "") for p in paths | {os.path.realpath(p) for p in paths}}


def _environment() -> tuple:
    """What besides the code and config decides a compiled program: versions, backend,
    devices, CPU, XLA's and JAX's flags (not those of caching and logging)."""
    global _environment_cached
    if _environment_cached is None:
        machine = (platform.machine(), _cpu_flags())
        _environment_cached = (sys.version, versions(), np.__version__, *machine)
    devices = [(d.platform, d.device_kind, d.id) for d in jax.devices()]
    flags = sorted(
        (name, repr(value))
        for name, value in jax.config.values.items()
        if not any(word in name for word in ("cache", "log", "explain"))
    )
    backend = jax.devices()[0].client
    return (
        _environment_cached,
        devices,
        backend.platform_version,
        os.environ.get("XLA_FLAGS"),
        flags,
    )


_environment_cached = None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


class StoredProgram:
    """A `jax.jit` function whose compiled programs are loaded from the store when there and
    stored when compiled. Calls under a trace (`eval_shape`, another jit) and with keyword
    arguments go to the jitted function, as do its attributes (`trace`, `lower`)."""

    def __init__(self, jitted, directory: Path, key: str, name: str, static_argnums=()):
        self._jitted, self._directory, self._key, self._name = jitted, directory, key, name
        self._static = tuple(static_argnums)
        self._compiled: dict[tuple, object] = {}  # signature -> jax.stages.Compiled

    def __getattr__(self, name):
        return getattr(self._jitted, name)

    def __call__(self, *args, **kwargs):
        if kwargs:
            return self._jitted(*args, **kwargs)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return self._jitted(*args)
        static = tuple(args[i] for i in self._static if i < len(args))
        signature = (str(tree), tuple(map(_leaf_signature, leaves)), repr(static))
        compiled = self._compiled.get(signature)
        if compiled is not None:
            return compiled(*dynamic)
        digest = _digest(self._key, self._name, signature)
        path = self._directory / f"{self._name}-{digest}{SUFFIX}"
        compiled = load(path)
        if compiled is not None:
            try:
                out = compiled(*dynamic)
                self._compiled[signature] = compiled
                return out
            except Exception:  # a program that loads but does not run here: compile it
                path.unlink(missing_ok=True)
        # JAX's cache may hold the program (a run of another key built it, or this one before
        # the store had it): loaded from there it cannot be stored, so the first miss loads
        # it and marks it wanted, and a second miss compiles it anew and stores it
        wanted = path.with_name(path.stem + WANTED_SUFFIX)
        anew = wanted.exists()
        compiled, fresh = compile_fresh(self._jitted, args, anew)
        if fresh:
            save(path, compiled)
            wanted.unlink(missing_ok=True)
        elif not anew:
            _write(wanted, b"")
        self._compiled[signature] = compiled
        return compiled(*dynamic)

    @property
    def traces_marker(self) -> Path:
        return self._directory / f"{self._key}{TRACES_SUFFIX}"


def compile_fresh(jitted, args, anew: bool = False) -> tuple[object, bool]:
    """`jitted`'s program for `args`, compiled (`jax.stages.Compiled`), and whether XLA
    compiled it in this call, neither loading it from JAX's cache nor reusing it from memory
    (`anew`: compile it, whatever JAX's cache holds). Only such a program is stored: jaxlib
    0.10.2 serialises an executable it loaded from its cache without some of its kernels
    ("Function ... not found" when a later process runs it)."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening = True
    _events.compiled = _events.loaded = 0
    compiled = jitted.lower(*args).compile(FRESH_OPTIONS if anew else None)
    return compiled, _events.compiled > 0 and _events.loaded == 0


def _on_event(event: str, *args, **kwargs) -> None:
    if event == COMPILE_EVENT:
        _events.compiled = getattr(_events, "compiled", 0) + 1
    elif event == CACHE_HIT_EVENT:
        _events.loaded = getattr(_events, "loaded", 0) + 1


_events = threading.local()  # this thread's compile events (`compile_fresh`)
_listening = False


def stored(trainer, program_key: tuple, data):
    """`trainer` (`lossbench.train.Trainer`) with its runner's programs (init, the chunk
    program, evaluate) in the store; `trainer` itself when the store is off or the run has
    no key (`run_key`)."""
    directory = store_dir()
    key = run_key(program_key, data) if directory is not None else None
    if key is None:
        return trainer
    return dataclasses.replace(
        trainer,
        init=StoredProgram(trainer.init, directory, key, "init"),
        program=StoredProgram(trainer.program, directory, key, "program", static_argnums=(5,)),
        evaluate=StoredProgram(trainer.evaluate, directory, key, "evaluate"),
    )


def known_to_trace(program) -> bool:
    """True when `program` (a trainer's chunk program) is stored and traced before with its
    traced values as inputs (`lossbench.prepared.trace_failure` need not trace it again)."""
    return isinstance(program, StoredProgram) and program.traces_marker.exists()


def record_traces(program) -> None:
    """Remember that `program` traced with its traced values as inputs (`known_to_trace`)."""
    if isinstance(program, StoredProgram):
        _write(program.traces_marker, b"")


def load(path: Path):
    """The compiled program stored at `path`, or None (absent, torn, or not loadable here)."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head, checksum, payload = (
        blob[: len(MAGIC)],
        blob[len(MAGIC) : len(MAGIC) + 32],
        blob[len(MAGIC) + 32 :],
    )
    if head != MAGIC or hashlib.blake2b(payload, digest_size=32).digest() != checksum:
        return None
    try:
        from jax._src.lax.linalg import initialize_lapack
        from jax.experimental.serialize_executable import deserialize_and_load

        # a deserialised CPU program calls LAPACK through pointers that jaxlib sets only when
        # it lowers a linear-algebra op: without this, the first eigh segfaults (jax#29610)
        initialize_lapack()
        compiled = deserialize_and_load(*pickle.loads(payload))
    except Exception:  # another jaxlib's format, a renamed private function: compile instead
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: evicted last
    return compiled


def save(path: Path, compiled) -> None:
    """Store `compiled` at `path` (atomically), then evict the least recently used programs
    over `MAX_BYTES`. A program that cannot be serialised is not stored."""
    from jax.experimental.serialize_executable import serialize

    try:
        payload = pickle.dumps(serialize(compiled))
    except Exception:  # constants passed as arguments, an unpicklable pytree node
        return
    checksum = hashlib.blake2b(payload, digest_size=32).digest()
    if _write(path, MAGIC + checksum + payload):
        evict(path.parent)


def _write(path: Path, blob: bytes) -> bool:
    """Write `blob` to `path` whole or not at all (`results.publish`); False when the
    directory cannot be written (read-only, full)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        publish(path, lambda partial: partial.write_bytes(blob))
    except OSError:
        return False
    return True


def evict(directory: Path, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> None:
    """Delete the least recently used entries (programs, markers) until the store holds
    `max_bytes` and `max_files` at most, and the partial writes of a killed process after an
    hour. Only this module's files are considered."""
    entries = []
    for pattern in (f"*{SUFFIX}", f"*{TRACES_SUFFIX}", f"*{WANTED_SUFFIX}", PARTIAL):
        for path in directory.glob(pattern):
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.match(PARTIAL):
                if stat.st_mtime < time.time() - 3600:
                    path.unlink(missing_ok=True)
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
    total, count = sum(size for _, size, _ in entries), len(entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes and count <= max_files:
            break
        path.unlink(missing_ok=True)
        total, count = total - size, count - 1


def _leaf_signature(leaf) -> tuple:
    aval = jax.typeof(leaf)
    return (aval.shape, str(aval.dtype), aval.weak_type, repr(getattr(leaf, "sharding", None)))


def _digest(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=20).hexdigest()


__all__ = [
    "StoredProgram",
    "enabled",
    "known_to_trace",
    "record_traces",
    "run_key",
    "store_dir",
    "stored",
]
