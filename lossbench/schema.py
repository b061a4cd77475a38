"""The config schema, registered in Hydra's ConfigStore.

Every option of the `data`, `model`, `init`, `loss` and `optimizer` groups has its own schema,
generated from its builder by its registry (`lossbench.registry`): `optimizer=adam` has adam's
fields and the shared ones (lr, schedule, clip_norm, weight_decay), and a key it does not have
fails at composition with Hydra's message. `register_configs` stores each option's schema as
`schema/<group>/<name>` and the option itself as `<group>/<name>`, extending its schema and
selecting the options it implies (a surface model selects data=none, init=point; a dataset
selects the loss of its task). `trainer`, `probe` and `detect` options are YAML presets of the
typed schemas below. A user's config dir adds options (`_target_` plus arguments, unchecked
until built); a module named by `imports:` registers Python ones before composition.

Checks beyond type (lr > 0, batch <= dataset size) happen once at build time, next to each
builder, raising `ConfigError` with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lossbench.errors import ConfigError as ConfigError  # noqa: F401  (re-export)

# Groups whose options come from a registry, in the order of the defaults list (an option may
# select options of the groups before it: a dataset its loss, a surface its data and init).
REGISTRY_GROUPS = ("loss", "init", "data", "model", "optimizer")


@dataclass
class TrainerConfig:
    steps: int = 1000
    batch_size: int | None = None  # null: full batch
    log_every: int = 10
    seed: int = 0
    seeds: int = 1  # seeds trained together (vmapped): seed, seed + 1, ...
    chunk: int = 100  # steps per compiled call when probes are off
    eval: bool = True  # held-out evaluation at log steps
    progress: bool = True
    blowup: float = 1e6  # diverged when |loss| > blowup * max(1, |initial loss|)
    save_params: bool = True  # final training state to checkpoint/ (orbax)
    diverged_ratio: float = 3.0  # also diverged: the loss ends above this multiple of its start
    checkpoint_every: int = 10  # chunks between checkpoints (0: only the final one)
    keep_checkpoints: int = 2  # the latest checkpoints kept (resume reads the last)
    snapshot_every: int = 0  # steps between parameter snapshots (0: none), a multiple of a chunk
    resume: bool = False  # continue the run in hydra.run.dir from its last checkpoint
    overwrite: bool = False  # move the files already in the run directory to previous-<time>/


@dataclass
class ProbeConfig:
    name: str = "off"
    every: int = 0  # 0: off. Otherwise a probe each `every` steps (and at the start and end)
    batch_size: int | None = None  # null: the whole training set; else a fixed subset
    lanczos_steps: int = 20
    top_k: int = 1
    bottom_k: int = 0
    trace_samples: int = 0
    trace_method: str = "hutchinson"  # hutchinson | xtrace
    density_samples: int = 0
    density_steps: int = 30  # Lanczos steps per SLQ sample
    curvature: str = "hessian"  # hessian | ggn
    per_layer: bool = False
    warm_start: bool = True  # start Lanczos from the last probe's top eigenvector
    # Lanczos steps of a warm-started probe (null: lanczos_steps); the first probe is cold.
    # The bottom of the spectrum is then not resolved: read lambda_min as an upper bound.
    warm_steps: int | None = None
    # A warm probe also stops once a step raises lambda_max by at most this fraction of it
    # (null: it runs all warm_steps)
    warm_tolerance: float | None = None
    # Any probe's Lanczos run also stops once the top Ritz pair's error estimate
    # r^2 / (theta_1 - theta_2) is at most this fraction of lambda_max (null: off)
    ritz_tolerance: float | None = None
    cold_start: str = "random"  # random | gradient: a cold probe's Lanczos start vector


from lossbench.pathology.config import DetectConfig  # noqa: E402  (Hydra-free, re-export)


@dataclass
class Config:
    loss: Any = MISSING  # each option has its own schema (`lossbench.registry`)
    init: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = MISSING
    probe: ProbeConfig = MISSING
    detect: DetectConfig = MISSING
    study: str = "default"  # a label carried into results
    # the summary figure a sweeper optimises (hydra/sweeper=optuna): final_<metric> or
    # final_test_<metric>, a mean over the live seeds
    objective: str = "final_loss"
    imports: list[str] = field(default_factory=list)  # user modules that register options


def registries() -> dict:
    """{group: registry} of the groups whose options are registered in Python."""
    from lossbench.data import DATASETS
    from lossbench.initializers import INITIALIZERS
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS
    from lossbench.optimizers import OPTIMIZERS

    return {
        "loss": LOSSES,
        "init": INITIALIZERS,
        "data": DATASETS,
        "model": MODELS,
        "optimizer": OPTIMIZERS,
    }


def implied(group: str, option) -> dict[str, str]:
    """The options of earlier groups this option selects (overridable on the command line)."""
    from lossbench.tasks import default_loss

    implies = dict(option.meta.get("implies", {}))
    if group == "data" and "loss" not in implies and default_loss(option.meta.get("task", "")):
        implies["loss"] = default_loss(option.meta["task"])
    return implies


def register_configs(overrides: Sequence[str] = ()) -> None:
    """Store the root schema as `base_config` and every registered option with its schema.

    `overrides` are the command line's: modules named by an `imports=[...]` override are
    imported first, so the options they register can be selected.
    """
    from lossbench.registry import import_modules

    import_modules(_imports(overrides))
    store = ConfigStore.instance()
    _store_once(store, "base_config", Config, [("", "base_config", Config)])
    for group, registry in registries().items():
        for name, option in registry.items():
            if not getattr(option, "trainable", True):
                continue  # metrics only (the 0-1 loss)
            defaults: list[Any] = [{f"/schema/{group}@_here_": name}]
            for other, choice in implied(group, option).items():
                defaults.append({f"override /{other}@_global_.{other}": choice})
            nodes = [
                (f"schema/{group}", name, registry.schema(name)),
                (group, name, {"defaults": [*defaults, "_self_"]}),
            ]
            _store_once(store, f"{group}/{name}", option, nodes)


# what `register_configs` stored: key -> (option, the ConfigNodes it stored). Storing converts
# a dataclass to an OmegaConf node (~1 ms an option, ~150 options), so a process that
# composes many times (tests, notebooks, `lossbench.compose` in a loop) stores each once.
_STORED: dict[str, tuple[Any, list]] = {}


def _store_once(store: ConfigStore, key: str, option: Any, nodes: list[tuple]) -> None:
    """Store `nodes` [(group, name, node)] for `option` unless this process already stored
    them for the same option and they are still the store's."""
    option_then, stored = _STORED.get(key, (None, []))
    same = zip(nodes, stored, strict=False)
    if option_then is option and all(_lookup(store, g, n) is node for (g, n, _), node in same):
        return
    for group, name, node in nodes:
        store.store(group=group or None, name=name, node=node)
    _STORED[key] = (option, [_lookup(store, group, name) for group, name, _ in nodes])


