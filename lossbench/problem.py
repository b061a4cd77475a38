"""Build a `Problem` from a frozen config: data, model, init, loss, optimizer as pure functions.

Every ingredient comes from its registry: the `data` option gives a dataset of some task, the
task's objective (`lossbench.tasks`) says what the model must output for the chosen loss, then
the model, its init and the optimizer are built. Nothing here knows a model family. Values are
checked next to their builders, raising `ConfigError` naming the key, the value and what is
allowed, before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from lossbench import losses
from lossbench.data import Dataset, make_dataset
from lossbench.errors import ConfigError, is_traced
from lossbench.initializers import make_init
from lossbench.models import Model, make_model
from lossbench.optimizers import Optimizer, make_optimizer
from lossbench.registry import arguments, import_modules
from lossbench.tasks import init_with_loss_params, objective_for, with_loss_params

# config groups whose numbers can be traced (Problem.at): the optimizer's, the init's and the
# loss's hyper-parameters (huber's delta, focal's gamma, label smoothing, l1 / l2 penalties)
FUSED_GROUPS = ("optimizer", "init", "loss")


def traceable(path: str, value: Any) -> bool:
    """A value a program can take as an input: a float of an `optimizer`, `init` or `loss`
    option (`FUSED_GROUPS`)."""
    return path.split(".")[0] in FUSED_GROUPS and type(value) is float


def flat_record(record: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config record as {dotted path: value} (lists as tuples, hashable)."""
    out = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_record(value, f"{path}."))
        else:
            out[path] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class Problem:
    """Everything training needs, as plain arrays and pure functions of `(params, batch)`.

    `loss(params, batch) = loss_on_outputs(predict(params, batch), batch) + penalty(params)`;
    the split into `predict` and `loss_on_outputs` is what the Gauss-Newton probe needs.
    """

    data: Dataset
    model: Model
    init_params: Callable[[jax.Array], Any]
    predict: Callable  # (params, batch) -> outputs (any pytree)
    loss_on_outputs: Callable  # (outputs, batch) -> scalar, the mean per-example loss
    output_metrics: Callable  # (outputs, batch) -> dict of scalars (accuracy where it applies)
    penalty: Callable | None  # params -> scalar weight penalty, or None
    optimizer: Optimizer
    loss_name: str
    rebuild: Callable | None = None  # (values) -> {field: rebuilt part} at other values

    @property
    def param_count(self) -> int:
        return self.model.param_count

    def loss_and_outputs(self, params, batch):
        """The training objective and the model outputs it was computed from."""
        outputs = self.predict(params, batch)
        value = self.loss_on_outputs(outputs, batch)
        if self.penalty is not None:
            value = value + self.penalty(params)
        return value, outputs

    def loss(self, params, batch):
        return self.loss_and_outputs(params, batch)[0]

    def metrics(self, params, batch) -> dict:
        value, outputs = self.loss_and_outputs(params, batch)
        return {"loss": value, **self.output_metrics(outputs, batch)}

    def at(self, values: Mapping[str, Any]) -> Problem:
        """This problem with `optimizer.*` / `init.*` / `loss.*` config values replaced
        (dotted path -> value): the optimizer, the init and the loss built again from them.
        A fused sweep calls it inside the compiled program with traced values, one per job."""
        if not values:
            return self
        return dataclasses.replace(self, **self.rebuild(values))

    def state_layout(self, values: Mapping[str, float] | None = None) -> tuple:
        """The tree structure, shapes and dtypes of the parameters and the optimizer state
        (what a checkpoint holds), with `values` (dotted path -> number) traced; abstract
        (`jax.eval_shape`), nothing is computed. A momentum of 0 has no trace, a traced one has."""

        def init(key, values):
            at = self.at(values)
            params = at.init_params(key)
            return params, at.optimizer.tx.init(params)

        traced = {path: jnp.float32(value) for path, value in (values or {}).items()}
        leaves, tree = jax.tree_util.tree_flatten(jax.eval_shape(init, jax.random.key(0), traced))
        return tree, tuple((leaf.shape, leaf.dtype) for leaf in leaves)

    def step_metrics(self, params) -> dict:
        """Extra per-step metrics the model declares (a surface's coordinates x_0, x_1, ...)."""
        return self.model.step_metrics(params)


