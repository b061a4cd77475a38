"""Parameter snapshots along a run: `snapshots/step_XXXXXXX.npz`, one plain npz per step.

    save_snapshot(run_dir, step, params)         # called by the run loop every snapshot_every
    steps, trees = load_snapshots(run_dir)       # sorted by step; `like=` rebuilds the types

Each file holds one array per parameter leaf, keyed by its pytree path
(`jax.tree_util.keystr`, e.g. `['layers'][0]['kernel']`), written to a temporary name in the
same folder and published by `os.replace`, so a reader sees a whole file or none. Nothing is
pickled: `np.load(path, allow_pickle=False)` reads it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import jax
import numpy as np

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^step_(\d{7,})\.npz$")
_PATH_PART = re.compile(r"\['((?:[^'\\]|\\.)*)'\]|\[(-?\d+)\]|\.([A-Za-z_]\w*)")


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"step_{int(step):07d}.npz"


def save_snapshot(run_dir: str | Path, step: int, params) -> Path:
    """Write `params` (any pytree of arrays, e.g. with a leading seed axis) for `step`.

    One device-to-host copy and an uncompressed npz; atomic (temporary file, then
    `os.replace`). Returns the file's path.
    """
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    arrays = {jax.tree_util.keystr(key): np.asarray(leaf) for key, leaf in leaves}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def snapshot_steps(run_dir: str | Path) -> list[int]:
    """The steps that have a snapshot, ascending."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def _parse_path(keystr: str) -> list:
    parts, end = [], 0
    for match in _PATH_PART.finditer(keystr):
        if match.start() != end:
            raise ValueError(f"snapshot key {keystr!r} is not a pytree path")
        text, index, attr = match.groups()
        parts.append(text.replace("\\'", "'") if text is not None else attr)
        if index is not None:
            parts[-1] = int(index)
        end = match.end()
    if end != len(keystr) or not parts:
        raise ValueError(f"snapshot key {keystr!r} is not a pytree path")
    return parts


def _nested(arrays: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for keystr, value in arrays.items():
        node, parts = tree, _parse_path(keystr)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def load_snapshot(path: str | Path, like=None):
    """One snapshot: nested dicts keyed as saved, or the structure of the pytree `like`."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if like is None:
        return _nested(arrays)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    keys = [jax.tree_util.keystr(key) for key, _ in leaves]
    if sorted(keys) != sorted(arrays):
        raise ValueError(f"snapshot {path} does not match the structure of `like`")
    return jax.tree_util.tree_unflatten(treedef, [arrays[k] for k in keys])


def load_snapshots(run_dir: str | Path, like=None) -> tuple[list[int], list]:
    """All snapshots of a run: `(steps, pytrees)`, ascending by step (empty lists if none)."""
    steps = snapshot_steps(run_dir)
    return steps, [load_snapshot(snapshot_path(run_dir, s), like) for s in steps]


__all__ = ["SNAPSHOT_DIR", "load_snapshot", "load_snapshots", "save_snapshot", "snapshot_steps"]
