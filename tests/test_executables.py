"""The program store (`lossbench.executables`): a second command-line run of a config loads its
compiled programs instead of tracing, lowering and compiling them, with the numbers of a fresh
build; an edit to a user's module (or a module it imports) builds anew; a torn or corrupt entry
is compiled again; the store never grows past its bound and deletes only its own files."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import cli

from lossbench import executables, programs
from lossbench.compile_cache import cache_dir

PLUGIN = '''
import jax.numpy as jnp
from flax import nnx

from lossbench.models import register
from stalepkg.scale import SCALE


@register("lb_stale_bowl", tasks=("surface",), implies={"data": "none", "init": "point"})
class StaleBowl(nnx.Module):
    """SCALE * |x|^2 / 2: Hessian SCALE * I."""

    def __init__(self, dim: int = 2, *, rngs):
        self.x = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x=None):
        return 0.5 * SCALE * jnp.sum(self.x[...] ** 2)
'''
RUN = [
    "imports=[stalepkg.surface]",
    "model=lb_stale_bowl",
    "init.value=[1.0,1.0]",
    "optimizer=gd",
    "optimizer.lr=0.1",
    "probe=surface",  # Lanczos and eigh of its tridiagonal: LAPACK in a loaded program
    "trainer.steps=10",
    "trainer.log_every=5",
    "trainer.progress=false",
]


def _stored(cache):
    return {p.name: p.stat().st_mtime for p in (cache / executables.STORE_NAME).glob("*.program")}


@pytest.mark.slow
def test_a_second_run_loads_its_programs_and_an_edited_module_builds_anew(tmp_path):
    user, cache = tmp_path / "user", tmp_path / "cache"
    (user / "stalepkg").mkdir(parents=True)
    (user / "stalepkg" / "__init__.py").write_text("")
    (user / "stalepkg" / "surface.py").write_text(textwrap.dedent(PLUGIN))
    helper = user / "stalepkg" / "scale.py"  # imported by the plugin, not registering anything
    env = {
        "PYTHONPATH": str(user),
        "PYTHONDONTWRITEBYTECODE": "1",  # an edit of the same size is read again
        "LOSSBENCH_CACHE_DIR": str(cache),
    }

    def run(name):
        result = cli(*RUN, f"hydra.run.dir={tmp_path / name}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = pd.read_parquet(tmp_path / name / "metrics.parquet")
        probes = pd.read_parquet(tmp_path / name / "probes.parquet")
        return metrics, probes

    helper.write_text("SCALE = 1.0\n")
    first, first_probes = run("first")
    stored = _stored(cache)
    assert {name.split("-")[0] for name in stored} == {"init", "program", "evaluate"}
    time.sleep(0.05)
    again, again_probes = run("again")
    reloaded = _stored(cache)
    assert reloaded.keys() == stored.keys(), "the same config compiled another program"
    assert all(reloaded[name] > stored[name] for name in stored), "a program was not loaded"
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(
        again_probes.drop(columns="time_s", errors="ignore"),
        first_probes.drop(columns="time_s", errors="ignore"),
    )
    # the loss SCALE at x = (1, 1), the Hessian SCALE * I
    np.testing.assert_allclose(first.loss.iloc[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(again_probes.lambda_max.iloc[0], 1.0, rtol=1e-4)

    helper.write_text("SCALE = 3.0\n")
    edited, edited_probes = run("edited")
    chunk_programs = [name for name in _stored(cache) if name.startswith("program-")]
    assert len(chunk_programs) == 2, "the edited module's program was not stored beside the first"
    np.testing.assert_allclose(edited.loss.iloc[0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(edited_probes.lambda_max.iloc[0], 3.0, rtol=1e-4)


_made = itertools.count()


def _counting(traces):
    """A jitted program that counts its traces, of its own: a constant no other program of the
    session's processes has, so JAX's shared cache never holds it and XLA compiles it."""
    own = 1e-15 * ((os.getpid() % 100_000) * 1000 + next(_made))

    def f(x, power):
        traces.append(power)
        return jnp.linalg.eigh(x @ x.T)[0] ** power + own

    return jax.jit(f, static_argnums=1)


def test_a_stored_program_is_loaded_not_traced_and_gives_the_same_numbers(tmp_path):
    traces = []
    x = jnp.arange(9.0).reshape(3, 3) / 9
    first = executables.StoredProgram(_counting(traces), tmp_path, "key", "f", (1,))
    expected = first(x, 2)
    assert traces == [2] and len(list(tmp_path.glob("f-*.program"))) == 1
    fresh = executables.StoredProgram(_counting(traces), tmp_path, "key", "f", (1,))
    np.testing.assert_allclose(fresh(x, 2), expected, rtol=1e-6)
    np.testing.assert_allclose(fresh(x, 2), np.linalg.eigvalsh(np.asarray(x @ x.T)) ** 2, atol=1e-5)
    assert traces == [2], "a stored program was traced again"
    fresh(x, 3)  # another static value, another shape: programs of their own
    fresh(jnp.ones((2, 3)), 2)
    assert traces == [2, 3, 2] and len(list(tmp_path.glob("f-*.program"))) == 3
    # another key (another config or code) does not see them
    other = executables.StoredProgram(_counting(traces), tmp_path, "other", "f", (1,))
    other(x, 2)
    assert traces == [2, 3, 2, 2]
    # under a trace (eval_shape, an outer jit), the jitted function
    shape = jax.eval_shape(lambda a: fresh(a, 2), x)
    assert shape.shape == (3,) and traces[-1] == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_torn_or_corrupt_entry_is_compiled_again_and_replaced(tmp_path, damage):
    traces = []
    x = jnp.eye(3) * 2.0
    expected = executables.StoredProgram(_counting(traces), tmp_path, "k", "f", (1,))(x, 1)
    (path,) = tmp_path.glob("f-*.program")
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])  # a copy cut short
    elif damage == "flip":
        path.write_bytes(blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:])
    else:
        path.write_bytes(b"not a program")
    assert executables.load(path) is None
    again = executables.StoredProgram(_counting(traces), tmp_path, "k", "f", (1,))
    np.testing.assert_allclose(again(x, 1), expected)
    assert len(traces) == 2  # compiled again
    assert executables.load(path) is not None  # and stored whole


def test_the_store_evicts_its_least_recently_used_entries_and_nothing_else(tmp_path):
    now = time.time()

    def make(name, age, size=0):
        (tmp_path / name).write_bytes(b"x" * size)
        os.utime(tmp_path / name, (now - age, now - age))

    for age, name in enumerate(["c-new", "b-mid", "a-old"]):
        make(f"{name}.program", 100 * age, size=100)
    make("run.traces", 50)  # a trace marker: an entry of no size
    make(".init-a.program.41.0f3c.tmp", 7200)  # the partial write of a process killed two hours ago
    make(".init-b.program.42.9e1d.tmp", 10)  # one being written now
    make("notes.txt", 10**6, size=1000)  # not the store's: never deleted

    def left():
        return sorted(p.name for p in tmp_path.iterdir())

    writing = ".init-b.program.42.9e1d.tmp"

    executables.evict(tmp_path, max_bytes=250)
    assert left() == [writing, "b-mid.program", "c-new.program", "notes.txt", "run.traces"]
    executables.evict(tmp_path, max_files=2)  # by number too, the oldest first
    assert left() == [writing, "c-new.program", "notes.txt", "run.traces"]
    executables.evict(tmp_path, max_bytes=0)  # the marker is older than the last program
    assert left() == [writing, "notes.txt"]


def _key(builder, data):
    record = {"model": {"name": "lb_key_test"}, "optimizer": {"lr": 0.1}}
    key = programs.program_key(record, 1, ())
    config, rows, traced, targets, _, x64 = key
    return executables.run_key(
        (config, rows, traced, targets, (("model", "lb", builder),), x64), data
    )


def test_the_run_key_follows_the_data_and_refuses_a_builder_without_source():
    data = {"x": np.arange(6.0).reshape(3, 2)}
    key = _key(_counting, data)
    assert key is not None and key == _key(_counting, {"x": np.arange(6.0).reshape(3, 2)})
    assert key != _key(_counting, {"x": np.arange(6.0).reshape(3, 2) + 1})  # same shapes
    assert key != _key(_key, data)  # another builder under the name
    cell = types.ModuleType("lb_notebook_cell")  # a module with no source file
    exec("def builder(): pass", cell.__dict__)
    sys.modules[cell.__name__] = cell
    try:
        assert _key(cell.builder, data) is None
    finally:
        del sys.modules[cell.__name__]


def test_the_store_is_on_only_for_the_command_line_and_off_with_the_cache(monkeypatch):
    assert executables.store_dir() is None  # lossbench.run in a notebook or a test
    with executables.enabled():
        assert executables.store_dir() == cache_dir() / executables.STORE_NAME
        monkeypatch.setenv("LOSSBENCH_NO_CACHE", "1")
        assert executables.store_dir() is None
    assert executables.store_dir() is None


def test_a_traced_program_is_remembered_by_its_key(tmp_path):
    program = executables.StoredProgram(_counting([]), tmp_path, "run", "program")
    assert not executables.known_to_trace(program)
    assert not executables.known_to_trace(_counting([]))  # not stored: always traced
    executables.record_traces(program)
    assert executables.known_to_trace(program)
    other = executables.StoredProgram(_counting([]), tmp_path, "other run", "program")
    assert not executables.known_to_trace(other)


def test_only_a_program_xla_compiled_in_the_call_is_stored(tmp_path):
    """Not one loaded from JAX's cache, nor one an earlier compile left in memory: such a
    program is compiled anew, and stored, the second time it is missed."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # JAX caches this one
    try:
        offset = time.time() % 1000  # a program JAX's cache has not seen

        def f(x):
            y = jnp.cumsum(x[::2] * 3.0, axis=0) @ x[1::2].T
            return jax.lax.scan(lambda c, r: (c + jnp.tanh(r).sum(), None), offset, y)[0]

        x = jnp.ones((16, 8))
        expected = executables.StoredProgram(jax.jit(f), tmp_path, "a", "f")(x)
        assert len(list(tmp_path.glob("f-*.program"))) == 1
        again = executables.StoredProgram(jax.jit(f), tmp_path, "b", "f")  # reused in memory
        np.testing.assert_allclose(again(x), expected)
        jax.clear_caches()
        loaded = executables.StoredProgram(jax.jit(f), tmp_path, "c", "f")  # from JAX's cache
        np.testing.assert_allclose(loaded(x), expected)
        assert len(list(tmp_path.glob("f-*.program"))) == 1
        assert len(list(tmp_path.glob("f-*.wanted"))) == 2  # "b" and "c" missed once
        # missed again (the next process): compiled anew, JAX's cache notwithstanding, stored
        jax.clear_caches()
        anew = executables.StoredProgram(jax.jit(f), tmp_path, "c", "f")
        np.testing.assert_allclose(anew(x), expected)
        assert len(list(tmp_path.glob("f-*.program"))) == 2
        assert len(list(tmp_path.glob("f-*.wanted"))) == 1  # "b"'s
        jax.clear_caches()
        stored = executables.StoredProgram(jax.jit(f), tmp_path, "c", "f")  # a third process
        assert stored(x) == expected and len(list(tmp_path.glob("f-*"))) == 3
        assert executables.compile_fresh(jax.jit(lambda v: v * offset + 1.5), (x,))[1]
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


