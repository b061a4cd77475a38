"""The compiled training functions built in this process, reused by the runs that need them.

`jax.jit` caches a compiled program per function object, and a run's functions are closures
made for it (`lossbench.train.make_train`), so a second run of the same config in one process
(a notebook's loop over learning rates or seeds, a test suite) traced and lowered its programs
again: ~1-3 s a run on a CPU, before the persistent compilation cache could even be asked.
Here the functions are kept for the configs that build the same program, keyed on:

- the config record without what is not part of the program: the row keys (`trainer.seed`,
  `trainer.seeds`: the row count is its own part of the key), the host loop's keys
  (`rundir.RESUME_FREE_KEYS`: progress, resume, checkpointing, ...), and the values that the
  program takes as inputs (`traced`: a learning rate swept in a loop is an input);
- the Python objects its names resolve to: every registered builder of every group and each
  `_target_` of the record, so a notebook that redefines or re-registers a model, a loss or a
  data set (or reloads the module) gets a new program, not the old code;
- `jax_enable_x64`.

Not seen: a builder whose behaviour changes through a global it reads at build time. Call
`clear()` after changing one. Each entry holds its problem's data: at most `KEPT` entries and
`KEPT_BYTES` of data are held, the least recently used going first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence

import jax

from lossbench.problem import flat_record
from lossbench.registry import locate
from lossbench.rundir import RESUME_FREE_KEYS

KEPT = 8
KEPT_BYTES = 1 << 30  # the data the kept entries hold, at most
ROW_KEYS = ("trainer.seed", "trainer.seeds")  # rows of the program, not part of it
_kept: OrderedDict[tuple, tuple[object, int]] = OrderedDict()  # key -> (functions, data bytes)


def _registries():
    from lossbench.data.base import DATASETS
    from lossbench.initializers import INITIALIZERS
    from lossbench.losses.base import LOSSES
    from lossbench.models.base import MODELS
    from lossbench.optimizers.base import OPTIMIZERS
    from lossbench.tasks.base import OBJECTIVES

    return (DATASETS, INITIALIZERS, LOSSES, MODELS, OPTIMIZERS, OBJECTIVES)


def program_key(record: dict, rows: int, traced: Sequence[str]) -> tuple:
    """What decides the functions a run of `record` builds over `rows` rows with the values
    of `traced` as inputs (see the module docstring)."""
    dropped = set(ROW_KEYS) | set(traced)
    values = {
        path: value
        for path, value in flat_record(record).items()
        if path not in dropped
        and not any(path == k or path.startswith(f"{k}.") for k in RESUME_FREE_KEYS)
    }
    targets = tuple(
        (path, locate(value, path)) for path, value in values.items() if path.endswith("_target_")
    )
    builders = tuple(
        (registry.group, name, option.builder)
        for registry in _registries()
        for name, option in registry.items()
    )
    config = json.dumps(values, sort_keys=True, default=repr)
    return config, rows, tuple(traced), targets, builders, bool(jax.config.jax_enable_x64)


def reuse(key: tuple, build: Callable[[], object], data_bytes: int = 0):
    """The functions kept under `key`, else `build()`'s, kept from now on (with the
    `data_bytes` they hold, unless that alone is over `KEPT_BYTES`)."""
    if key in _kept:
        _kept.move_to_end(key)
        return _kept[key][0]
    made = build()
    if data_bytes <= KEPT_BYTES:
        _kept[key] = (made, data_bytes)
    while len(_kept) > KEPT or sum(size for _, size in _kept.values()) > KEPT_BYTES:
        _kept.popitem(last=False)
    return made


def clear() -> None:
    """Forget every kept function (the next run of any config traces its programs again)."""
    _kept.clear()


__all__ = ["KEPT", "clear", "program_key", "reuse"]
