"""Datasets, one registry (`DATASETS`): classification / regression sets and generators
(`tabular`), the embedding, sequence and multitask sets (`tasks`) and `none` for models that
are their own objective. Register your own with `@lossbench.data.register("name", task=...)`.
"""

from lossbench.data import tabular, tasks  # noqa: F401  (registers the options)
from lossbench.data.base import (
    DATASETS,
    Dataset,
    LabelNoise,
    Outliers,
    Split,
    make_dataset,
)

register = DATASETS.register

__all__ = ["DATASETS", "Dataset", "LabelNoise", "Outliers", "Split", "make_dataset", "register"]