def make_loss(cfg) -> losses.Loss:
    """The loss record the `loss` config selects: a registered loss, or a user's
    `(outputs, batch, **arguments) -> per-example losses` given by `_target_`."""
    target = getattr(cfg, "_target_", None)
    if target is None:
        return losses.check_loss_config(cfg)
    option = losses.LOSSES.resolve(cfg)
    if isinstance(option, losses.Loss):
        return option
    bound = arguments(option, cfg, {}, skip=("l1", "l2"))  # its arguments, bound once
    properties = losses.LossProperties(purpose="any", takes="batch", source=str(target))
    return losses.Loss("loss", option.name, partial(option.builder, **bound), properties=properties)


def _weight_penalty(loss_cfg) -> Callable | None:
    weights = (getattr(loss_cfg, "l1", 0.0), getattr(loss_cfg, "l2", 0.0))
    if not any(is_traced(w) or w for w in weights):
        return None
    return lambda params: losses.penalty(params, loss_cfg)


def build_problem(cfg) -> Problem:
    """Check and build everything a run needs from the (frozen) config."""
    import_modules(getattr(cfg, "imports", ()))
    data = make_dataset(cfg.data)
    loss = make_loss(cfg.loss)
    objective = objective_for(data, loss, cfg.loss)
    model = make_model(cfg.model, data, objective.out_features)
    extra = loss.init_extra(cfg.loss)  # the loss's own trainable parameters (multitask)
    if extra:
        model = with_loss_params(model, extra)

    def make_init_params(init_cfg):
        init_params = make_init(init_cfg, model)
        return init_with_loss_params(init_params, extra) if extra else init_params

    init_params = make_init_params(cfg.init)
    predict, loss_on_outputs, output_metrics = objective.make(model)
    _check_trainer(cfg.trainer, data)
    optimizer = make_optimizer(cfg.optimizer, cfg.trainer.steps)

    def rebuild(values: Mapping[str, Any]) -> dict:
        unknown = [k for k in values if k.split(".")[0] not in FUSED_GROUPS]
        if unknown:
            raise ValueError(f"only {FUSED_GROUPS} values can change inside a program: {unknown}")
        changed = with_values(cfg, values)
        groups = {k.split(".")[0] for k in values}
        parts: dict[str, Any] = {}
        if "optimizer" in groups:
            parts["optimizer"] = make_optimizer(changed.optimizer, cfg.trainer.steps)
        if "init" in groups:
            parts["init_params"] = make_init_params(changed.init)
        if "loss" in groups:
            # a registered loss reads its hyper-parameters from the config at each call; a
            # user's `_target_` loss has them bound when it is made
            changed_loss = make_loss(changed.loss) if hasattr(cfg.loss, "_target_") else loss
            made = objective_for(data, changed_loss, changed.loss).make(model)
            parts.update(zip(("predict", "loss_on_outputs", "output_metrics"), made, strict=True))
            parts["penalty"] = _weight_penalty(changed.loss)
        return parts

    return Problem(
        data=data,
        model=model,
        init_params=init_params,
        predict=predict,
        loss_on_outputs=loss_on_outputs,
        output_metrics=output_metrics,
        penalty=_weight_penalty(cfg.loss),
        optimizer=optimizer,
        loss_name=loss.name,
        rebuild=rebuild,
    )


def with_values(cfg: Any, values: Mapping[str, Any]) -> Any:
    """The frozen config `cfg` with the dotted paths of `values` set (`{"optimizer.lr": 0.1}`)."""
    for path, value in values.items():
        cfg = _replace_path(cfg, path.split("."), value)
    return cfg


def _replace_path(node: Any, keys: list[str], value: Any) -> Any:
    head, *rest = keys
    new = _replace_path(getattr(node, head), rest, value) if rest else value
    return dataclasses.replace(node, **{head: new})


def _check_trainer(t, data: Dataset):
    if t.steps <= 0:
        raise ConfigError("trainer.steps", t.steps, "a positive integer")
    if t.log_every <= 0:
        raise ConfigError("trainer.log_every", t.log_every, "a positive integer")
    if t.seeds < 1:
        raise ConfigError("trainer.seeds", t.seeds, "an integer >= 1")
    if t.chunk <= 0:
        raise ConfigError("trainer.chunk", t.chunk, "a positive integer")
    # data with nothing to batch (a model that is its own loss) ignores the batch size
    if t.batch_size is not None and data.train and not 0 < t.batch_size <= data.n_train:
        raise ConfigError(
            "trainer.batch_size",
            t.batch_size,
            f"null (full batch) or an integer in [1, {data.n_train}] (the training set size)",
        )
