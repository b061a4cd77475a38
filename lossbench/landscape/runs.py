"""A saved run as the landscape needs it: its problem, final parameters, trajectory, metrics.

The problem is rebuilt from the run's `.hydra/config.yaml`; the final parameters come from
`checkpoint/` (orbax, leading seed axis) and the trajectory from `snapshots/`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from lossbench.landscape.first_layer import first_layer_split
from lossbench.snapshots import load_snapshots

PyTree = Any


def _config_text(run_dir: str | Path) -> str:
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise ValueError(f"RUN_DIR={str(run_dir)!r} is not allowed: a run directory (with {path})")
    return path.read_text()


def _config_from_text(text: str):
    from omegaconf import OmegaConf

    from lossbench.schema import Config, freeze

    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    return freeze(OmegaConf.to_object(merged))


def load_run_config(run_dir: str | Path):
    """The run's frozen, typed config, read from `.hydra/config.yaml`."""
    return _config_from_text(_config_text(run_dir))


def load_run_problem(run_dir: str | Path):
    """`(cfg, problem)` of a saved run, rebuilt from its config."""
    context = run_context(run_dir)
    return context.cfg, context.problem


class RunContext(NamedTuple):
    """A run's problem with its data on the device and the functions the grids compile."""

    cfg: Any
    problem: Any
    data: dict  # {"train": ..., "test": ...}
    metrics_fn: Any  # (params, data) -> dict
    loss_fn: Any  # (params, data) -> scalar
    first_layer: Any  # FirstLayerSplit of metrics_fn for planes, or None (landscape.first_layer)


def run_context(run_dir: str | Path) -> RunContext:
    """The run's `RunContext`, cached by its config: repeated landscapes of runs with the same
    config reuse the compiled programs (same function objects)."""
    return _cached_context(_config_text(run_dir))


@lru_cache(maxsize=4)
def _cached_context(text: str) -> RunContext:
    from lossbench.problem import build_problem

    cfg = _config_from_text(text)
    problem = build_problem(cfg)
    data = run_data(problem)
    splits = {"": "train", "test_": "test"} if problem.data.test else {"": "train"}
    first_layer = first_layer_split(problem, like_template(problem), splits)
    return RunContext(
        cfg, problem, data, make_metrics_fn(problem), make_loss_fn(problem), first_layer
    )


def like_template(problem) -> PyTree:
    """Abstract parameters (shapes and dtypes) of the problem's model."""
    return jax.eval_shape(problem.init_params, jax.random.key(0))


def _restructure(tree: PyTree, like: PyTree) -> PyTree:
    """`tree`'s leaves in `like`'s structure, matched by path (orbax may return str keys)."""
    got = {_path_key(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(treedef, [got[_path_key(p)] for p, _ in paths])


def _path_key(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def final_params(run_dir: str | Path, problem, seed_index: int = 0) -> PyTree:
    """The final parameters of one seed of a run (the checkpoint has a leading seed axis)."""
    from lossbench.results import CHECKPOINT_DIR, load_params

    if not (Path(run_dir) / CHECKPOINT_DIR).exists():
        raise ValueError(
            f"RUN_DIR={str(run_dir)!r} is not allowed: a run with its final parameters "
            f"({CHECKPOINT_DIR}/, trainer.save_params=true)"
        )
    stacked = _restructure(load_params(run_dir), like_template(problem))
    seeds = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    if not 0 <= seed_index < seeds:
        raise ValueError(f"seed={seed_index!r} is not allowed: a seed index in [0, {seeds - 1}]")
    return jax.tree_util.tree_map(lambda a: np.asarray(a[seed_index]), stacked)


def seed_count(run_dir: str | Path) -> int:
    """How many seeds the run's checkpoint holds."""
    from lossbench.results import load_params

    return int(jax.tree_util.tree_leaves(load_params(run_dir))[0].shape[0])


def run_trajectory(run_dir: str | Path, problem, seed_index: int = 0) -> tuple[list[int], list]:
    """`(steps, params)` from the run's snapshots, for one seed (snapshots keep the seed axis
    the run loop holds; a snapshot without one is taken as it is)."""
    like = like_template(problem)
    steps, trees = load_snapshots(run_dir)
    out = []
    for tree in trees:
        tree = _restructure(tree, like)
        leaf, ref = jax.tree_util.tree_leaves(tree)[0], jax.tree_util.tree_leaves(like)[0]
        if np.ndim(leaf) == len(ref.shape) + 1:
            tree = jax.tree_util.tree_map(lambda a: np.asarray(a[seed_index]), tree)
        out.append(tree)
    return steps, out


def make_metrics_fn(problem):
    """`metrics(params, data) -> {loss, accuracy, test_loss, test_accuracy}` (what applies),
    with `data = run_data(problem)`. Build it once and reuse it: it is the compiled key."""
    has_test = bool(problem.data.test)

    def metrics(params, data):
        out = dict(problem.metrics(params, data["train"]))
        if has_test:
            out.update({f"test_{k}": v for k, v in problem.metrics(params, data["test"]).items()})
        return out

    return metrics


def make_loss_fn(problem):
    """`loss(params, data)`: the training objective on the whole training set."""

    def loss(params, data):
        return problem.loss(params, data["train"])

    return loss


def run_data(problem) -> dict:
    """The run's full training and test sets, on the device."""
    return jax.device_put({"train": problem.data.train, "test": problem.data.test})
