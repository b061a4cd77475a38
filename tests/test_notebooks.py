"""The notebooks (jupytext percent scripts) run top to bottom; their own asserts must hold."""

from __future__ import annotations

import runpy

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_NOTEBOOK_OUT", str(tmp_path))
    runpy.run_path(str(path), run_name="__main__")
    assert (tmp_path / "pgd_run.png").stat().st_size > 10_000 or path.stem != "saddles_and_sweeps"
