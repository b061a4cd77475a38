"""`lossbench landscape RUN_DIR kind=filter|eigen|pca|line [key=value ...]`.

Writes `RUN_DIR/landscape/<name>.npz` and its figures (see `compute_landscape` for the keys).
A bad argument exits 2 with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lossbench.landscape.compute import KINDS, compute_landscape
from lossbench.landscape.directions import ONE_D
from lossbench.landscape.files import check_writable, write_landscape

USAGE = (
    "usage: lossbench landscape RUN_DIR kind=filter|eigen|pca|line [grid=51 span=1.0 "
    "other=RUN_DIR2 seed=0 curvature=0 lanczos_steps=20 key=0 chunk=AUTO extend=0 bezier=0 "
    "one_d=zero name=KIND]"
)


def _int(low: int):
    return (int, lambda v: v >= low, f"an integer >= {low}")


OPTIONS = {
    "kind": (str, lambda v: v in KINDS, f"one of {list(KINDS)}"),
    "grid": _int(3),
    "span": (float, lambda v: v > 0, "a positive number"),
    "other": (str, lambda v: (Path(v) / ".hydra").is_dir(), "a run directory (with .hydra/)"),
    "seed": _int(0),
    "curvature": _int(0),
    "lanczos_steps": _int(1),
    "key": _int(0),
    "chunk": _int(1),
    "extend": (float, lambda v: v >= 0, "a number >= 0"),
    "bezier": _int(0),
    "one_d": (str, lambda v: v in ONE_D, f"one of {list(ONE_D)}"),
    "name": (str, lambda v: re.fullmatch(r"[A-Za-z0-9_-]+", v), "letters, digits, _ and -"),
}
LINE_ONLY = ("other", "extend", "bezier")
PLANE_ONLY = ("span", "curvature", "one_d")


def parse_options(items: list[str]) -> dict:
    """`key=value` strings -> typed options; ValueError (one line) on anything not allowed."""
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(
                f"argument {item!r} is not allowed: key=value with a key in {list(OPTIONS)}"
            )
        if key not in OPTIONS:
            raise ValueError(f"{key}={text!r} is not allowed: a key in {list(OPTIONS)}")
        kind, check, allowed = OPTIONS[key]
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not allowed: {allowed}") from None
        if not check(value):
            raise ValueError(f"{key}={text!r} is not allowed: {allowed}")
        options[key] = value
    return options


def landscape_main(argv: list[str]) -> int:
    """The `lossbench landscape` command; returns the exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    try:
        if not (run_dir / ".hydra" / "config.yaml").exists():
            raise ValueError(
                f"RUN_DIR={str(run_dir)!r} is not allowed: a run directory (with .hydra/)"
            )
        options = parse_options(argv[1:])
        kind = options.get("kind", "filter")
        options["kind"] = kind
        for key in sorted(set(options) & set(LINE_ONLY if kind != "line" else PLANE_ONLY)):
            where = "kind=line" if key in LINE_ONLY else "kind=filter, eigen or pca"
            raise ValueError(f"{key}={options[key]!r} is not allowed with kind={kind}: {where}")
        name = options.pop(
            "name", kind if options.get("seed", 0) == 0 else f"{kind}_seed{options['seed']}"
        )
        planned = {"kind": kind, **({"lambda_max": None} if options.get("curvature") else {})}
        check_writable(run_dir, name, planned)
        result = compute_landscape(run_dir, **options)
        paths = write_landscape(run_dir, name, result)
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0
