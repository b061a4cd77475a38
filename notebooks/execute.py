"""Execute the jupytext notebooks of this folder in a Jupyter kernel and save each as its paired
.ipynb, outputs and figures kept (so they read on a code host without running).

    .venv/bin/python notebooks/execute.py                      # every notebook
    .venv/bin/python notebooks/execute.py notebooks/NAME.py    # some
    make notebooks                                             # the same, every notebook

A notebook is a `.py` file here with a jupytext header (percent format). Execution stops at the
first cell that raises, as the tests do (tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 1200  # per cell


def notebook_sources(folder: Path = HERE) -> list[Path]:
    """The jupytext percent scripts in `folder` (files whose header names jupytext)."""
    return sorted(p for p in folder.glob("*.py") if "jupytext:" in p.read_text()[:400])


def execute(source: Path, timeout: int = TIMEOUT_S):
    """The notebook of `source`, executed top to bottom in a fresh python3 kernel whose working
    directory is the notebook's folder; raises nbclient's CellExecutionError on an error."""
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(source).parent)}},
    )
    client.execute()
    return notebook


def main(argv: list[str]) -> int:
    sources = [Path(a) for a in argv] or notebook_sources()
    for source in sources:
        target = source.with_suffix(".ipynb")
        print(f"executing {source} ...", flush=True)
        notebook = execute(source)
        notebook.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        import jupytext

        jupytext.write(notebook, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
