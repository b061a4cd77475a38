"""The persistent compilation cache: on by default, off with LOSSBENCH_NO_CACHE, and a second
process loads what the first compiled. Each test uses its own empty cache directory, in fresh
processes, so nothing depends on a cache left warm by an earlier run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lossbench import compile_cache

SCRIPT = """
import json
import jax
import jax.numpy as jnp
from lossbench.compile_cache import enable_compilation_cache

directory = enable_compilation_cache()
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even tiny programs
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1.0)
f(jnp.ones((8, 8))).block_until_ready()
print(json.dumps({"directory": None if directory is None else str(directory), "hits": len(hits)}))
"""


def run_script(env_updates):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSBENCH_")}
    env.update(env_updates)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cache_dir_follows_xdg_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv("LOSSBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.cache_dir() == tmp_path / "lossbench" / "jax"
    monkeypatch.setenv("LOSSBENCH_NO_CACHE", "1")
    assert compile_cache.cache_disabled()
    assert compile_cache.enable_compilation_cache(tmp_path / "unused") is None
    assert not (tmp_path / "unused").exists()
    monkeypatch.setenv("LOSSBENCH_NO_CACHE", "0")
    assert not compile_cache.cache_disabled()


def test_a_second_process_loads_the_first_ones_programs(tmp_path):
    cache = tmp_path / "cache"
    first = run_script({"LOSSBENCH_CACHE_DIR": str(cache)})
    assert first == {"directory": str(cache), "hits": 0}
    assert any(cache.iterdir())  # the program was written
    second = run_script({"LOSSBENCH_CACHE_DIR": str(cache)})
    assert second["hits"] >= 1
    off = run_script({"LOSSBENCH_CACHE_DIR": str(cache), "LOSSBENCH_NO_CACHE": "1"})
    assert off == {"directory": None, "hits": 0}


RUN = """
import sys
import lossbench

quick = ["model=quadratic", "data=none", "probe=off", "trainer.steps=4", "trainer.progress=false"]
lossbench.run(lossbench.compose(*quick), sys.argv[1])
"""


def test_a_library_run_uses_the_cache_by_default(tmp_path):
    """`lossbench.run` from a notebook or script, not only the command line, writes the
    compiled programs to the cache (so a notebook's next session loads them)."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSBENCH_")}
    env["LOSSBENCH_CACHE_DIR"] = str(cache)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert any(name.startswith("jit_compiled_chunk") for name in written), written
