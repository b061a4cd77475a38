"""One registry pattern for every noun: an option is declared once, beside its builder.

    MODELS = Registry("model")

    @MODELS.register("mlp", tasks=("classification", "regression"))
    class MLP(nnx.Module):
        def __init__(self, in_features, out_features, widths=(128, 128), activation="tanh",
                     bias=True, *, rngs): ...

The option's schema, `MODELS.schema("mlp")`, is a dataclass of exactly the builder's parameters
that have a default (`widths`, `activation`, `bias`), after the group's shared fields (`base`,
e.g. an optimizer's `lr`); parameters without a default are context, passed by name when the
option is built (`in_features`, `rngs`, an optimizer's `learning_rate` schedule). A parameter
annotated with a dataclass (a mixin such as the data split) contributes that dataclass's fields
and receives an instance of it. Metadata (`tasks=...`) says what the option fits; `implies`
names the options of other groups it selects (a surface model selects `data=none`).
`lossbench.schema` stores every schema in Hydra's ConfigStore, so a key an option does not have
fails at composition.

From outside the package an option is either registered the same way (in a module named by
the config's `imports:` key) or written as `_target_: module.builder` plus its arguments in a
config file of the user's config dir; `Registry.resolve` takes both. No Hydra here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import UnionType
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from lossbench.errors import ConfigError

RESERVED = ("name", "_target_")  # config keys that select the option, never passed to it
_PRIMITIVES = (int, float, bool, str)


@dataclass(frozen=True)
class Option:
    """A registered builder with its metadata."""

    group: str
    name: str
    builder: Callable
    meta: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # shared fields' option defaults

    @property
    def doc(self) -> str:
        return (inspect.getdoc(self.builder) or "").split("\n\n")[0].replace("\n", " ")


class Registry:
    """Options of one config group (`data`, `model`, `init`, `loss`, `optimizer`, `task`)."""

    def __init__(self, group: str, base: type | None = None):
        self.group, self.base = group, base
        self.options: dict[str, Option] = {}

    def register(self, name: str | None = None, *, defaults: Mapping | None = None, **meta):
        """Decorator: declare `builder` as the option `name` (default: its own name)."""

        def add(builder: Callable) -> Callable:
            key = name or builder.__name__
            self.options[key] = Option(self.group, key, builder, meta, dict(defaults or {}))
            return builder

        return add

    def __contains__(self, name: str) -> bool:
        return name in self.options

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.options))

    def __len__(self) -> int:
        return len(self.options)

    def names(self, **where) -> list[str]:
        """Option names whose metadata has these values (`tasks` matches by membership)."""
        return sorted(
            name
            for name, option in self.options.items()
            if all(_matches(option.meta.get(k), v) for k, v in where.items())
        )

    def values(self):
        return self.options.values()

    def items(self):
        return self.options.items()

    def __getitem__(self, name: str) -> Option:
        if name not in self.options:
            raise ConfigError(f"{self.group}.name", name, f"one of {sorted(self.options)}")
        return self.options[name]

    def schema(self, name: str) -> type:
        """The option's config dataclass: `name`, the shared fields, the builder's arguments."""
        return _schema(self, name)

    def resolve(self, cfg) -> Option:
        """The option a config selects: its `_target_` if it has one, else its `name`."""
        target = _get(cfg, "_target_")
        if target is None:
            return self[_get(cfg, "name")]
        builder = locate(target, f"{self.group}._target_")
        for option in self.options.values():
            if option.builder is builder:
                return option
        meta = getattr(builder, "lossbench", {})  # optional declared metadata
        return Option(self.group, _get(cfg, "name") or target, builder, meta)

    def build(self, cfg, *, skip: Sequence[str] = (), **context):
        """Call the option's builder with its arguments from `cfg` and `context` by name.

        Fields of `skip` (shared fields the group handles itself) are not passed on unless the
        builder takes them. A `_target_` config passes every other key; a key its builder does
        not take is a ConfigError.
        """
        option = self.resolve(cfg)
        return option, option.builder(**arguments(option, cfg, context, skip))


def arguments(option: Option, cfg, context: Mapping, skip: Sequence[str] = ()) -> dict:
    """The keyword arguments of `option.builder` from the config and the context."""
    parameters = _parameters(option.builder)
    kwargs = {}
    for p in parameters.values():
        mixin = _mixin(option.builder, p.name)
        if p.name in context:
            kwargs[p.name] = context[p.name]
        elif mixin is not None:
            values = {f.name: _get(cfg, f.name) for f in dataclasses.fields(mixin)}
            kwargs[p.name] = mixin(**{k: v for k, v in values.items() if v is not None})
        elif _has(cfg, p.name):
            kwargs[p.name] = _get(cfg, p.name)
    if _get(cfg, "_target_") is not None:
        extra = [k for k in _keys(cfg) if k not in (*RESERVED, *skip, *kwargs)]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        if extra and not takes_any:
            key = f"{option.group}.{extra[0]}"
            raise ConfigError(key, _get(cfg, extra[0]), f"an argument of {option.name}")
        kwargs.update({k: _get(cfg, k) for k in extra})
    return kwargs


def locate(path: str, key: str = "_target_") -> Any:
    """The object at a dotted path `package.module.attribute` (imported on demand)."""
    parts = str(path).split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        return obj
    raise ConfigError(key, path, "an importable module.attribute (is its package on the path?)")


def import_modules(names: Sequence[str]) -> None:
    """Import the user modules named by the config's `imports:` (they register options)."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError("imports", name, f"an importable module ({exc})") from None


