"""`landscape/<name>.npz` and its figures in a run directory, written atomically.

A run directory belongs to its run: a file is overwritten only if lossbench wrote it, as
listed in `landscape/.lossbench_written`; anything else stops the write with an error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

LANDSCAPE_DIR = "landscape"
MANIFEST = ".lossbench_written"


def _written(folder: Path) -> set[str]:
    path = folder / MANIFEST
    return set(path.read_text().split()) if path.exists() else set()


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def landscape_files(name: str, result: dict) -> list[str]:
    """The file names `write_landscape` writes for `result`."""
    names = [f"{name}.npz"]
    if result["kind"] == "line":
        return [*names, f"{name}.png"]
    names += [f"{name}_contour.png", f"{name}_surface.png"]
    if "lambda_max" in result:
        names.append(f"{name}_curvature.png")
    return names


def check_writable(run_dir: str | Path, name: str, result: dict) -> None:
    """Raise ValueError if a file `write_landscape` would write exists and is not lossbench's."""
    folder = Path(run_dir) / LANDSCAPE_DIR
    ours = _written(folder)
    for file in landscape_files(name, result):
        if (folder / file).exists() and file not in ours:
            raise ValueError(
                f"name={name!r} is not allowed: {folder / file} exists and lossbench did not "
                "write it; pass another name="
            )


def write_landscape(run_dir: str | Path, name: str, result: dict, figures: bool = True) -> list:
    """Write `landscape/<name>.npz` (plain arrays, no pickle) and its figures; return paths."""
    import matplotlib.pyplot as plt

    from lossbench.landscape import figures as figs

    check_writable(run_dir, name, result)
    folder = Path(run_dir) / LANDSCAPE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = landscape_files(name, result) if figures else [f"{name}.npz"]
    ours = _written(folder) | set(files)
    _atomic(folder / MANIFEST, lambda h: h.write("\n".join(sorted(ours)).encode() + b"\n"))
    arrays = {k: np.asarray(v) for k, v in result.items()}
    _atomic(folder / files[0], lambda h: np.savez(h, **arrays))
    drawings = {
        f"{name}.png": lambda: figs.plot_line(result),
        f"{name}_contour.png": lambda: figs.plot_contour(result),
        f"{name}_surface.png": lambda: figs.plot_surface(result),
        f"{name}_curvature.png": lambda: figs.plot_curvature(result),
    }
    for file in files[1:]:
        fig = drawings[file]()
        _atomic(folder / file, lambda h, fig=fig: fig.savefig(h, dpi=120, format="png"))
        plt.close(fig)
    return [folder / f for f in files]


def load_landscape(path: str | Path) -> dict:
    """A saved landscape as a dict (0-d arrays become Python scalars / strings)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}
