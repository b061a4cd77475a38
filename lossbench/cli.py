"""Command line: `lossbench [overrides]` (a Hydra app), plus the subcommands in
`SUBCOMMANDS` (`losses`, `diagnose`, `plot`, `landscape`, `resume`); `lossbench --help` lists
them, then Hydra's groups.

Bad input exits non-zero with one line naming the key, the value and what is allowed, and
leaves no run directory behind (set HYDRA_FULL_ERROR=1 for a traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lossbench.errors import EXIT_BAD_CONFIG

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")

README_LOSS_COLUMNS = (
    "name",
    "task",
    "takes",
    "convex",
    "differentiable",
    "twice_differentiable",
    "bounded",
    "min_zero",
    "robust",
    "source",
)


class _Outcome:
    """How the task ended in this process: the exception it raised, if any."""

    failure: BaseException | None = None


def _task(cfg) -> float | None:
    """The Hydra task: everything is built inside the job (launchers pickle this function).
    Returns the run's `objective` figure, what a sweeper such as `hydra/sweeper=optuna`
    optimises (NaN for a job that failed).

    Exit codes (the README's table): 0 for a run that finished as a result (`completed` or
    `diverged`), 1 for `failed`, 2 for a bad config, 130 / 143 for SIGINT / SIGTERM. In a
    sweep, a job that fails records it in its run directory and the sweep goes on.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lossbench.errors import ConfigError
    from lossbench.executables import enabled
    from lossbench.hydra_callbacks import CLAIMS, fail
    from lossbench.rundir import release
    from lossbench.runner import run
    from lossbench.stopping import EXIT_CODES

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        config = typed_config(cfg)
        with enabled():  # a launcher's job process: the command line's runs (`executables`)
            summary = run(config, run_dir, claimed=True)
    except Exception as exc:
        _Outcome.failure = exc
        if hydra_cfg.mode == RunMode.MULTIRUN:
            _record_failure(run_dir, cfg, exc)
            print(f"error: job {hydra_cfg.job.num}: {_one_line(exc)}", file=sys.stderr)
            return float("nan")
        if isinstance(exc, ConfigError) and run_dir.absolute() in CLAIMS:
            release(CLAIMS[run_dir.absolute()])
        else:
            _record_failure(run_dir, cfg, exc)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(_one_line(exc), EXIT_BAD_CONFIG if isinstance(exc, ConfigError) else 1)
    _print_summary(summary, run_dir)
    if summary["status"] == "interrupted":
        import signal

        sys.exit(EXIT_CODES[signal.Signals[summary.get("signal", "SIGINT")]])
    return objective_value(summary, config.objective)


def objective_value(summary: dict, name: str) -> float:
    """The summary figure `name` (`objective`): a mean over the live seeds, NaN where the run
    has none (every seed diverged)."""
    value = summary.get(name)
    return float(value) if isinstance(value, int | float) else float("nan")


def _one_line(exc: BaseException) -> str:
    from lossbench.errors import ConfigError

    text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def typed_config(cfg):
    """The typed config object from Hydra's, refusing keys that the schema does not have
    (`+optimizer.lrr=0.1` would otherwise be carried along and ignored)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_object(cfg)
    _check_known_keys(cfg, config, "")
    return config


def _check_known_keys(node, typed, prefix: str) -> None:
    import dataclasses

    from omegaconf import DictConfig

    from lossbench.errors import ConfigError

    if not (dataclasses.is_dataclass(typed) and isinstance(node, DictConfig)):
        return
    fields = [f.name for f in dataclasses.fields(typed)]
    for key in node:
        name = f"{prefix}{key}"
        if key not in fields:
            group = prefix.rstrip(".") or "the config"
            value = node._get_node(key)._value()
            raise ConfigError(name, value, f"a key of {group}: {', '.join(fields)}")
        _check_known_keys(node._get_node(key), getattr(typed, key), f"{name}.")


def _record_failure(run_dir: Path, cfg, exc: BaseException) -> None:
    """A failed job's run directory says so: status `failed` and the one-line reason."""
    import traceback

    from omegaconf import OmegaConf

    from lossbench.analysis import load_summary
    from lossbench.results import SUMMARY_FILE, write_json

    if not run_dir.is_dir():
        return
    summary = load_summary(run_dir) if (run_dir / SUMMARY_FILE).exists() else {}
    if summary.get("status") != "failed":
        config = OmegaConf.to_container(cfg, resolve=False)
        summary = {"status": "failed", "steps_completed": 0, "config": config}
    summary["error"] = _one_line(exc)
    summary["traceback"] = "".join(traceback.format_exception(exc))
    write_json(run_dir / SUMMARY_FILE, summary)


def _print_summary(summary: dict, run_dir: Path) -> None:
    from rich.console import Console

    keys = ("final_loss", "final_accuracy", "final_test_loss", "final_test_accuracy")
    figures = "  ".join(f"{k}={summary[k]:.4g}" for k in keys if summary.get(k) is not None)
    Console(stderr=False).print(
        f"[bold]{summary['status']}[/] {summary['steps_completed']} steps in "
        f"{summary['train_time_s']:.1f}s  {figures}\nrun dir: {run_dir}"
    )


