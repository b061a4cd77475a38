"""One registry per noun: every option composes with exactly its own keys; layers stay light."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from conftest import compose_config
from hydra.errors import ConfigCompositionException

from lossbench.errors import ConfigError
from lossbench.problem import build_problem
from lossbench.registry import Registry
from lossbench.schema import freeze, registries

GROUPS = registries()
OPTIONS = [
    (group, name)
    for group, registry in GROUPS.items()
    for name in registry
    if getattr(registry[name], "trainable", True)
]


def _fields(obj) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def _foreign_key(group: str, name: str) -> str | None:
    """A key some other option of the group has and this one does not."""
    own = _fields(GROUPS[group].schema(name))
    for other in GROUPS[group]:
        extra = sorted(_fields(GROUPS[group].schema(other)) - own)
        if extra:
            return extra[0]
    return None


@pytest.fixture(scope="module")
def composed_options() -> dict:
    """`(group, name) -> the group's node` for every option. Each composition selects an option
    of every group at once (what an option implies, the command line overrides), so the ~85
    options take ~25 compositions (~0.25 CPU-s each); each node is the one `group=name` alone
    composes to (checked for every option when this was written)."""
    names: dict[str, list[str]] = {}
    for group, name in OPTIONS:
        names.setdefault(group, []).append(name)
    nodes = {}
    for i in range(max(map(len, names.values()))):
        chosen = {group: among[i % len(among)] for group, among in names.items()}
        cfg = compose_config([f"{group}={name}" for group, name in chosen.items()])
        nodes.update({(group, name): getattr(cfg, group) for group, name in chosen.items()})
    return nodes


@pytest.mark.xdist_group("registry_options")  # the compositions shared, made once
@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_every_option_composes_with_only_its_own_keys(composed_options, group, name):
    node = composed_options[group, name]
    assert node.name == name
    assert _fields(node) == _fields(GROUPS[group].schema(name))
    foreign = _foreign_key(group, name)
    if foreign is not None:
        with pytest.raises(ConfigCompositionException, match=f"Could not override '{group}"):
            compose_config([f"{group}={name}", f"{group}.{foreign}=1"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=adam", "optimizer.momentum=0.9"],
        ["loss=mse", "loss.delta=5"],
        ["init=he_normal", "init.std=100"],
        ["model=cnn", "model.widths=[8]"],
        ["data=teacher", "data.label_noise=0.1"],
        ["model=himmelblau", "model.a=2"],  # himmelblau has no coefficients
    ],
)
def test_the_issue_examples_fail_at_composition(overrides):
    with pytest.raises(ConfigCompositionException, match=overrides[1].split("=")[0]):
        compose_config(overrides)


def test_schemas_hold_the_builders_arguments_and_the_shared_fields():
    optimizers, losses = GROUPS["optimizer"], GROUPS["loss"]
    shared = {"name", "lr", "schedule", "clip_norm", "weight_decay"}
    assert _fields(optimizers.schema("sgd")) == shared | {"momentum", "nesterov"}
    assert _fields(optimizers.schema("gd")) == shared
    assert {"b1", "b2", "eps"} <= _fields(optimizers.schema("adam")) - shared
    assert optimizers.schema("adam")().lr == 1e-3 and optimizers.schema("gd")().lr == 0.1
    assert _fields(losses.schema("huber")) == {"name", "l1", "l2", "delta"}
    assert _fields(GROUPS["model"].schema("monkey_saddle")) == {"name", "dim", "a"}
    assert _fields(GROUPS["data"].schema("none")) == {"name"}


def test_defaults_follow_the_task_and_options_select_what_they_need():
    assert compose_config(["data=teacher"]).loss.name == "mse"
    assert compose_config(["data=diabetes"]).loss.name == "mse"
    assert compose_config(["data=digit_views", "model=embedding_mlp"]).loss.name == "ntxent"
    surface = compose_config(["model=rosenbrock"])
    assert (surface.data.name, surface.loss.name, surface.init.name) == ("none", "none", "point")
    assert compose_config(["data=teacher", "loss=huber"]).loss.name == "huber"  # the CLI wins
    assert compose_config(["model=rosenbrock", "init.radius=0.1"]).init.radius == 0.1
    for overrides in (["data=teacher"], ["model=rosenbrock"], ["data=none", "model=quadratic"]):
        assert build_problem(freeze(compose_config(overrides))).param_count > 0


def test_a_surface_is_a_model_without_data():
    problem = build_problem(freeze(compose_config(["model=quadratic", "model.a=3"])))
    assert problem.data.train == {} and problem.loss_name == "none"
    import jax.numpy as jnp

    params = {"x": jnp.array([1.0, 2.0])}
    assert float(problem.loss(params, {})) == pytest.approx(0.5 * (3 * 1 + 1 * 4))
    assert problem.step_metrics(params) == {"x_0": 1.0, "x_1": 2.0}
    with pytest.raises(ConfigError, match="init.name"):  # weights to draw: none
        build_problem(freeze(compose_config(["model=quadratic", "init=he_normal"])))


def test_unknown_names_and_user_registrations():
    registry = Registry("thing")

    @registry.register("double", kind="toy")
    def double(x, factor: float = 2.0, flag: bool = False):
        return factor * x

    assert registry.names(kind="toy") == ["double"]
    schema = registry.schema("double")
    assert _fields(schema) == {"name", "factor", "flag"} and schema().factor == 2.0
    option, value = registry.build(schema(factor=3.0), x=2.0)
    assert (option.name, value) == ("double", 6.0)
    with pytest.raises(ConfigError, match=r"thing.name='triple' is not allowed: one of \['double'"):
        registry["triple"]
    target = {"_target_": "textwrap.indent", "prefix": "> "}  # context by name, the rest kept
    assert registry.build(target, text="a")[1] == "> a"
    with pytest.raises(ConfigError, match="thing._target_"):
        registry.resolve({"_target_": "no_such_module.f"})


def test_curvature_losses_models_pathology_do_not_import_hydra():
    code = (
        "import sys\n"
        "import lossbench.curvature, lossbench.losses, lossbench.models, lossbench.pathology\n"
        "import lossbench.data, lossbench.initializers, lossbench.optimizers, lossbench.tasks\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'})\n"
        "assert not heavy, heavy\n"
        "import lossbench\n"
        "assert callable(lossbench.compose) and callable(lossbench.run)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_import_graph_has_no_cycles():
    """Modules of lossbench import each other (at module level) without a cycle."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "lossbench"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only (not lazy imports)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        # a package's submodules import the package's __init__ first: not a cycle
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_options_are_stored_once_and_restored_when_the_store_lost_them():
    """`register_configs` runs before every composition: it stores each option once per
    process (converting ~150 schemas took ~0.3 s a call) and again when the store lost it."""
    import copy

    from hydra.core.config_store import ConfigStore

    from lossbench.schema import register_configs

    store = ConfigStore.instance()
    register_configs([])
    adam, schema = store.repo["optimizer"]["adam.yaml"], store.repo["schema"]["optimizer"]
    register_configs([])
    assert store.repo["optimizer"]["adam.yaml"] is adam
    # Hydra deep-copies its config repository per composition: the store is not copied
    assert copy.deepcopy(store) is store
    del store.repo["optimizer"]["adam.yaml"], schema["adam.yaml"]
    register_configs([])
    assert store.repo["optimizer"]["adam.yaml"] is not adam and "adam.yaml" in schema
    assert compose_config(["optimizer=adam", "optimizer.b1=0.8"]).optimizer.b1 == 0.8
