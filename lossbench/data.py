"""Datasets: bundled scikit-learn sets and synthetic generators, as arrays held once on device.

Every dataset is drawn from `data.split_seed` (not the training seed), so all runs of a sweep
see the same data. Features are standardized with the training split's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lossbench.errors import ConfigError


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
        return int(np.prod(self.train["x"].shape[1:])) if "x" in self.train else 0

    @property
    def target_dim(self) -> int | None:
        if self.task != "regression":
            return None
        return int(self.train["y"].shape[1])


def _split(x, y, cfg, rng):
    n = len(x)
    n_test = int(round(cfg.test_fraction * n))
    order = rng.permutation(n)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def _standardize(train_x, test_x):
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train_x - mean) / std, (test_x - mean) / std


def _exactly(fraction, n, rng):
    """A boolean mask with exactly round(fraction * n) entries set, at random places."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, int(round(fraction * n)), replace=False)] = True
    return mask


def _flip_labels(y, fraction, classes, rng):
    """Replace exactly round(fraction * n) labels by a different class drawn uniformly.

    Returns the labels and the indices flipped.
    """
    y = y.copy()
    flip = _exactly(fraction, len(y), rng)
    y[flip] = (y[flip] + rng.integers(1, classes, flip.sum())) % classes
    return y, np.flatnonzero(flip)


def _corrupt_targets(y, fraction, scale, rng):
    """Add +-scale standard deviations to exactly round(fraction * n) regression targets.

    Gross outliers, each output coordinate with its own random sign. Returns the targets and
    the indices corrupted.
    """
    y = y.copy()
    hit = _exactly(fraction, len(y), rng)
    y[hit] += scale * y.std(0) * rng.choice([-1.0, 1.0], size=(hit.sum(), y.shape[1]))
    return y, np.flatnonzero(hit)


def _check_corruption(cfg, name, task):
    """data.label_noise / data.outlier_fraction: fractions, and only where they act."""
    for key, applies, what in (
        ("label_noise", "classification", "it flips class labels"),
        ("outlier_fraction", "regression", "it corrupts regression targets"),
    ):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"data.{key}", value, "a fraction in [0, 1]")
        if value > 0 and task != applies:
            raise ConfigError(f"data.{key}", value, f"0 for {task} data {name!r} ({what})")


def _finish(name, task, x, y, cfg, rng, *, num_classes=None, image_shape=None, info=None):
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError("data.test_fraction", cfg.test_fraction, "a number in (0, 1)")
    (xtr, ytr), (xte, yte) = _split(x, y, cfg, rng)
    if cfg.standardize:
        xtr, xte = _standardize(xtr, xte)
    _check_corruption(cfg, name, task)
    info = dict(info or {})
    if cfg.label_noise > 0:
        ytr, info["corrupted"] = _flip_labels(ytr, cfg.label_noise, num_classes, rng)
    if cfg.outlier_fraction > 0:
        ytr, info["corrupted"] = _corrupt_targets(ytr, cfg.outlier_fraction, cfg.outlier_scale, rng)
    label_dtype = np.int32 if task == "classification" else np.float32
    return Dataset(
        name=name,
        task=task,
        train={"x": xtr.astype(np.float32), "y": ytr.astype(label_dtype)},
        test={"x": xte.astype(np.float32), "y": yte.astype(label_dtype)},
        num_classes=num_classes,
        image_shape=image_shape,
        info=info,
    )


def _positive(cfg, key):
    value = getattr(cfg, key)
    if value <= 0:
        raise ConfigError(f"data.{key}", value, "a positive number")
    return value


def digits(cfg) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(cfg.split_seed)
    return _finish(
        "digits",
        "classification",
        bunch.data,
        bunch.target,
        cfg,
        rng,
        num_classes=10,
        image_shape=(8, 8, 1),
    )


def _sklearn_table(loader_name: str, task: str) -> Callable:
    def load(cfg) -> Dataset:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        rng = np.random.default_rng(cfg.split_seed)
        y = bunch.target
        classes = int(y.max()) + 1 if task == "classification" else None
        if task == "regression":
            y = ((y - y.mean()) / y.std()).reshape(-1, 1)
        return _finish(
            loader_name.removeprefix("load_"), task, bunch.data, y, cfg, rng, num_classes=classes
        )

    load.__doc__ = f"scikit-learn's bundled `{loader_name}` ({task})."
    return load


def blobs(cfg) -> Dataset:
    """Gaussian mixture: `classes` clusters in `dim` dimensions with std `spread`."""
    rng = np.random.default_rng(cfg.split_seed)
    n, classes, dim = _positive(cfg, "n"), _positive(cfg, "classes"), _positive(cfg, "dim")
    if classes < 2:
        raise ConfigError("data.classes", classes, "at least 2")
    centers = rng.normal(0.0, 3.0, size=(classes, dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + cfg.spread * rng.normal(size=(n, dim))
    return _finish("blobs", "classification", x, y, cfg, rng, num_classes=classes)


def spirals(cfg) -> Dataset:
    """Two interleaved 2-D spirals (binary classification), noise std 0.05 x `spread`."""
    rng = np.random.default_rng(cfg.split_seed)
    n = _positive(cfg, "n")
    y = rng.integers(0, 2, n)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    r = t / (3 * np.pi)
    angle = t + np.pi * y
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], 1)
    x += 0.05 * cfg.spread * rng.normal(size=x.shape)
    return _finish("spirals", "classification", x, y, cfg, rng, num_classes=2)


