"""Human-readable timelines of episodes: plain lines, and a rich table for the end of a run."""

from __future__ import annotations

import math

import pandas as pd

from lossbench.pathology.regimes import STUCK

LABELS = {
    "divergence": "divergence",
    "edge_of_stability": "edge of stability",
    "strict_saddle": "strict saddle",
    "flat": "flat (degenerate critical point or flat region)",
    "minimum": "minimum",
    "plateau": "plateau",
    "oscillation": "oscillation",
    "descent": "descent",
}
STYLES = {
    "divergence": "bold red",
    "edge_of_stability": "magenta",
    "strict_saddle": "yellow",
    "flat": "yellow",
    "minimum": "green",
    "plateau": "cyan",
    "oscillation": "red",
    "descent": "",
}


def fmt(x: float) -> str:
    """Three significant digits, trailing zeros kept (7.40), a true minus sign (−0.18)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    text = f"{x:#.3g}"
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.rstrip(".")
    text = f"{mantissa}e{int(exponent)}" if exponent else mantissa
    return text.replace("-", "−")


def _steps(row) -> str:
    if row.start_step == row.end_step:
        return f"step {row.start_step}"
    return f"steps {row.start_step}–{row.end_step}"


def _exit(row) -> str:
    if row.kind in STUCK:
        if not row.exited:
            return "not left by the end"
        if math.isnan(row.escape_curvature):
            return f"left to {LABELS.get(row.next_kind, row.next_kind)}"
        return f"left along curvature λ = {fmt(row.escape_curvature)}"
    if row.kind == "edge_of_stability":
        return f"λmax = {fmt(row.lambda_max_entry)} at entry"
    return ""


def format_timeline(episodes: pd.DataFrame) -> str:
    """One line per episode, e.g. 'steps 0–740: flat (...), loss 7.47 → 7.40; left along
    curvature λ = −0.18'; prefixed with the seed when there are several."""
    several = episodes["seed"].nunique() > 1 if len(episodes) else False
    lines = []
    for row in episodes.itertuples(index=False):
        line = f"{_steps(row)}: {LABELS.get(row.kind, row.kind)}, "
        line += f"loss {fmt(row.loss_entry)} → {fmt(row.loss_exit)}"
        tail = _exit(row)
        line += f"; {tail}" if tail else ""
        lines.append(f"seed {row.seed}: {line}" if several else line)
    return "\n".join(lines)


def timeline_table(episodes: pd.DataFrame, title: str | None = "Regimes"):
    """The episodes as a `rich.table.Table`, one row each, to print at the end of a run."""
    from rich.table import Table

    several = episodes["seed"].nunique() > 1 if len(episodes) else False
    table = Table(title=title)
    if several:
        table.add_column("seed", justify="right")
    for name in ("steps", "regime", "probes", "loss", "λmin", "λmax", "‖g‖", "exit"):
        table.add_column(name, justify="left" if name in ("regime", "exit") else "right")
    for row in episodes.itertuples(index=False):
        cells = [
            _steps(row).split(" ", 1)[1],
            f"[{STYLES.get(row.kind, '')}]{LABELS.get(row.kind, row.kind)}[/]"
            if STYLES.get(row.kind)
            else LABELS.get(row.kind, row.kind),
            str(row.n_probes),
            f"{fmt(row.loss_entry)} → {fmt(row.loss_exit)}",
            fmt(row.lambda_min_entry),
            fmt(row.lambda_max_entry),
            fmt(row.grad_norm_entry),
            _exit(row),
        ]
        table.add_row(*([str(row.seed)] if several else []), *cells)
    return table
