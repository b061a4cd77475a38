"""Top-5 Hessian eigenvalues: lossbench against hessian-eigenthings 1.0 (PyTorch), as ratios.

The same problem on both sides: the 26,122-parameter MLP of `probe_cost_kernels.py`
(64 -> 128 -> 128 -> 10, tanh), the same float32 weights, the same 1,437 samples,
cross-entropy, written to one `.npz` that both read. The reference is float64
`scipy.sparse.linalg.eigsh` on a float64 JAX Hessian-vector product (a dense 26k^2 float64
Hessian would be 5.5 GB).

For each tool and method the script finds the cheapest setting (Lanczos steps, or the power
iteration's tolerance) whose top-5 eigenvalues are all within `TOLERANCE` (relative) of the
reference for every start in `SEEDS`, then times it:

- **warm**: repeated calls in one long-lived process per tool (lossbench here, the peer in a
  subprocess of the peer's Python, `peers_torch.py serve`), interleaved round by round; the
  median wall and CPU (user + system, all threads) seconds of each; beside them lossbench's
  floor (linearize once + as many chained HVPs, no Lanczos);
- **first call**: a fresh process, imports and data before the clock, timed from building
  the operator to the eigenvalues on the host; lossbench with its persistent compilation
  cache off, cold (empty) and warm (filled by the cold run).

The peer runs with torch's default threads (OpenMP, 2 here) and with 1 thread: on a loaded
machine OpenMP's spinning threads cost torch several times its CPU time, so the faster of the
two is the peer's time in the ratios.

The peer lives in its own environment, outside lossbench's dependencies:

    python3.11 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /tmp/peers-venv/bin/pip install --no-deps hessian-eigenthings==1.0.0a5
    /tmp/peers-venv/bin/pip install numpy scipy tqdm    # its other dependencies
    .venv/bin/python benchmarks/peers.py --peer-python /tmp/peers-venv/bin/python

(writes benchmarks/peers.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lossbench.curvature import hessian_eigenvalues, hessian_matvec
from lossbench.curvature.operators import flat_matvec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from probe_cost_kernels import SAMPLES, SIZES, init_mlp, loss_fn  # noqa: E402

TOP_K = 5
TOLERANCE = 1e-3
SEEDS = (0, 1, 2)
LANCZOS_STEPS = tuple(range(30, 101, 2))
# Deflated power iteration needs ~1000 matvecs here (the top-5 are clustered): one seed,
# timed in one round only.
POWER_TOLERANCES = (1e-3, 3e-4, 1e-4)
POWER_SEEDS = SEEDS[:1]
TARGET_WARM, TARGET_FIRST = 5.0, 1.5


def loss(params, x, labels):
    """Mean cross-entropy of the MLP (module-level: `hessian_eigenvalues` compiles it once)."""
    return loss_fn(params, (x, labels))


def save_problem(path: Path) -> dict:
    """Weights and data of `probe_cost_kernels.py`'s problem, as numpy, saved to `path`."""
    params = init_mlp(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, SIZES[0]))
    labels = jax.random.randint(jax.random.PRNGKey(2), (SAMPLES,), 0, SIZES[-1])
    arrays = {"x": np.asarray(x), "labels": np.asarray(labels, np.int32)}
    for index, layer in enumerate(params["layers"]):
        arrays[f"kernel{index}"] = np.asarray(layer["kernel"])
        arrays[f"bias{index}"] = np.asarray(layer["bias"])
    np.savez(path, **arrays)
    return arrays


def load_problem(arrays: dict, dtype=jnp.float32):
    """(params, x, labels) as JAX arrays."""
    layers = [
        {
            "kernel": jnp.asarray(arrays[f"kernel{i}"], dtype),
            "bias": jnp.asarray(arrays[f"bias{i}"], dtype),
        }
        for i in range(len(SIZES) - 1)
    ]
    return {"layers": layers}, jnp.asarray(arrays["x"], dtype), jnp.asarray(arrays["labels"])


REFERENCE_SCRIPT = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, scipy.sparse.linalg as sla
from jax.flatten_util import ravel_pytree
sys.path.insert(0, sys.argv[1])
from peers import TOP_K, load_problem, loss
params, x, labels = load_problem(dict(np.load(sys.argv[2])), jnp.float64)
flat, unravel = ravel_pytree(params)
_, hvp = jax.linearize(jax.grad(lambda f: loss(unravel(f), x, labels)), flat)
hvp = jax.jit(hvp)
operator = sla.LinearOperator(
    (flat.size, flat.size), matvec=lambda v: np.asarray(hvp(jnp.asarray(v.ravel()))),
    dtype=np.float64)
