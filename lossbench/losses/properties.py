"""The properties table: one row per loss, the declared design properties as columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lossbench.losses.base import LOSSES, PROPERTY_NAMES

COLUMNS = (
    "name",
    "task",
    "takes",
    "trainable",
    *PROPERTY_NAMES,
    "hyper",
    "source",
    "reference",
    "notes",
)
MARKDOWN_COLUMNS = tuple(c for c in COLUMNS if c != "notes")
TASK_ORDER = ("regression", "classification", "embedding", "sequence", "multitask")


def properties_table() -> pd.DataFrame:
    """One row per registered loss (grouped by task), columns `COLUMNS`; `none` (no loss:
    the model's output is the objective) is left out."""
    rows = []
    for loss in LOSSES.values():
        if loss.task == "surface":
            continue
        p = loss.properties
        row = {"name": loss.name, "task": loss.task, "takes": p.takes}
        row["trainable"] = loss.trainable
        row.update({key: getattr(p, key) for key in PROPERTY_NAMES})
        row.update(
            hyper=", ".join(loss.hyper), source=p.source, reference=p.reference, notes=p.notes
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    rank = {task: i for i, task in enumerate(TASK_ORDER)}
    table["_rank"] = table["task"].map(lambda t: rank.get(t, len(rank)))
    table = table.sort_values(["_rank", "takes", "name"], kind="stable").drop(columns="_rank")
    return table.reset_index(drop=True)


def _cell(value) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|")


def format_properties_table(columns: Sequence[str] | None = None) -> str:
    """The table as GitHub markdown (booleans as yes / no); notes left out by default."""
    columns = list(MARKDOWN_COLUMNS if columns is None else columns)
    table = properties_table()[columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
