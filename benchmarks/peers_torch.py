"""The peer's side of `peers.py`: hessian-eigenthings 1.0 (PyTorch) on the saved problem.

Run by the peer environment's Python (torch and hessian-eigenthings, no JAX, no lossbench):

    peers_torch.py serve PROBLEM.npz [--threads N]   JSON lines in, JSON lines out
    peers_torch.py first PROBLEM.npz METHOD SETTING SEED [--threads N]   one fresh call

`serve` answers `{"method", "setting", "seed"}` with the top-5 eigenvalues, the matvecs and
the call's wall and CPU seconds. `first` times one call in a fresh process, imports and the
model built before the clock (the clock covers the operator and the eigenvalues).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from hessian_eigenthings import (
    HessianOperator,
    deflated_power_iteration,
    lanczos,
    supervised_loss,
)

TOP_K = 5
POWER_MAX_ITER = 2000


def make_operator(problem: dict):
    """`() -> HessianOperator` on the problem's MLP (the JAX kernels, transposed into
    `torch.nn.Linear`), cross-entropy, the whole data set as one batch."""
    layers = []
    for index in range(3):
        kernel, bias = problem[f"kernel{index}"], problem[f"bias{index}"]
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers[:-1])
    batch = (torch.from_numpy(problem["x"]), torch.from_numpy(problem["labels"]).long())
    loss = supervised_loss(torch.nn.functional.cross_entropy)
    return lambda: HessianOperator(model, [batch], loss)


def top_eigenvalues(operator_factory, method: str, setting: float, seed: int):
    """(top-5 descending, matvecs): `lanczos` with `max_iter=setting` (largest algebraic,
    full reorthogonalisation: its default up to 50 steps, asked for at every length), or
    `deflated_power_iteration` with `tol=setting`."""
    operator = operator_factory()
    if method == "lanczos":
        result = lanczos(
            operator, k=TOP_K, max_iter=int(setting), which="LA", reorthogonalize=True,
            seed=seed,
        )  # fmt: skip
    elif method == "power":
        result = deflated_power_iteration(
            operator, k=TOP_K, max_iter=POWER_MAX_ITER, tol=float(setting), seed=seed
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    return sorted(result.eigenvalues.tolist(), reverse=True), int(result.iterations)


def timed(operator_factory, method: str, setting: float, seed: int) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    values, matvecs = top_eigenvalues(operator_factory, method, setting, seed)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"values": values, "matvecs": matvecs, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "first"))
    parser.add_argument("problem")
    parser.add_argument("call", nargs="*", help="METHOD SETTING SEED (first)")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's own")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    factory = make_operator(dict(np.load(arguments.problem)))
    if arguments.mode == "first":
        method, setting, seed = arguments.call
        print(json.dumps(timed(factory, method, float(setting), int(seed))))
        return
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))
    sys.stdout.flush()
    for line in sys.stdin:
        ask = json.loads(line)
        print(json.dumps(timed(factory, ask["method"], ask["setting"], ask["seed"])))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
