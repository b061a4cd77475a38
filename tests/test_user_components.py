"""A user's own model, loss, data, init, optimizer and surface, from a module outside the
package, trained from the command line with probes that match a dense Hessian."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import cli, cli_in_process
from jax.flatten_util import ravel_pytree

import lossbench
from lossbench.problem import build_problem
from lossbench.results import load_params
from lossbench.schema import freeze

MODULE = '''
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lossbench.data import Dataset
from lossbench.models import register


class TinyNet(nnx.Module):
    """x -> tanh(W1 x + b1) -> W2 h + b2."""

    def __init__(self, in_features, out_features, hidden=4, *, rngs):
        self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def pseudo_huber(outputs, batch, delta=1.0):
    """Per-example pseudo-Huber loss of the outputs against batch["y"]."""
    r = outputs - batch["y"]
    return jnp.sum(delta**2 * (jnp.sqrt(1.0 + (r / delta) ** 2) - 1.0), axis=-1)


def sine(n=64, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    y = (np.sin(x) + noise * rng.normal(size=x.shape)).astype(np.float32)
    return Dataset(name="sine", task="regression", train={"x": x, "y": y})


@register("bowl", tasks=("surface",), implies={"data": "none", "init": "point"})
class Bowl(nnx.Module):
    """sum_i i x_i^2 / 2 + x_i^3 / 3: Hessian diag(i + 2 x_i)."""

    def __init__(self, dim: int = 3, *, rngs):
        self.x = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x=None):
        p = self.x[...]
        return 0.5 * jnp.sum(jnp.arange(1, p.shape[0] + 1) * p**2) + jnp.sum(p**3) / 3
'''

CONFIGS = {
    "model/tiny_net.yaml": "_target_: mypkg.nets.TinyNet\nhidden: 4\n",
    "loss/pseudo_huber.yaml": "_target_: mypkg.nets.pseudo_huber\ndelta: 0.5\n",
    "data/sine.yaml": "_target_: mypkg.nets.sine\nn: 256\n",
    "init/scaled_uniform.yaml": (
        "_target_: jax.nn.initializers.variance_scaling\n"
        "scale: 2.0\nmode: fan_avg\ndistribution: uniform\n"
    ),
    "optimizer/adabelief.yaml": "_target_: optax.adabelief\nlr: 0.02\nb1: 0.8\n",
}
USER = [
    "model=tiny_net",
    "loss=pseudo_huber",
    "data=sine",
    "init=scaled_uniform",
    "optimizer=adabelief",
]
QUICK = [
    "probe=spectrum",
    "probe.every=10",
    "trainer.steps=20",
    "trainer.log_every=10",
    "trainer.progress=false",
]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A temp dir with the package `mypkg` and a config dir `conf`."""
    root = tmp_path_factory.mktemp("user")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(textwrap.dedent(MODULE))
    for name, text in CONFIGS.items():
        (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / name).write_text(text)
    return root


def _dense_eigenvalues(loss, params, batch) -> np.ndarray:
    """eigh of jax.hessian of `loss(params, batch)` in float64 at `params`."""
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree_util.tree_map(np.float64, params))
        batch = jax.tree_util.tree_map(np.float64, batch)
        hessian = jax.hessian(lambda f: loss(unravel(f), batch))(flat)
        return np.linalg.eigvalsh(np.asarray(hessian))


def _last_probe(run_dir: Path) -> pd.Series:
    probes = pd.read_parquet(run_dir / "probes.parquet")
    return probes[probes.step == probes.step.max()].iloc[0]


def _assert_ends_match(probe: pd.Series, dense: np.ndarray, k: int = 3):
    scale = np.abs(dense).max()
    top = [probe[f"eig_top_{i}"] for i in range(1, k + 1)]
    bottom = [probe[f"eig_bottom_{i}"] for i in range(1, k + 1)]
    np.testing.assert_allclose(top, dense[::-1][:k], atol=1e-3 * scale)
    np.testing.assert_allclose(bottom, dense[:k], atol=1e-3 * scale)


def test_user_options_compose_with_their_own_keys(user, monkeypatch):
    monkeypatch.syspath_prepend(str(user))
    cfg = lossbench.compose(*USER, config_dir=user / "conf")
    assert cfg.model["_target_"] == "mypkg.nets.TinyNet" and cfg.model["hidden"] == 4
    assert cfg.optimizer["lr"] == 0.02
    problem = build_problem(freeze(cfg))
    assert problem.param_count == 4 + 4 + 4 + 1
    assert problem.optimizer.name == "optax.adabelief"
    params = problem.init_params(jax.random.key(0))
    assert np.std(np.asarray(params["hidden"]["kernel"])) > 0 and problem.data.task == "regression"
    bad = lossbench.compose(*USER, "+model.width=3", config_dir=user / "conf")
    with pytest.raises(lossbench.ConfigError, match="model.width"):  # not an argument of TinyNet
        build_problem(freeze(bad))


@pytest.mark.slow
def test_user_model_loss_data_train_from_the_cli_and_probes_match_a_dense_hessian(
    user, tmp_path, monkeypatch
):
    """`lossbench --config-dir` in this process (`imports=` goes through the console script,
    below): `mypkg` is on the path as PYTHONPATH would put it."""
    run_dir = tmp_path / "run"
    monkeypatch.syspath_prepend(str(user))
    result = cli_in_process(
        "--config-dir", str(user / "conf"), *USER, *QUICK, f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.step) == [0, 10, 19] and np.isfinite(metrics.loss).all()  # + last step
    problem = build_problem(freeze(lossbench.compose(*USER, config_dir=user / "conf")))
    params = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], load_params(run_dir))
    dense = _dense_eigenvalues(problem.loss, params, problem.data.train)
    assert dense.size == 13 and dense[0] < dense[-1]
    _assert_ends_match(_last_probe(run_dir), dense)


@pytest.mark.slow
def test_user_surface_registered_by_imports_trains_and_probes_match_its_hessian(user, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "imports=[mypkg.nets]",
        "model=bowl",  # selects data=none (so loss=none) and init=point
        "init.value=[0.3,-0.2,0.1]",
        "optimizer=gd",
        *QUICK,
        f"hydra.run.dir={run_dir}",
        env={"PYTHONPATH": str(user)},
    )
    assert result.returncode == 0, result.stderr
    x = np.asarray(load_params(run_dir)["x"])[0].astype(np.float64)
    dense = np.sort(np.arange(1, 4) + 2 * x)  # the closed form
    _assert_ends_match(_last_probe(run_dir), dense)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "name: bowl" in config and "name: none" in config and "name: point" in config
