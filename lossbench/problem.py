"""Build a `Problem` from a frozen config: data, model, init, loss, optimizer as pure functions.

Every ingredient comes from its registry: the `data` option gives a dataset of some task, the
task's objective (`lossbench.tasks`) says what the model must output for the chosen loss, then
the model, its init and the optimizer are built. Nothing here knows a model family. Values are
checked next to their builders, raising `ConfigError` naming the key, the value and what is
allowed, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax

from lossbench import losses
from lossbench.data import Dataset, make_dataset
from lossbench.errors import ConfigError
from lossbench.initializers import make_init
from lossbench.models import Model, make_model
from lossbench.optimizers import Optimizer, make_optimizer
from lossbench.registry import arguments, import_modules
from lossbench.tasks import init_with_loss_params, objective_for, with_loss_params


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
    if not (getattr(loss_cfg, "l1", 0.0) or getattr(loss_cfg, "l2", 0.0)):
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
    init_params = make_init(cfg.init, model)
    if extra:
        init_params = init_with_loss_params(init_params, extra)
    predict, loss_on_outputs, output_metrics = objective.make(model)
    _check_trainer(cfg.trainer, data)
    optimizer = make_optimizer(cfg.optimizer, cfg.trainer.steps)
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
    )


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