# ---------------------------------------------------------------------------------------------
# schema generation


@cache
def _schema(registry: Registry, name: str) -> type:
    option = registry[name]
    fields = {"name": ("name", str, field(default=name))}
    fields.update(
        {key: (key, kind, default) for key, kind, default in builder_fields(option.builder)}
    )
    types = {
        **(get_type_hints(registry.base) if registry.base else {}),
        **{key: kind for key, kind, _ in fields.values()},
    }
    for key, value in option.defaults.items():  # the option's own defaults of shared fields
        fields[key] = (key, _omega_type(types.get(key, Any)), _default(value))
    camel = "".join(part.title() for part in f"{name}_{registry.group}".split("_"))
    bases = (registry.base,) if registry.base else ()
    return dataclasses.make_dataclass(f"{camel}Config", list(fields.values()), bases=bases)


def builder_fields(builder: Callable) -> list[tuple]:
    """(name, type, dataclass field) of the builder's config fields, mixins flattened."""
    out = []
    hints = _hints(builder)
    for p in _parameters(builder).values():
        mixin = _mixin(builder, p.name)
        if mixin is not None:
            kinds = get_type_hints(mixin)
            out += [
                (f.name, _omega_type(kinds[f.name]), _copy(f)) for f in dataclasses.fields(mixin)
            ]
        elif p.default is not p.empty:
            kind = _omega_type(hints.get(p.name, Any))
            if p.name not in hints and type(p.default) in (bool, float, str):  # unannotated
                kind = type(p.default)
            out.append((p.name, kind, _default(p.default)))
    return out


def _parameters(builder: Callable) -> Mapping[str, inspect.Parameter]:
    if inspect.isclass(builder):  # the constructor's own (metaclasses may hide it), no self
        return dict(list(inspect.signature(builder.__init__).parameters.items())[1:])
    return inspect.signature(builder).parameters


def _hints(builder: Callable) -> dict:
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        return get_type_hints(target)
    except Exception:  # an unresolvable forward reference: the evaluated annotations only
        params = _parameters(builder).values()
        return {p.name: p.annotation for p in params if not isinstance(p.annotation, str)}


def _mixin(builder: Callable, name: str) -> type | None:
    kind = _hints(builder).get(name)
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def _omega_type(kind: Any) -> Any:
    """The nearest annotation OmegaConf checks (tuples as lists; Any where it cannot)."""
    if kind in _PRIMITIVES or kind is Any:
        return kind
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, UnionType):  # optax's numeric unions are floats for a config
        rest = [a for a in args if a is not type(None)]
        inner = _omega_type(rest[0]) if len(rest) == 1 else (float if float in rest else Any)
        optional = type(None) in args and inner is not Any
        return Optional[inner] if optional else inner  # noqa: UP045  (OmegaConf needs it)
    if origin in (list, tuple, Sequence):
        inner = _omega_type(args[0]) if args else Any
        return list[inner] if inner in _PRIMITIVES else list[Any]
    return Any


def _default(value: Any):
    if isinstance(value, list | tuple):
        return field(default_factory=lambda v=tuple(value): list(v))
    if isinstance(value, dict):
        return field(default_factory=lambda v=dict(value): dict(v))
    return field(default=value)


def _copy(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory)
    return _default(f.default)


# ---------------------------------------------------------------------------------------------
# configs: dataclasses, frozen twins or plain mappings alike


def _get(cfg, key: str, default=None):
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _has(cfg, key: str) -> bool:
    return key in cfg if isinstance(cfg, Mapping) else hasattr(cfg, key)


def _keys(cfg) -> list[str]:
    if isinstance(cfg, Mapping):
        return list(cfg)
    return [f.name for f in dataclasses.fields(cfg)]


def _matches(value, wanted) -> bool:
    if isinstance(value, tuple | list | frozenset | set):
        return wanted in value
    return value == wanted


__all__ = ["Option", "Registry", "arguments", "builder_fields", "import_modules", "locate"]
