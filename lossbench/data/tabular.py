"""Classification and regression data: bundled scikit-learn sets and synthetic generators.

Every dataset is drawn from `data.split_seed` (not the training seed), so all runs of a sweep
see the same data. Features are standardized with the training split's statistics.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from lossbench.data.base import (
    DATASETS,
    Dataset,
    LabelNoise,
    Outliers,
    Split,
    corrupt_targets,
    flip_labels,
    fraction,
    positive,
    standardize,
)
from lossbench.errors import ConfigError


def finish(task, x, y, split: Split, rng, *, corrupt=None, num_classes=None, image_shape=None):
    """Split, standardize and corrupt (x, y) into a `Dataset` of `task`."""
    train, test = split.indices(len(x), rng)
    (xtr, ytr), (xte, yte) = (x[train], y[train]), (x[test], y[test])
    if split.standardize:
        xtr, xte = standardize(xtr, xte)
    info = {}
    if isinstance(corrupt, LabelNoise) and fraction("label_noise", corrupt.label_noise) > 0:
        ytr, info["corrupted"] = flip_labels(ytr, corrupt.label_noise, num_classes, rng)
    if isinstance(corrupt, Outliers) and fraction("outlier_fraction", corrupt.outlier_fraction):
        ytr, info["corrupted"] = corrupt_targets(
            ytr, corrupt.outlier_fraction, corrupt.outlier_scale, rng
        )
    label_dtype = np.int32 if task == "classification" else np.float32
    return Dataset(
        name="",
        task=task,
        train={"x": xtr.astype(np.float32), "y": ytr.astype(label_dtype)},
        test={"x": xte.astype(np.float32), "y": yte.astype(label_dtype)},
        num_classes=num_classes,
        image_shape=image_shape,
        info=info,
    )


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The arrays of scikit-learn's `load_digits()` (data, target), read from the file that
    scikit-learn ships, without importing it: `import sklearn.datasets` cost ~3 CPU-s, a
    third of a small run's process. `load_digits` itself where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    root = Path(spec.origin).parent if spec is not None and spec.origin else None
    path = root / "datasets" / "data" / "digits.csv.gz" if root is not None else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


@DATASETS.register("digits", task="classification")
def digits(*, split: Split, corrupt: LabelNoise) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""
    x, y = digits_arrays()
    rng = split.rng()
    return finish(
        "classification",
        x,
        y,
        split,
        rng,
        corrupt=corrupt,
        num_classes=10,
        image_shape=(8, 8, 1),
    )


def _sklearn_classes(loader_name: str):
    def load(*, split: Split, corrupt: LabelNoise) -> Dataset:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        classes = int(bunch.target.max()) + 1
        return finish(
            "classification", bunch.data, bunch.target, split, split.rng(), corrupt=corrupt,
            num_classes=classes,
        )  # fmt: skip

    load.__doc__ = f"scikit-learn's bundled `{loader_name}` (classification)."
    return load


for _name in ("iris", "wine", "breast_cancer"):
    DATASETS.register(_name, task="classification")(_sklearn_classes(f"load_{_name}"))


@DATASETS.register("diabetes", task="regression")
def diabetes(*, split: Split, corrupt: Outliers) -> Dataset:
    """scikit-learn's bundled `load_diabetes` (regression, target standardized)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    y = ((bunch.target - bunch.target.mean()) / bunch.target.std()).reshape(-1, 1)
    return finish("regression", bunch.data, y, split, split.rng(), corrupt=corrupt)


