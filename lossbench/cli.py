"""Command line: `lossbench [overrides]` (a Hydra app), plus the subcommands
`lossbench losses` (the loss property table), `lossbench diagnose RUN_DIR [detect.k=v ...]`
(re-diagnose saved results) and `lossbench plot RUN_DIR` (figures of a run).

Bad input exits non-zero with one line naming the key, the value and what is allowed, and
leaves no run directory behind (set HYDRA_FULL_ERROR=1 for a traceback).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
EXIT_BAD_CONFIG = 2
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


def _fail(message: str, run_dir: Path | None = None) -> None:
    """One line on stderr, no run directory left behind (nor the empty dated dirs above it)."""
    if run_dir is not None and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in list(run_dir.parents)[:2]:
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


def _task(cfg) -> None:
    """The Hydra task: everything is built inside the job (launchers pickle this function)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from lossbench.errors import ConfigError
    from lossbench.runner import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = OmegaConf.to_object(cfg)
        summary = run(config, run_dir)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail(str(exc), run_dir)
        return
    _print_summary(summary, run_dir)


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

    from lossbench.schema import register_configs

    register_configs(sys.argv[1:])  # imports=[...] modules register options first
    app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(_task)
    app()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from lossbench.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # compile once per machine; LOSSBENCH_NO_CACHE=1 turns it off
    if argv and argv[0] == "losses":
        from lossbench.losses import format_properties_table

        print(format_properties_table(README_LOSS_COLUMNS if "--readme" in argv else None))
        return
    if argv and argv[0] == "plot":
        from lossbench.plots import plot_main

        sys.exit(plot_main(argv[1:]))
    if argv and argv[0] == "diagnose":
        from lossbench.diagnosis import diagnose_main

        sys.exit(diagnose_main(argv[1:]))
    if argv and argv[0] == "landscape":
        from lossbench.landscape import landscape_main

        sys.exit(landscape_main(argv[1:]))
    sys.argv = [sys.argv[0], *argv]
    hydra_main()


if __name__ == "__main__":
    main()