def xor(cfg) -> Dataset:
    """2-D XOR: four Gaussian clusters at (+-1, +-1), label = sign(x1) != sign(x2)."""
    rng = np.random.default_rng(cfg.split_seed)
    n = _positive(cfg, "n")
    corners = rng.choice([-1.0, 1.0], size=(n, 2))
    x = corners + 0.3 * cfg.spread * rng.normal(size=(n, 2))
    y = (corners[:, 0] != corners[:, 1]).astype(np.int32)
    return _finish("xor", "classification", x, y, cfg, rng, num_classes=2)


def teacher(cfg) -> Dataset:
    """Regression from a random one-hidden-layer tanh teacher network, plus Gaussian noise."""
    rng = np.random.default_rng(cfg.split_seed)
    n, dim, hidden = _positive(cfg, "n"), _positive(cfg, "dim"), _positive(cfg, "hidden")
    out_dim = _positive(cfg, "out_dim")
    x = rng.normal(size=(n, dim))
    w1 = rng.normal(size=(dim, hidden)) / np.sqrt(dim)
    w2 = rng.normal(size=(hidden, out_dim)) / np.sqrt(hidden)
    y = np.tanh(x @ w1) @ w2
    y = y / y.std() + cfg.noise * rng.normal(size=y.shape)
    return _finish("teacher", "regression", x, y, cfg, rng)


def linear_teacher(cfg) -> Dataset:
    """Targets y = A x with chosen singular values on exactly white inputs.

    The setting of Saxe, McClelland & Ganguli (2014): a deep linear network learns the modes of A
    one by one, strongest first, with plateaus between them when started near zero.
    """
    rng = np.random.default_rng(cfg.split_seed)
    s = np.asarray(cfg.singular_values, dtype=np.float64)
    if s.size == 0 or np.any(s <= 0):
        raise ConfigError("data.singular_values", list(cfg.singular_values), "positive numbers")
    d, n = len(s), _positive(cfg, "n")
    if n < 2 * d:
        raise ConfigError("data.n", n, f"at least {2 * d} (twice the number of singular values)")
    x = rng.normal(size=(n, d))
    x -= x.mean(0)
    cov = x.T @ x / n
    evals, evecs = np.linalg.eigh(cov)
    x = x @ evecs @ np.diag(evals**-0.5) @ evecs.T  # whitened: x.T x / n = I
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = u @ np.diag(s) @ v.T
    y = x @ a.T + cfg.noise * rng.normal(size=(n, d))
    info = {"singular_values": s.tolist()}
    _check_corruption(cfg, "linear_teacher", "regression")
    if cfg.outlier_fraction > 0:
        y, info["corrupted"] = _corrupt_targets(y, cfg.outlier_fraction, cfg.outlier_scale, rng)
    ds = Dataset(
        name="linear_teacher",
        task="regression",
        train={"x": x.astype(np.float32), "y": y.astype(np.float32)},
        test={},
        info=info,
    )
    return ds


def no_data(cfg) -> Dataset:
    """For analytic surfaces: the parameters are the point, there is no data."""
    _check_corruption(cfg, "none", "surface")
    return Dataset(name="none", task="surface", train={}, test={})


DATASETS: dict[str, Callable] = {
    "digits": digits,
    "blobs": blobs,
    "spirals": spirals,
    "xor": xor,
    "teacher": teacher,
    "linear_teacher": linear_teacher,
    "iris": _sklearn_table("load_iris", "classification"),
    "wine": _sklearn_table("load_wine", "classification"),
    "breast_cancer": _sklearn_table("load_breast_cancer", "classification"),
    "diabetes": _sklearn_table("load_diabetes", "regression"),
    "none": no_data,
}


def _task_dataset(name: str) -> Callable:
    """A builder from `lossbench.tasks.datasets` (embedding, sequence, multitask), imported late."""

    def load(cfg) -> Dataset:
        from lossbench.tasks.datasets import TASK_DATASETS

        return TASK_DATASETS[name](cfg)

    return load


DATASETS.update(
    {
        name: _task_dataset(name)
        for name in (
            "digit_pairs",
            "digit_triplets",
            "digit_views",
            "digit_metric",
            "ctc_synthetic",
            "digits_multitask",
        )
    }
)


def make_dataset(cfg) -> Dataset:
    if cfg.name not in DATASETS:
        raise ConfigError("data.name", cfg.name, f"one of {sorted(DATASETS)}")
    return DATASETS[cfg.name](cfg)