def test_a_stored_program_that_does_not_run_is_dropped_and_compiled_again(tmp_path, monkeypatch):
    traces = []
    x = jnp.eye(3)
    expected = executables.StoredProgram(_counting(traces), tmp_path, "k", "f", (1,))(x, 1)
    (path,) = tmp_path.glob("f-*.program")

    def broken(*args):
        raise jax.errors.JaxRuntimeError("NOT_FOUND: Function slice_bitcast_fusion.6 not found")

    load = executables.load
    path.write_bytes(b"the entry that does not run")
    monkeypatch.setattr(executables, "load", lambda p: broken)
    np.testing.assert_allclose(
        executables.StoredProgram(_counting(traces), tmp_path, "k", "f", (1,))(x, 1), expected
    )
    assert len(traces) == 2  # compiled again, and stored anew in place of the dropped entry
    assert path.read_bytes() != b"the entry that does not run" and load(path) is not None


def test_an_unwritable_store_leaves_nothing_and_the_program_still_runs(tmp_path, monkeypatch):
    traces = []

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    program = executables.StoredProgram(_counting(traces), tmp_path, "k", "f", (1,))
    np.testing.assert_allclose(program(jnp.eye(2), 1), [1.0, 1.0])
    assert traces == [1] and list(tmp_path.iterdir()) == []  # no partial file left