values = sla.eigsh(operator, k=TOP_K + 3, which="LA", tol=1e-12, return_eigenvectors=False)
print(json.dumps(sorted(values.tolist(), reverse=True)))
"""

FIRST_SCRIPT = """
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from lossbench.curvature import hessian_eigenvalues
sys.path.insert(0, sys.argv[1])
from peers import TOP_K, load_problem, loss
params, x, labels = load_problem(dict(np.load(sys.argv[2])))
options = json.loads(sys.argv[3])
key = jax.random.PRNGKey(int(sys.argv[4]))
jax.block_until_ready((params, x, labels, key))
start, cpu = time.perf_counter(), time.process_time()
result = hessian_eigenvalues(loss, params, x, labels, key=key, top_k=TOP_K, bottom_k=0, **options)
values = np.asarray(result.top).tolist()
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"values": values, "wall": wall, "cpu": cpu}))
"""


def run_json(command: list[str], env: dict | None = None) -> object:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


class Peer:
    """A long-lived `peers_torch.py serve` process of the peer's Python."""

    def __init__(self, python: str, problem: Path, threads: int | None):
        command = [python, str(HERE / "peers_torch.py"), "serve", str(problem)]
        if threads:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.info = json.loads(self.process.stdout.readline())

    def __call__(self, method: str, setting: float, seed: int) -> dict:
        ask = {"method": method, "setting": setting, "seed": seed}
        self.process.stdin.write(json.dumps(ask) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def lossbench_call(problem, options: dict, seed: int) -> dict:
    """One warm `hessian_eigenvalues` top-5 call: values, steps, wall and CPU seconds."""
    params, x, labels = problem
    key = jax.random.PRNGKey(seed)
    start, cpu = time.perf_counter(), time.process_time()
    result = hessian_eigenvalues(
        loss, params, x, labels, key=key, top_k=TOP_K, bottom_k=0, **options
    )
    values = np.asarray(result.top).tolist()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"values": values, "matvecs": int(result.steps), "wall": wall, "cpu": cpu}


@functools.partial(jax.jit, static_argnames="steps")
def hvp_floor(params, x, labels, start, steps: int):
    """lossbench's floor for `steps` Lanczos steps: linearize the gradient once, then `steps`
    chained Hessian-vector products (normalised), as `probe_cost_kernels.py` measures it."""
    matvec, _, _ = flat_matvec(hessian_matvec(lambda p: loss(p, x, labels), params), params)
    step = lambda _, u: (lambda w: w / jnp.linalg.norm(w))(matvec(u))  # noqa: E731
    return jax.lax.fori_loop(0, steps, step, start)


def floor_call(problem, steps: int, seed: int) -> dict:
    """One warm `hvp_floor` call: wall and CPU seconds."""
    params, x, labels = problem
    start_vector = jax.random.normal(jax.random.PRNGKey(seed), ravel_pytree(params)[0].shape)
    jax.block_until_ready(start_vector)
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(hvp_floor(params, x, labels, start_vector, steps))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"values": [], "matvecs": steps, "wall": wall, "cpu": cpu}


def relative_error(values, reference) -> float:
    values, reference = np.asarray(values), np.asarray(reference[:TOP_K])
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def cheapest(call, settings, reference, seeds=SEEDS) -> tuple[object, float, float]:
    """The first of `settings` whose call meets `TOLERANCE` at every seed: (setting, worst
    relative error over the seeds, mean matvecs)."""
    for setting in settings:
        results = []
        for seed in seeds:
            results.append(call(setting, seed))
            if relative_error(results[-1]["values"], reference) > TOLERANCE:
                break
        else:
            errors = [relative_error(r["values"], reference) for r in results]
            return setting, max(errors), float(np.mean([r["matvecs"] for r in results]))
        print(f"  {setting}: error {relative_error(results[-1]['values'], reference):.1e}",
              flush=True)  # fmt: skip
    raise RuntimeError("no setting reached the tolerance")


def first_calls(peer_python: str, problem_path: Path, tools: dict, rounds: int) -> dict:
    """{tool: [{"wall", "cpu", "values"}, ...]}: fresh processes, rounds alternating."""
    times = {name: [] for name in tools}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSBENCH_")}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            for name, tool in tools.items():
                if tool["side"] == "peer":
                    call = [tool["method"], str(tool["setting"]), "0"]
                    command = [
                        peer_python,
                        str(HERE / "peers_torch.py"),
                        "first",
                        str(problem_path),
                        *call,
                    ]
                    if tool["threads"]:
                        command += ["--threads", str(tool["threads"])]
                    times[name].append(run_json(command, env))
                else:
                    cache_env = dict(env, LOSSBENCH_CACHE_DIR=cache)
                    if tool["cache"] == "off":
                        cache_env["LOSSBENCH_NO_CACHE"] = "1"
                    command = [sys.executable, "-c", FIRST_SCRIPT, str(HERE), str(problem_path),
                               json.dumps(tool["options"]), "0"]  # fmt: skip
                    times[name].append(run_json(command, cache_env))
                print(f"  first {name}: {times[name][-1]['wall']:.2f} s", flush=True)
    return times