def hydra_main() -> None:
    import hydra

    from lossbench.errors import ConfigError
    from lossbench.hydra_callbacks import SWEEPS
    from lossbench.schema import register_configs

    register_configs(sys.argv[1:])  # imports=[...] modules register options first
    app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(_task)
    try:
        app()
    except SystemExit as exc:
        # Hydra exits 1 on its own errors (composition, overrides): those are bad configs too
        if exc.code == 1 and (
            _Outcome.failure is None or isinstance(_Outcome.failure, ConfigError)
        ):
            sys.exit(EXIT_BAD_CONFIG)
        raise
    if any(failed for _, failed in SWEEPS):
        sys.exit(1)


def resume_main(argv: list[str]) -> None:
    """`lossbench resume RUN_DIR [overrides]`: continue a run from its last checkpoint with the
    overrides it was started with (stored in RUN_DIR/.hydra/overrides.yaml)."""
    import yaml

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lossbench resume RUN_DIR [KEY=VALUE ...]", file=sys.stderr)
        sys.exit(0 if argv else EXIT_BAD_CONFIG)
    run_dir = Path(argv[0])
    stored = run_dir / ".hydra" / "overrides.yaml"
    if not stored.exists():
        print(
            f"error: RUN_DIR={str(run_dir)!r} is not allowed: a run directory started from the "
            "command line (with .hydra/overrides.yaml)",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_CONFIG)
    skip = ("trainer.resume=", "trainer.overwrite=", "+trainer.resume=", "hydra.")
    overrides = [o for o in yaml.safe_load(stored.read_text()) or [] if not o.startswith(skip)]
    quoted = str(run_dir.absolute()).replace("\\", "\\\\").replace("'", "\\'")
    sys.argv = [
        sys.argv[0],
        *overrides,
        f"hydra.run.dir='{quoted}'",
        "trainer.resume=true",
        *argv[1:],
    ]
    hydra_main()


def _losses_main(argv: list[str]) -> int:
    from lossbench.losses import format_properties_table

    print(format_properties_table(README_LOSS_COLUMNS if "--readme" in argv else None))
    return 0


def _plot_main(argv: list[str]) -> int:
    from lossbench.plots import plot_main

    return plot_main(argv)


def _diagnose_main(argv: list[str]) -> int:
    from lossbench.diagnosis import diagnose_main

    return diagnose_main(argv)


def _landscape_main(argv: list[str]) -> int:
    from lossbench.landscape import landscape_main

    return landscape_main(argv)


def _resume_main(argv: list[str]) -> int:
    resume_main(argv)
    return 0


# name: (arguments, what it does, handler(argv) -> exit code)
SUBCOMMANDS = {
    "losses": ("[--readme]", "the loss catalogue and each loss's properties", _losses_main),
    "diagnose": (
        "RUN_DIR [detect.KEY=VALUE ...] [--in-place]",
        "name the regimes of a saved run again, with other thresholds",
        _diagnose_main,
    ),
    "plot": ("RUN_DIR", "draw a run's figures (run.png, density.png, path.png)", _plot_main),
    "landscape": (
        "RUN_DIR kind=filter|eigen|pca|line [grid=51 span=1.0 ...]",
        "loss-landscape slices around a run's parameters",
        _landscape_main,
    ),
    "resume": ("RUN_DIR [KEY=VALUE ...]", "continue a run from its last checkpoint", _resume_main),
    "report": (
        "SWEEP_DIR",
        "a sweep's report.md and figure grid (final figures per swept value, lambda_max)",
        lambda argv: __import__("lossbench.report", fromlist=["report_main"]).report_main(argv),
    ),
}


def _help() -> str:
    lines = [
        "lossbench: experiments on optimization pathologies (saddles, plateaus, sharp minima,",
        "edge of stability, divergence) with Hessian probes inside jitted training loops.",
        "",
        "Train:   lossbench [GROUP=OPTION] [KEY=VALUE ...]      one run",
        "         lossbench -m KEY=A,B [KEY=C,D ...]             a sweep (Hydra multirun)",
        "",
        "Subcommands (each takes --help):",
    ]
    width = max(len(name) for name in SUBCOMMANDS)
    for name, (_, what, _) in SUBCOMMANDS.items():
        lines.append(f"  lossbench {name.ljust(width)}  {what}")
    lines += [
        "",
        "Exit codes: 0 completed or diverged, 1 failed, 2 bad config, 130/143 signals.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS and argv[1:2] in (["-h"], ["--help"]):
        usage, what, _ = SUBCOMMANDS[argv[0]]
        print(f"usage: lossbench {argv[0]} {usage}\n\n{what}")
        sys.exit(0)
    from lossbench.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # compile once per machine; LOSSBENCH_NO_CACHE=1 turns it off
    if argv and argv[0] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[argv[0]][2](argv[1:]))
    if argv and argv[0] in ("-h", "--help"):
        print(_help())  # then Hydra's own help: the config groups and the composed config
    sys.argv = [sys.argv[0], *argv]
    from lossbench.executables import enabled

    with enabled():  # its runs store their compiled programs for the next one (`executables`)
        hydra_main()


if __name__ == "__main__":
    main()
