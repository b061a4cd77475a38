"""The dataset record, the `data` registry and what datasets share (split, corruption).

A data option is a function of its keyword arguments returning a `Dataset`; registered with
the task it poses (`DATASETS.register("blobs", task="classification")`). Mixins `Split`,
`LabelNoise` and `Outliers` are the shared fields of the datasets that take them, so
`data=teacher data.label_noise=0.1` (no labels to flip) fails at composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lossbench.errors import ConfigError
from lossbench.registry import Registry

DATASETS = Registry("data")


@dataclass(frozen=True)
class Dataset:
    """Arrays by name (`x`, `y`, ...) with a leading example axis, and what task they pose."""

    name: str
    task: str  # classification | regression | surface | embedding | sequence | multitask
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] = field(default_factory=dict)
    num_classes: int | None = None
    image_shape: tuple[int, ...] | None = None  # (H, W, C) when x rows are flattened images
    info: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return 0 if not self.train else len(next(iter(self.train.values())))

    @property
    def in_features(self) -> int:
        if "features" in self.info:
            return int(self.info["features"])
        return int(np.prod(self.train["x"].shape[1:])) if "x" in self.train else 0

    @property
    def target_dim(self) -> int | None:
        if self.task != "regression":
            return None
        return int(self.train["y"].shape[1])


@dataclass(frozen=True)
class Split:
    """One fixed draw and train / test split, independent of the training seed."""

    split_seed: int = 0
    test_fraction: float = 0.2
    standardize: bool = True  # features scaled by the training split's statistics

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.split_seed)

    def indices(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) indices of a random split of n examples."""
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError("data.test_fraction", self.test_fraction, "a number in (0, 1)")
        order = rng.permutation(n)
        n_test = int(round(self.test_fraction * n))
        return order[n_test:], order[:n_test]


@dataclass(frozen=True)
class LabelNoise:
    label_noise: float = 0.0  # fraction of training labels flipped to another class


@dataclass(frozen=True)
class Outliers:
    outlier_fraction: float = 0.0  # fraction of training targets corrupted
    outlier_scale: float = 10.0  # size of the corruption, in target standard deviations


def fraction(key: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"data.{key}", value, "a fraction in [0, 1]")
    return value


def positive(key: str, value):
    if value <= 0:
        raise ConfigError(f"data.{key}", value, "a positive number")
    return value


def standardize(train_x, test_x):
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train_x - mean) / std, (test_x - mean) / std


def exactly(fraction: float, n: int, rng) -> np.ndarray:
    """A boolean mask with exactly round(fraction * n) entries set, at random places."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, int(round(fraction * n)), replace=False)] = True
    return mask


def flip_labels(y, fraction: float, classes: int, rng):
    """Replace exactly round(fraction * n) labels by a different class drawn uniformly.

    Returns the labels and the indices flipped.
    """
    y = y.copy()
    flip = exactly(fraction, len(y), rng)
    y[flip] = (y[flip] + rng.integers(1, classes, flip.sum())) % classes
    return y, np.flatnonzero(flip)


def corrupt_targets(y, fraction: float, scale: float, rng):
    """Add +-scale standard deviations to exactly round(fraction * n) regression targets.

    Gross outliers, each output coordinate with its own random sign. Returns the targets and
    the indices corrupted.
    """
    y = y.copy()
    hit = exactly(fraction, len(y), rng)
    y[hit] += scale * y.std(0) * rng.choice([-1.0, 1.0], size=(hit.sum(), y.shape[1]))
    return y, np.flatnonzero(hit)


def make_dataset(cfg) -> Dataset:
    """The dataset the `data` config names (or its `_target_` builds), named after the option."""
    option, dataset = DATASETS.build(cfg)
    if not isinstance(dataset, Dataset):
        raise ConfigError("data._target_", option.name, "a builder returning lossbench.Dataset")
    return dataset if dataset.name else replace(dataset, name=option.name)