def main(peer_python: str, rounds: int, first_rounds: int, output: Path | None) -> str:
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="lossbench-peers-"))
    problem_path = workdir / "problem.npz"
    arrays = save_problem(problem_path)
    problem = load_problem(arrays)
    n = sum(np.size(a) for k, a in arrays.items() if k not in ("x", "labels"))
    reference = run_json([sys.executable, "-c", REFERENCE_SCRIPT, str(HERE), str(problem_path)])
    print("reference", reference, flush=True)
    peers = {threads: Peer(peer_python, problem_path, threads) for threads in (None, 1)}
    default_threads = peers[None].info["threads"]
    fast_peer = peers[1]  # the scans: accuracy does not depend on the threads

    def lossbench_scan(options_of):
        return lambda setting, seed: lossbench_call(problem, options_of(setting), seed)

    scans = {
        "lossbench": (lossbench_scan(lambda m: {"lanczos_steps": m}), LANCZOS_STEPS),
        "peer lanczos": (lambda m, seed: fast_peer("lanczos", m, seed), LANCZOS_STEPS),
        "peer power": (lambda t, seed: fast_peer("power", t, seed), POWER_TOLERANCES),
    }
    chosen = {}
    for name, (call, settings) in scans.items():
        print("scan", name, flush=True)
        seeds = POWER_SEEDS if name == "peer power" else SEEDS
        chosen[name] = cheapest(call, settings, reference, seeds)
        print("  ->", chosen[name], flush=True)

    m_lossbench, m_peer = chosen["lossbench"][0], chosen["peer lanczos"][0]
    power_tol = chosen["peer power"][0]
    warm_calls = {
        "lossbench": lambda seed: lossbench_call(problem, {"lanczos_steps": m_lossbench}, seed),
        "lossbench's floor": lambda seed: floor_call(problem, m_lossbench, seed),
        f"peer lanczos, {default_threads} threads": lambda seed: peers[None](
            "lanczos", m_peer, seed
        ),
        "peer lanczos, 1 thread": lambda seed: peers[1]("lanczos", m_peer, seed),
        "peer power, 1 thread": lambda seed: peers[1]("power", power_tol, seed),
    }
    for name, call in warm_calls.items():  # compile / warm up
        if not name.startswith("peer power"):
            call(SEEDS[0])
    warm = {name: [] for name in warm_calls}
    for round_ in range(rounds):
        seed = SEEDS[round_ % len(SEEDS)]  # the starts the settings were chosen for, in turn
        for name, call in warm_calls.items():
            if name.startswith("peer power") and round_ > 0:
                continue  # ~1000 matvecs: one round
            warm[name].append(call(seed))
        print(f"round {round_}", {k: f"{v[-1]['wall']:.3f}" for k, v in warm.items()}, flush=True)
    for peer in peers.values():
        peer.close()

    first_tools = {
        f"lossbench, cache {cache}": {"side": "lossbench", "cache": cache,
                                     "options": {"lanczos_steps": m_lossbench}}
        for cache in ("off", "cold", "warm")
    }  # fmt: skip
    for threads in (None, 1):
        label = f"{default_threads} threads" if threads is None else "1 thread"
        first_tools[f"peer lanczos, {label}"] = {
            "side": "peer", "method": "lanczos", "setting": m_peer, "threads": threads
        }  # fmt: skip
    first = first_calls(peer_python, problem_path, first_tools, first_rounds)
    load_end = os.getloadavg()
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = table(
        n=n, reference=reference, chosen=chosen, warm=warm, first=first, rounds=rounds,
        first_rounds=first_rounds, info=peers[None].info, loads=(load_start, load_end),
        uptimes=(uptime_start, uptime_end), settings={"lossbench": m_lossbench,
        "peer lanczos": m_peer, "peer power": power_tol},
    )  # fmt: skip
    print(text)
    if output is not None:
        output.write_text(text)
    return text


def describe(name: str, settings: dict) -> tuple[str, str]:
    """(the scan a timed tool's setting came from, the call as a user writes it)."""
    if name == "lossbench's floor":
        return "lossbench", f"linearize + {settings['lossbench']} chained HVPs (no Lanczos)"
    if name.startswith("lossbench"):
        return "lossbench", f"`hessian_eigenvalues(lanczos_steps={settings['lossbench']})`"
    if name.startswith("peer lanczos"):
        m = settings["peer lanczos"]
        return "peer lanczos", f"`lanczos(max_iter={m}, which='LA', reorthogonalize=True)`"
    return "peer power", f"`deflated_power_iteration(tol={settings['peer power']:g})`"


