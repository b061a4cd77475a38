"""Typed config schemas, registered in Hydra's ConfigStore.

Every config group (`data`, `model`, `init`, `loss`, `optimizer`, `trainer`, `probe`, `detect`)
has one dataclass here. A group option (`configs/optimizer/adam.yaml`) is merged onto it, so a
typo in a key or a value of the wrong type fails at compose time with Hydra's own message.
Each option names its implementation with a registry key, `name`, that the matching module
looks up (`lossbench.optimizers.OPTIMIZERS`, `lossbench.models.MODELS`, ...).

Checks beyond type (lr > 0, batch <= dataset size) happen once at build time
(`lossbench.problem`), raising `ConfigError` with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lossbench.errors import ConfigError as ConfigError  # noqa: F401  (re-export)


@dataclass
class DataConfig:
    name: str = MISSING
    n: int = 1000  # samples (synthetic data)
    classes: int = 3  # blobs
    dim: int = 2  # blobs input dimension / teacher input dimension
    spread: float = 1.0  # blobs cluster std; spirals / xor noise
    noise: float = 0.1  # teacher / linear_teacher target noise std
    out_dim: int = 1  # teacher output dimension
    hidden: int = 16  # teacher hidden width
    singular_values: list[float] = field(default_factory=lambda: [3.0, 2.0, 1.0, 0.5])
    test_fraction: float = 0.2
    split_seed: int = 0  # fixed data draw / split, independent of the training seed
    standardize: bool = True
    label_noise: float = 0.0  # fraction of training labels flipped (classification)
    outlier_fraction: float = 0.0  # fraction of corrupted training targets (regression)
    outlier_scale: float = 10.0  # size of the corruption, in target standard deviations
    seq_len: int = 12  # sequence tasks
    vocab: int = 5  # sequence tasks: symbols excluding the blank


@dataclass
class ModelConfig:
    name: str = MISSING
    widths: list[int] = field(default_factory=lambda: [64])
    activation: str = "tanh"
    depth: int = 2  # deep_linear: number of weight matrices
    width: int = 16  # deep_linear hidden width (null -> input dim)
    channels: list[int] = field(default_factory=lambda: [8, 16])  # cnn
    bias: bool = True
    dim: int = 2  # analytic surfaces: number of coordinates
    a: float = 1.0  # analytic surface coefficients
    b: float = 1.0
    embed_dim: int = 16  # embedding networks / sequence models


@dataclass
class InitConfig:
    name: str = MISSING
    scale: float = 1.0  # multiplies every weight after drawing it
    std: float = 1.0  # `normal`
    low: float = -1.0  # `uniform`
    high: float = 1.0
    value: Any = 0.0  # `constant` (float) or `point` (list of coordinates)
    radius: float = 0.0  # `point`: uniform perturbation from a ball of this radius
    bias: float | None = None  # biases: zero unless a value is given


@dataclass
class LossConfig:
    name: str = MISSING
    delta: float = 1.0  # huber
    quantile: float = 0.5  # quantile (pinball)
    scale: float = 1.0  # welsch / log_cosh scale
    gamma: float = 2.0  # focal
    margin: float = 1.0  # hinge family, contrastive, triplet
    temperature: float = 0.5  # ntxent
    variant: str = "crammer_singer"  # multiclass_hinge: crammer_singer | weston_watkins
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # multitask fixed weights
    learned_weights: bool = False  # multitask: Kendall, Gal & Cipolla (2018) uncertainty
    tasks: list[str] = field(default_factory=lambda: ["cross_entropy", "mse"])  # multitask
    l1: float = 0.0  # penalty on the weights, added to any loss
    l2: float = 0.0


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | warmup_cosine | step
    warmup_steps: int = 0
    decay_steps: int | None = None  # null -> trainer.steps
    end_value: float = 0.0  # as a fraction of the peak lr
    boundaries: list[int] = field(default_factory=list)  # step: where the lr is multiplied
    factor: float = 0.1  # step: the multiplier


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    decay: float = 0.9  # rmsprop
    weight_decay: float = 0.0
    clip_norm: float | None = None  # global-norm clipping
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # saddle-escaping optimizers
    radius: float = 0.1  # pgd perturbation ball radius / sam rho
    g_thres: float = 1e-3  # pgd: perturb when ||g|| <= g_thres
    t_thres: int = 10  # pgd: at most one perturbation per t_thres steps
    noise: float = 0.01  # noisy_gd: eta
    noise_decay: float = 0.55  # noisy_gd: gamma
    rank: int = 10  # saddle_free_newton: Krylov dimension
    damping: float = 1e-3  # saddle_free_newton


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
    save_params: bool = True  # final parameters to checkpoint/ (orbax)


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
    warm_start: bool = True


@dataclass
class DetectConfig:
    """Thresholds of the regime diagnosis (`lossbench.pathology`, whose docstring has the rules).

    Scales are the run's own (per seed, before any divergence): g* = max ||g|| over the probes,
    c* = max |lambda| over the probes, R = max - min of the probed loss.
    """

    name: str = "default"
    grad_tol: float = 1e-3  # small gradient: ||g|| <= grad_tol * g* ...
    grad_abs: float = 1e-6  # ... or ||g|| <= grad_abs (a run that sits at a critical point)
    neg_tol: float = 1e-3  # certain negative curvature: lambda_min < -max(neg_tol * c*, curv_abs)
    flat_tol: float = 1e-3  # curvature near zero: every |lambda| <= max(flat_tol * c*, curv_abs)
    curv_abs: float = 1e-6  # absolute floor of both curvature tolerances
    plateau_window: int = 3  # probes per window of the stall test
    # stall: (max - min loss over the window) / steps <= plateau_drop * the run's fastest
    # net loss drop per step over any window
    plateau_drop: float = 0.01
    plateau_gap: float = 0.1  # far above: loss - (lowest loss from here on) > plateau_gap * R
    eos_margin: float = 0.1  # edge of stability: lambda_max >= (1 - eos_margin) * eos_threshold
    oscillation_window: int = 3  # probes per window of the oscillation test
    # oscillation: loss drop per step / (max ||g||^2 over the window [* lr, when known]) <=
    # oscillation_efficiency * the best such ratio of the run (a failed Armijo test)
    oscillation_efficiency: float = 0.05
    blowup: float = 1e6  # divergence: loss > blowup * max(1, |initial loss|), or non-finite


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    init: InitConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    probe: ProbeConfig = MISSING
    detect: DetectConfig = MISSING
    study: str = "default"  # a label carried into results


def register_configs() -> None:
    """Register the root schema as `base_config`; group options merge onto its typed fields."""
    ConfigStore.instance().store(name="base_config", node=Config)


@cache
def _frozen_twin(cls: type) -> type:
    fields = [(f.name, Any) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True)


def freeze(obj: Any) -> Any:
    """Turn schema dataclasses (and lists) into frozen, hashable twins, safe to close over."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        twin = _frozen_twin(type(obj))
        return twin(**{f.name: freeze(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    if isinstance(obj, list | tuple):
        return tuple(freeze(v) for v in obj)
    if isinstance(obj, dict):
        return tuple(sorted((k, freeze(v)) for k, v in obj.items()))
    return obj
