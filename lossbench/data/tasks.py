"""Datasets of the embedding, sequence and multitask tasks.

All are drawn once from `data.split_seed`, like every lossbench dataset, so every run of a
sweep sees the same examples. Minibatches index every array of `Dataset.train` the same way,
so each tuple (pair, triplet, two views) is stored as stacked inputs, one array per member.

    name              task        train arrays (leading axis: examples)
    digit_pairs       embedding   x1, x2 (n, 64); same (n,) 1 same class, 0 not (balanced)
    digit_triplets    embedding   anchor, positive (same class), negative (other class)
    digit_views       embedding   view1, view2: two augmentations of one digit; view_class
    digit_metric      embedding   all of the above (n of each): every embedding loss fits
    ctc_synthetic     sequence    x (n, T, K + 1) noisy frames; labels (n, L), label_paddings
    digits_multitask  multitask   x (n, 64); y class; ink (n, 1); odd (n,) digit parity
"""

from __future__ import annotations

import numpy as np

from lossbench.data.base import (
    DATASETS,
    Dataset,
    LabelNoise,
    Outliers,
    Split,
    exactly,
    fraction,
    positive,
    standardize,
)
from lossbench.data.tabular import digits_arrays
from lossbench.errors import ConfigError

DIGIT_SHAPE = (8, 8, 1)
DIGIT_CLASSES = 10
INT_ARRAYS = {"same": np.int32, "view_class": np.int32}
DROPOUT = 0.2  # digit_views: probability that a pixel of a view is set to 0 (the mean)

# Which embedding losses each stored form serves ({"takes": arrays it needs}).
FORMS = {
    "pairs": ("x1", "x2", "same"),
    "triplets": ("anchor", "positive", "negative"),
    "views": ("view1", "view2"),
}


def _digit_split(split: Split, rng):
    """Digits split into train / test: (x, y, raw x) each, x standardized by the train split."""
    x, y = digits_arrays()
    x, y = x.astype(np.float64), y.astype(np.int64)
    train, test = split.indices(len(x), rng)
    xtr, xte = x[train], x[test]
    if split.standardize:
        xtr, xte = standardize(xtr, xte)
    return (xtr, y[train], x[train]), (xte, y[test], x[test])


def _tuple_counts(n: int, split: Split) -> tuple[int, int]:
    """Training tuples = data.n; test tuples in the proportion data.test_fraction."""
    n = positive("n", n)
    f = split.test_fraction
    return n, max(1, int(round(n * f / (1.0 - f))))


def _other_of_class(y, anchors, same: bool, rng) -> np.ndarray:
    """For each anchor index, a random index of the same class (not itself) or another class."""
    order = np.argsort(y, kind="stable")  # indices grouped by class
    counts = np.bincount(y, minlength=DIGIT_CLASSES)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    classes = y[anchors]
    if same:
        rank = np.empty(len(y), dtype=np.int64)
        rank[order] = np.arange(len(y)) - offsets[y[order]]  # position within its class
        pick = np.floor(rng.random(len(anchors)) * (counts[classes] - 1)).astype(np.int64)
        pick += pick >= rank[anchors]  # skip the anchor itself
    else:
        classes = (classes + rng.integers(1, DIGIT_CLASSES, len(anchors))) % DIGIT_CLASSES
        pick = np.floor(rng.random(len(anchors)) * counts[classes]).astype(np.int64)
    return order[offsets[classes] + pick]


