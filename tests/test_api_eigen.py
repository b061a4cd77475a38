"""The notebook path of the eigenvalue API: `from lossbench.curvature import hessian_eigenvalues`
and a call, nothing else. The first call turns on the persistent compilation cache, so a
second session (a fresh process) loads the compiled Lanczos instead of compiling it again, and
its eigenvalues still match the dense Hessian's. Each test runs fresh processes on its own empty
cache directory, so nothing depends on a cache left by an earlier run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A user's session: some JAX work first (so JAX has compiled before lossbench is imported),
# then the import and one top-2 / bottom-1 call on a 2-layer tanh MLP (43 parameters) in
# float64, checked against `eigvalsh` of the dense `jax.hessian`.
SESSION = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

jax.jit(lambda a: jnp.sin(a) @ a.T)(jnp.ones((4, 4))).block_until_ready()
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None
)

from lossbench.curvature import hessian_eigenvalues


def loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2)


@jax.jit
def problem():  # one program, not an eager op (a compile) each
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": jax.random.normal(keys[0], (3, 8)),
        "b1": 0.1 * jax.random.normal(keys[1], (8,)),
        "w2": jax.random.normal(keys[2], (8, 1)),
    }
    x = jax.random.normal(keys[3], (20, 3))
    return params, x, jnp.sin(x[:, :1]), jax.random.PRNGKey(1)


params, x, y, key = jax.block_until_ready(problem())
hits.clear()
result = hessian_eigenvalues(loss, params, x, y, key=key, lanczos_steps=40, top_k=2, bottom_k=1)
eigen_hits = len(hits)  # persistent-cache hits of this call alone
flat, unravel = ravel_pytree(params)
dense_hessian = jax.jit(jax.hessian(lambda f: loss(unravel(f), x, y)))  # one compile
dense = np.linalg.eigvalsh(np.asarray(dense_hessian(flat)))
print(json.dumps({
    "directory": jax.config.jax_compilation_cache_dir,
    "hits": eigen_hits,
    "top": np.asarray(result.top).tolist(),
    "bottom": np.asarray(result.bottom).tolist(),
    "dense_top": dense[::-1][:2].tolist(),
    "dense_bottom": dense[:1].tolist(),
}))
"""


def session(env_updates: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOSSBENCH_", "JAX_COMP"))}
    env.update(env_updates)
    done = subprocess.run(
        [sys.executable, "-c", SESSION], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_dense(result: dict) -> None:
    for ours, exact in (("top", "dense_top"), ("bottom", "dense_bottom")):
        assert result[ours] == pytest.approx(result[exact], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_a_second_session_loads_the_eigenvalue_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = session({"LOSSBENCH_CACHE_DIR": str(cache)})
    assert first["directory"] == str(cache) and first["hits"] == 0
    assert any(cache.iterdir())  # written although JAX had compiled before the import
    assert_dense(first)
    second = session({"LOSSBENCH_CACHE_DIR": str(cache)})
    assert second["hits"] >= 1
    assert_dense(second)
    assert second["top"] == first["top"] and second["bottom"] == first["bottom"]


@pytest.mark.slow
def test_the_users_own_cache_is_left_alone(tmp_path):
    """(`LOSSBENCH_NO_CACHE=1`: `enable_compilation_cache` does nothing, test_compile_cache.)"""
    own, ours = tmp_path / "own", tmp_path / "ours"
    chosen = session({"JAX_COMPILATION_CACHE_DIR": str(own), "LOSSBENCH_CACHE_DIR": str(ours)})
    assert chosen["directory"] == str(own) and not ours.exists()
    assert_dense(chosen)