@DATASETS.register("blobs", task="classification")
def blobs(
    n: int = 1000,
    classes: int = 3,
    dim: int = 2,
    spread: float = 1.0,
    *,
    split: Split,
    corrupt: LabelNoise,
) -> Dataset:
    """Gaussian mixture: `classes` clusters in `dim` dimensions with std `spread`."""
    rng = split.rng()
    n, classes, dim = positive("n", n), positive("classes", classes), positive("dim", dim)
    if classes < 2:
        raise ConfigError("data.classes", classes, "at least 2")
    centers = rng.normal(0.0, 3.0, size=(classes, dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + spread * rng.normal(size=(n, dim))
    return finish("classification", x, y, split, rng, corrupt=corrupt, num_classes=classes)


@DATASETS.register("spirals", task="classification")
def spirals(n: int = 1000, spread: float = 1.0, *, split: Split, corrupt: LabelNoise) -> Dataset:
    """Two interleaved 2-D spirals (binary classification), noise std 0.05 x `spread`."""
    rng = split.rng()
    n = positive("n", n)
    y = rng.integers(0, 2, n)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    r = t / (3 * np.pi)
    angle = t + np.pi * y
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], 1)
    x += 0.05 * spread * rng.normal(size=x.shape)
    return finish("classification", x, y, split, rng, corrupt=corrupt, num_classes=2)


@DATASETS.register("xor", task="classification")
def xor(n: int = 1000, spread: float = 1.0, *, split: Split, corrupt: LabelNoise) -> Dataset:
    """2-D XOR: four Gaussian clusters at (+-1, +-1), label = sign(x1) != sign(x2)."""
    rng = split.rng()
    n = positive("n", n)
    corners = rng.choice([-1.0, 1.0], size=(n, 2))
    x = corners + 0.3 * spread * rng.normal(size=(n, 2))
    y = (corners[:, 0] != corners[:, 1]).astype(np.int32)
    return finish("classification", x, y, split, rng, corrupt=corrupt, num_classes=2)


@DATASETS.register("teacher", task="regression")
def teacher(
    n: int = 1000,
    dim: int = 10,
    hidden: int = 16,
    out_dim: int = 1,
    noise: float = 0.1,
    *,
    split: Split,
    corrupt: Outliers,
) -> Dataset:
    """Regression from a random one-hidden-layer tanh teacher network, plus Gaussian noise."""
    rng = split.rng()
    n, dim, hidden = positive("n", n), positive("dim", dim), positive("hidden", hidden)
    out_dim = positive("out_dim", out_dim)
    x = rng.normal(size=(n, dim))
    w1 = rng.normal(size=(dim, hidden)) / np.sqrt(dim)
    w2 = rng.normal(size=(hidden, out_dim)) / np.sqrt(hidden)
    y = np.tanh(x @ w1) @ w2
    y = y / y.std() + noise * rng.normal(size=y.shape)
    return finish("regression", x, y, split, rng, corrupt=corrupt)


@DATASETS.register("linear_teacher", task="regression")
def linear_teacher(
    n: int = 512,
    singular_values: tuple[float, ...] = (3.0, 2.0, 1.0, 0.5),
    noise: float = 0.0,
    split_seed: int = 0,
    *,
    corrupt: Outliers,
) -> Dataset:
    """Targets y = A x with chosen singular values on exactly white inputs (no test split).

    The setting of Saxe, McClelland & Ganguli (2014): a deep linear network learns the modes of A
    one by one, strongest first, with plateaus between them when started near zero.
    """
    rng = np.random.default_rng(split_seed)
    s = np.asarray(singular_values, dtype=np.float64)
    if s.size == 0 or np.any(s <= 0):
        raise ConfigError("data.singular_values", list(singular_values), "positive numbers")
    d, n = len(s), positive("n", n)
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
    y = x @ a.T + noise * rng.normal(size=(n, d))
    info = {"singular_values": s.tolist()}
    if fraction("outlier_fraction", corrupt.outlier_fraction) > 0:
        y, info["corrupted"] = corrupt_targets(
            y, corrupt.outlier_fraction, corrupt.outlier_scale, rng
        )
    train = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
    return Dataset(name="", task="regression", train=train, test={}, info=info)


@DATASETS.register("none", task="surface")
def none() -> Dataset:
    """For models that are their own objective (analytic surfaces): no data."""
    return Dataset(name="none", task="surface", train={}, test={})
