"""Every notebook in notebooks/ (a jupytext percent script) executes top to bottom in a Jupyter
kernel without an error, its own asserts included, and its committed .ipynb is the executed
copy of the same code."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("execute", REPO / "notebooks" / "execute.py")
executor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(executor)

NOTEBOOKS = executor.notebook_sources(REPO / "notebooks")


def _code(notebook) -> list[str]:
    return [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]


def test_there_are_notebooks_and_each_is_paired():
    import jupytext

    assert {p.stem for p in NOTEBOOKS} >= {
        "saddles_and_sweeps",
        "sweep_comparison",
        "your_own_model",
        "landscape_study",
    }
    for source in NOTEBOOKS:
        paired = source.with_suffix(".ipynb")
        assert paired.is_file(), f"{paired} is missing: run `make notebooks`"
        executed = jupytext.read(paired)
        assert _code(executed) == _code(jupytext.read(source)), f"{paired} is stale"
        code_cells = [c for c in executed.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code_cells), f"{paired} is not executed"


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(source, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_NOTEBOOK_OUT", str(tmp_path))
    # tiny problems: compiling is nearly all their cost
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    notebook = executor.execute(source)  # raises CellExecutionError on any error
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert not errors
    if source.stem == "saddles_and_sweeps":
        assert (tmp_path / "pgd_run.png").stat().st_size > 10_000