def medians(results: list[dict]) -> tuple[float, float]:
    return (float(np.median([r["wall"] for r in results])),
            float(np.median([r["cpu"] for r in results])))  # fmt: skip


def table(*, n, reference, chosen, warm, first, rounds, first_rounds, info, loads, uptimes,
          settings) -> str:  # fmt: skip
    """The markdown report: warm and first-call tables, ratios against the peer's best."""
    peer_warm = [medians(v) for k, v in warm.items() if k.startswith("peer lanczos")]
    best_warm = tuple(min(t[i] for t in peer_warm) for i in (0, 1))
    peer_first = [medians(v) for k, v in first.items() if k.startswith("peer lanczos")]
    best_first = tuple(min(t[i] for t in peer_first) for i in (0, 1))
    lines = [
        "# Top-5 Hessian eigenvalues: lossbench against hessian-eigenthings",
        "",
        f"MLP {' -> '.join(map(str, SIZES))} (tanh), {n:,} parameters, {SAMPLES} samples, "
        "cross-entropy, float32, the same weights and data on both sides; reference: float64 "
        f"`eigsh` on a float64 JAX HVP, top-5 {np.round(reference[:TOP_K], 6).tolist()} "
        f"(then {np.round(reference[TOP_K:], 6).tolist()}: a tight cluster). Each setting is "
        f"the cheapest whose top-5 are all within {TOLERANCE:g} relative of the reference "
        f"for the random starts {list(SEEDS)} (power iteration: {list(POWER_SEEDS)}); "
        '"error" is its worst over them. '
        f"hessian-eigenthings 1.0.0a5 on torch {info['torch']} (CPU); torch's default "
        f"threads: {info['threads']} (OpenMP threads spin while they wait: on a loaded "
        "machine they cost torch many times its 1-thread CPU time, so the faster of the two "
        f"is the peer's figure in the ratios). JAX {jax.__version__}, "
        f"{jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores. Load: `{uptimes[0]}` at the start, `{uptimes[1]}` at the "
        "end (1-min averages "
        f"{loads[0][0]:.1f} -> {loads[1][0]:.1f}). Written by `benchmarks/peers.py`.",
        "",
        f"**Warm**: median of {rounds} interleaved calls per tool in one process each, the "
        "starts cycling through the seeds (the "
        "power iteration in one), wall and CPU (user + system, all threads) seconds; "
        "speed-up = hessian-eigenthings' faster Lanczos (by median) / this.",
        "",
        "| tool | call | matvecs | error | wall (s) | CPU (s) | speed-up wall | "
        "speed-up CPU | target (wall) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, results in warm.items():
        scan, call = describe(name, settings)
        _, error, matvecs = chosen[scan]
        error = "–" if name == "lossbench's floor" else f"{error:.1e}"  # no eigenvalues
        wall, cpu = medians(results)
        verdict = ""
        if name == "lossbench":
            ok = best_warm[0] / wall >= TARGET_WARM
            verdict = f">= {TARGET_WARM:g}x: " + ("yes" if ok else "**no**")
        lines.append(
            f"| {name} | {call} | {matvecs:.0f} | {error} | {wall:.3f} | {cpu:.3f} | "
            f"{best_warm[0] / wall:.2f} | {best_warm[1] / cpu:.2f} | {verdict} |"
        )
    lines += [
        "",
        f"**First call**: a fresh process each, {first_rounds} alternating rounds, medians; "
        "imports, model and data before the clock; the clock covers building the operator "
        "and the eigenvalues on the host. lossbench's persistent compilation cache off, "
        "cold (empty) and warm (filled by the cold run of the same round). ratio = this / "
        "hessian-eigenthings' faster Lanczos.",
        "",
        "| tool | wall (s) | CPU (s) | ratio wall | ratio CPU | target (wall) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, results in first.items():
        wall, cpu = medians(results)
        verdict = ""
        if name == "lossbench, cache warm":
            ok = wall / best_first[0] <= TARGET_FIRST
            verdict = f"<= {TARGET_FIRST:g}x: " + ("yes" if ok else "**no**")
        lines.append(
            f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / best_first[0]:.2f} | "
            f"{cpu / best_first[1]:.2f} | {verdict} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--first-rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "peers.md")
    arguments = parser.parse_args()
    main(arguments.peer_python, arguments.rounds, arguments.first_rounds, arguments.output)
