"""What bounds lossbench's top-5 against hessian-eigenthings (`peers.py`): FLOPs and steps.

**FLOPs** (XLA's cost analysis of the compiled programs, float32): the forward pass, the
gradient, and `linearize` of the gradient plus one product; one product alone is the difference
of the last two. hessian-eigenthings' product (`torch.autograd.grad` with `create_graph=True`,
then a second `grad`) recomputes the forward and backward pass for every product.

**Steps**: could a convergence test stop the top-5 Lanczos earlier than a fixed step count?
On the problem of `peers.py` (26k-parameter MLP, float32, float64 `eigsh` reference), one
80-step Lanczos run of lossbench's kernel per random start; the Ritz values after step j are
the eigenvalues of the leading j x j block of its `T` (what a j-step run computes). Per start:
the first step whose top-5 are all within `TOLERANCE` of the reference, and where two stopping
rules on the top-5 would stop, with the error there:

- **increment**: every top-5 Ritz value rose by at most `t` (relative) in the last step (the
  rule `top_tolerance` applies to the top value);
- **Kato-Temple**: every top-5 pair's `r² / gap` is at most `t` (relative), `r = β_j |y_j|` its
  free residual and `gap` the distance to the nearest other Ritz value (Temple 1928, Kato 1949;
  Parlett 1998, ch. 10).

A rule is safe here if it stops with every error within `TOLERANCE`; it saves matvecs if it
stops before the fixed count that `peers.py` finds for all starts.
Run: `python benchmarks/peers_limits.py` (writes benchmarks/peers_limits.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from lossbench.curvature import hessian_matvec
from lossbench.curvature.lanczos import lanczos, start_vector
from lossbench.curvature.operators import flat_matvec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import REFERENCE_SCRIPT, TOLERANCE, TOP_K, load_problem, loss, run_json, save_problem  # noqa: E402, I001

STEPS = 80
STARTS = tuple(range(8))
RULES = {"increment": (1e-3, 1e-4, 1e-5), "Kato-Temple": (1e-3, 1e-4, 1e-5)}


@jax.jit
def tridiagonal(params, x, labels, key):
    matvec, flat, _ = flat_matvec(hessian_matvec(lambda p: loss(p, x, labels), params), params)
    decomposition = lanczos(matvec, start_vector(key, flat, None, 1.0), STEPS)
    return decomposition.tridiagonal, decomposition.size


def per_step(T: np.ndarray, size: int, reference: np.ndarray) -> dict[str, np.ndarray]:
    """{"error", "increment", "Kato-Temple"}: per step j = 1..size, the worst over the top-5."""
    rows = {"error": [], "increment": [], "Kato-Temple": []}
    previous = None
    for j in range(1, size + 1):
        values, vectors = np.linalg.eigh(T[:j, :j])
        values, vectors = values[::-1], vectors[:, ::-1]
        top = np.full(TOP_K, np.nan)
        top[: min(j, TOP_K)] = values[:TOP_K]
        beta = T[j, j - 1] if j < T.shape[0] else 0.0
        residual = np.abs(beta * vectors[-1, :TOP_K])
        padded = np.r_[np.inf, values, -np.inf]
        gap = np.minimum(padded[:-2] - padded[1:-1], padded[1:-1] - padded[2:])[:TOP_K]
        rows["error"].append(np.max(np.abs(top - reference) / np.abs(reference)))
        if j > TOP_K:  # every top-5 pair exists, and existed a step before
            rows["Kato-Temple"].append(np.max(residual**2 / gap / np.abs(values[:TOP_K])))
            rows["increment"].append(np.max((top - previous) / np.abs(top)))
        else:
            rows["Kato-Temple"].append(np.inf)
            rows["increment"].append(np.inf)
        previous = top
    return {name: np.nan_to_num(np.asarray(v), nan=np.inf) for name, v in rows.items()}


def flops(function, *args) -> float:
    """XLA's FLOP count of `jax.jit(function)(*args)`."""
    cost = jax.jit(function).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def flop_rows(params, x, labels) -> list[str]:
    """Markdown rows: MFLOP of the forward pass, the gradient, linearize + 1 product."""
    vector = jax.numpy.ones(flat_matvec(lambda v: v, params)[1].shape)

    def product(p, x, labels, v):
        matvec, _, _ = flat_matvec(hessian_matvec(lambda q: loss(q, x, labels), p), p)
        return matvec(v)

    forward = flops(loss, params, x, labels)
    gradient = flops(jax.grad(loss), params, x, labels)
    linearized = flops(product, params, x, labels, vector)
    rows = [
        ("forward pass (the loss)", forward),
        ("gradient", gradient),
        ("linearize the gradient + 1 product: the least a product costs that recomputes "
         "the gradient first, as hessian-eigenthings' does", linearized),
        ("one product after linearize (lossbench, per Lanczos step)", linearized - gradient),
    ]  # fmt: skip
    return [f"| {name} | {value / 1e6:.1f} | {value / forward:.2f} |" for name, value in rows]


def first_step(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) + 1 if hits.size else None


def main(output: Path | None) -> str:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "problem.npz"
        params, x, labels = load_problem(save_problem(path))
        reference = np.asarray(
            run_json([sys.executable, "-c", REFERENCE_SCRIPT, str(HERE), str(path)])
        )
    reference = reference[:TOP_K]
    lines = [
        "# What bounds the top-5 against hessian-eigenthings: FLOPs and steps",
        "",
        "FLOPs by XLA's cost analysis (float32, the problem of `peers.py`):",
        "",
        "| program | MFLOP | / forward |",
        "|---|---:|---:|",
        *flop_rows(params, x, labels),
        "",
        "Stopping the top-5 Lanczos early: increment and Kato-Temple rules.",
        "",
        f"The problem of `peers.py`, float32, one {STEPS}-step run of lossbench's Lanczos per "
        f"start; error = worst relative error of the top-5 against the float64 reference. "
        f'"needs" = the first step with error <= {TOLERANCE:g}; a rule\'s cell = the step it '
        "stops at / the error there (**bold** where the error is above the tolerance). "
        f"Load average (1 min) {load_start:.1f}. Written by `benchmarks/peers_limits.py`.",
        "",
        "| start | needs | "
        + " | ".join(f"{rule} {t:g}" for rule, ts in RULES.items() for t in ts)
        + " |",
        "|---:|---:|" + "---:|" * sum(len(ts) for ts in RULES.values()),
    ]
    for seed in STARTS:
        T, size = tridiagonal(params, x, labels, jax.random.PRNGKey(seed))
        rows = per_step(np.asarray(T, np.float64), int(size), reference)
        cells = [str(seed), str(first_step(rows["error"] <= TOLERANCE))]
        for rule, tolerances in RULES.items():
            for t in tolerances:
                stop = first_step(rows[rule] <= t)
                if stop is None:
                    cells.append("never")
                    continue
                error = rows["error"][stop - 1]
                text = f"{stop} / {error:.0e}"
                cells.append(f"**{text}**" if error > TOLERANCE else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if output is not None:
        output.write_text(table)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "peers_limits.md")
    main(parser.parse_args().output)