def _lookup(store: ConfigStore, group: str, name: str):
    node = store.repo
    for part in [*(group.split("/") if group else []), f"{name}.yaml"]:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _configstore_is_its_own_copy() -> None:
    """Hydra 1.3 deep-copies its config repository, the ConfigStore singleton held by its
    structured-config source included, each time it composes or lists a group's options:
    ~0.2 s a copy with our ~300 stored nodes, 125 copies for `lossbench --help` (hydra-zen
    #769; Hydra 1.4 refetches the singleton instead, facebookresearch/hydra#2928). A singleton
    is its own copy, as it is in Hydra 1.4; `ConfigStore.load` still copies the node it
    returns, so nothing stored can be mutated through a composed config."""
    if "__deepcopy__" not in vars(ConfigStore):
        ConfigStore.__deepcopy__ = lambda self, memo: self


_configstore_is_its_own_copy()


def _imports(overrides: Sequence[str]) -> list[str]:
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        if key == "imports":
            return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return []


@cache
def _frozen_twin(cls: type) -> type:
    fields = [(f.name, Any) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True)


@cache
def _frozen_record(keys: tuple[str, ...]) -> type:
    return dataclasses.make_dataclass("Config", [(k, Any) for k in keys], frozen=True)


def freeze(obj: Any) -> Any:
    """Turn schema dataclasses (and lists) into frozen, hashable twins, safe to close over;
    mappings (a user's `_target_` option) into frozen records with the same attributes."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        twin = _frozen_twin(type(obj))
        return twin(**{f.name: freeze(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    if isinstance(obj, list | tuple):
        return tuple(freeze(v) for v in obj)
    if isinstance(obj, dict) and all(str(k).isidentifier() for k in obj):
        return _frozen_record(tuple(obj))(**{k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, dict):
        return tuple(sorted((k, freeze(v)) for k, v in obj.items()))
    return obj