def _pairs(x, y, n, rng) -> dict:
    same = np.zeros(n, dtype=np.int32)
    same[: n // 2] = 1
    same = rng.permutation(same)
    left = rng.integers(0, len(x), n)
    right = np.where(
        same == 1, _other_of_class(y, left, True, rng), _other_of_class(y, left, False, rng)
    )
    return {"x1": x[left], "x2": x[right], "same": same}


def _triplets(x, y, n, rng) -> dict:
    anchor = rng.integers(0, len(x), n)
    positive = _other_of_class(y, anchor, True, rng)
    negative = _other_of_class(y, anchor, False, rng)
    return {"anchor": x[anchor], "positive": x[positive], "negative": x[negative]}


def _augment(images, noise, rng) -> np.ndarray:
    """One random view of each (standardized, flattened 8x8) digit.

    A shift by up to one pixel in each direction (zero filled), pixel dropout (probability
    `DROPOUT`, set to 0, the mean pixel) and Gaussian noise of std `noise`: the SimCLR recipe
    (Chen et al., 2020) cut down to 8x8 digits.
    """
    n = len(images)
    side = DIGIT_SHAPE[0]
    grid = images.reshape(n, side, side)
    padded = np.pad(grid, ((0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)
    rows = dy[:, None] + np.arange(side)[None, :]
    cols = dx[:, None] + np.arange(side)[None, :]
    shifted = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    view = shifted.reshape(n, -1)
    view = np.where(rng.random(view.shape) < DROPOUT, 0.0, view)
    return view + noise * rng.normal(size=view.shape)


def _views(x, y, n, noise, rng) -> dict:
    # every image once before any image twice (when n exceeds the number of images)
    idx = np.concatenate([rng.permutation(len(x)) for _ in range(-(-n // len(x)))])[:n]
    return {
        "view1": _augment(x[idx], noise, rng),
        "view2": _augment(x[idx], noise, rng),
        "view_class": y[idx],
    }


def _corrupt_pairs_and_triplets(arrays: dict, fraction: float, rng) -> dict:
    """Label noise on metric data: flip `same` of pairs; swap positive and negative of triplets.

    Exactly round(fraction * n) of each form's training tuples are corrupted.
    """
    arrays = dict(arrays)
    corrupted = {}
    if "same" in arrays:
        hit = exactly(fraction, len(arrays["same"]), rng)
        arrays["same"] = np.where(hit, 1 - arrays["same"], arrays["same"]).astype(np.int32)
        corrupted["pairs"] = np.flatnonzero(hit)
    if "anchor" in arrays:
        hit = exactly(fraction, len(arrays["anchor"]), rng)
        pos, neg = arrays["positive"], arrays["negative"]
        arrays["positive"] = np.where(hit[:, None], neg, pos)
        arrays["negative"] = np.where(hit[:, None], pos, neg)
        corrupted["triplets"] = np.flatnonzero(hit)
    return arrays, corrupted


def _metric(forms, n, noise, split: Split, label_noise: float) -> Dataset:
    """Digits as pairs / triplets / views: `n` training tuples drawn from the training images
    only; held-out tuples from the test images."""
    rng = split.rng()
    (xtr, ytr, _), (xte, yte, _) = _digit_split(split, rng)
    n_train, n_test = _tuple_counts(n, split)
    label_noise = fraction("label_noise", label_noise)
    if noise < 0:
        raise ConfigError("data.noise", noise, "a number >= 0 (view noise std)")
    splits = []
    for x, y, count in ((xtr, ytr, n_train), (xte, yte, n_test)):
        arrays = {}
        if "pairs" in forms:
            arrays.update(_pairs(x, y, count, rng))
        if "triplets" in forms:
            arrays.update(_triplets(x, y, count, rng))
        if "views" in forms:
            arrays.update(_views(x, y, count, noise, rng))
        splits.append({k: v.astype(INT_ARRAYS.get(k, np.float32)) for k, v in arrays.items()})
    train, test = splits
    info = {"forms": forms, "features": int(xtr.shape[1]), "images": len(xtr)}
    if label_noise > 0:
        train, info["corrupted"] = _corrupt_pairs_and_triplets(train, label_noise, rng)
    return Dataset("", "embedding", train, test, DIGIT_CLASSES, DIGIT_SHAPE, info)


@DATASETS.register("digit_pairs", task="embedding", implies={"loss": "contrastive"})
def digit_pairs(n: int = 1000, *, split: Split, corrupt: LabelNoise) -> Dataset:
    """Digit pairs with a same-class flag (balanced), for contrastive / cosine."""
    return _metric(("pairs",), n, 0.0, split, corrupt.label_noise)


@DATASETS.register("digit_triplets", task="embedding", implies={"loss": "triplet"})
def digit_triplets(n: int = 1000, *, split: Split, corrupt: LabelNoise) -> Dataset:
    """Digit triplets (anchor, positive of its class, negative of another), for triplet."""
    return _metric(("triplets",), n, 0.0, split, corrupt.label_noise)


@DATASETS.register("digit_views", task="embedding", implies={"loss": "ntxent"})
def digit_views(n: int = 5000, noise: float = 0.3, *, split: Split) -> Dataset:
    """Two augmentations of each digit (shift, 20% pixel dropout, noise std), for ntxent.

    Views are drawn once: n > the 1438 training images gives each image several view pairs,
    which keeps ntxent from memorising one fixed pair per image.
    """
    return _metric(("views",), n, noise, split, 0.0)


@DATASETS.register("digit_metric", task="embedding", implies={"loss": "triplet"})
def digit_metric(
    n: int = 5000, noise: float = 0.3, *, split: Split, corrupt: LabelNoise
) -> Dataset:
    """Pairs, triplets and views of digits at once: every embedding loss fits."""
    return _metric(("pairs", "triplets", "views"), n, noise, split, corrupt.label_noise)


def _segment(labels, seq_len, rng) -> np.ndarray:
    """Frame symbols (0 = silence) that spell `labels` over `seq_len` frames.

    Each symbol holds for at least one frame; a silent frame separates equal neighbours (so the
    collapsed frames spell the labels); the spare frames go at random to symbols and gaps.
    """
    n = len(labels)
    gap_min = np.zeros(n + 1, dtype=np.int64)
    gap_min[1:-1] = labels[1:] == labels[:-1]
    spare = seq_len - n - gap_min.sum()
    extra = rng.multinomial(spare, np.full(2 * n + 1, 1.0 / (2 * n + 1)))
    frames = []
    for i in range(n + 1):
        frames += [0] * int(gap_min[i] + extra[2 * i])
        if i < n:
            frames += [int(labels[i])] * int(1 + extra[2 * i + 1])
    return np.asarray(frames, dtype=np.int64)


@DATASETS.register("ctc_synthetic", task="sequence")
def ctc_synthetic(
    n: int = 1000,
    seq_len: int = 12,
    vocab: int = 5,
    noise: float = 0.2,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Noisy one-hot frames spelling a short symbol sequence, for CTC (Graves et al., 2006).

    Each example is a label sequence of 1 to `seq_len // 2` symbols from 1..`vocab`, held over
    random numbers of frames with optional silent frames (0) between them, `seq_len` frames in
    all. Inputs are one-hot frames (`vocab + 1` features, silence included) plus Gaussian noise
    of std `noise`; targets are the labels, right-padded (`label_paddings` 1.0 where
    padded). The alignment is not given: CTC must find it.
    """
    split = Split(split_seed, test_fraction, standardize=False)
    rng = split.rng()
    n, seq_len, vocab = positive("n", n), positive("seq_len", seq_len), positive("vocab", vocab)
    if seq_len < 2:
        raise ConfigError("data.seq_len", seq_len, "at least 2 frames")
    if noise < 0:
        raise ConfigError("data.noise", noise, "a number >= 0 (frame noise std)")
    max_len = seq_len // 2
    lengths = rng.integers(1, max_len + 1, n)
    labels = np.zeros((n, max_len), dtype=np.int32)
    frames = np.zeros((n, seq_len), dtype=np.int64)
    for i, length in enumerate(lengths):
        labels[i, :length] = rng.integers(1, vocab + 1, length)
        frames[i] = _segment(labels[i, :length], seq_len, rng)
    x = np.eye(vocab + 1)[frames] + noise * rng.normal(size=(n, seq_len, vocab + 1))
    paddings = (np.arange(max_len)[None, :] >= lengths[:, None]).astype(np.float32)
    arrays = {"x": x.astype(np.float32), "labels": labels, "label_paddings": paddings}
    train, test = split.indices(n, rng)
    return Dataset(
        name="",
        task="sequence",
        train={k: v[train] for k, v in arrays.items()},
        test={k: v[test] for k, v in arrays.items()},
        num_classes=vocab,
        info={"seq_len": seq_len, "vocab": vocab, "max_label_len": max_len, "features": vocab + 1},
    )


@DATASETS.register("digits_multitask", task="multitask")
def digits_multitask(*, split: Split, labels: LabelNoise, outliers: Outliers) -> Dataset:
    """Digits with three targets for the heads of a multi-task model.

    y: the class (0-9), for a "logits" head; ink: the image's mean raw pixel intensity,
    standardized by the training split (n, 1), for a "values" head; odd: the digit's parity
    (1 for odd), for a binary "score" head. `label_noise` flips class labels (and the parity
    with them); `outlier_fraction` corrupts ink targets, as for plain data.
    """
    rng = split.rng()
    (xtr, ytr, rawtr), (xte, yte, rawte) = _digit_split(split, rng)
    ink_tr, ink_te = rawtr.mean(1), rawte.mean(1)
    mean, std = ink_tr.mean(), ink_tr.std()
    ink_tr, ink_te = (ink_tr - mean) / std, (ink_te - mean) / std
    info = {"features": int(xtr.shape[1])}
    if fraction("label_noise", labels.label_noise) > 0:
        hit = exactly(labels.label_noise, len(ytr), rng)
        ytr = ytr.copy()
        ytr[hit] = (ytr[hit] + rng.integers(1, DIGIT_CLASSES, hit.sum())) % DIGIT_CLASSES
        info["corrupted"] = np.flatnonzero(hit)
    if fraction("outlier_fraction", outliers.outlier_fraction) > 0:
        hit = exactly(outliers.outlier_fraction, len(ink_tr), rng)
        scale = outliers.outlier_scale
        ink_tr = ink_tr + hit * scale * rng.choice([-1.0, 1.0], len(ink_tr))
        info["outliers"] = np.flatnonzero(hit)

    def arrays(x, y, ink):
        return {
            "x": x.astype(np.float32),
            "y": y.astype(np.int32),
            "ink": ink.reshape(-1, 1).astype(np.float32),
            "odd": (y % 2).astype(np.int32),
        }

    return Dataset(
        name="",
        task="multitask",
        train=arrays(xtr, ytr, ink_tr),
        test=arrays(xte, yte, ink_te),
        num_classes=DIGIT_CLASSES,
        image_shape=DIGIT_SHAPE,
        info=info,
    )
