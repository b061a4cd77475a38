"""The public API behind `lossbench.compose`: the typed config the command line would build."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def compose(*overrides: str, config_dir: str | Path | None = None):
    """The typed config object `lossbench [overrides]` would run, composed by Hydra.

    `config_dir` adds a user config dir (as `--config-dir` does): its options join the
    package's, e.g. `model/my_net.yaml` holding `_target_: mypkg.nets.MyNet` and arguments.
    Modules named by an `imports=[...]` override are imported first (they register options).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.cli import typed_config  # refuses keys the schema lacks, as the CLI does
    from lossbench.schema import register_configs

    overrides = list(overrides)
    register_configs(overrides)
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return typed_config(hydra_compose(config_name="config", overrides=overrides))
    finally:
        GlobalHydra.instance().clear()


__all__ = ["compose"]
