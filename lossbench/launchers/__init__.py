"""What lossbench's Hydra launchers do (`hydra/launcher=joblib_jax`: XLA threads split between
local worker processes; `hydra/launcher=slurm` / `slurm_local`: submitit with requeue and
resume, the `slurm` extra). Hydra finds launchers only in the `hydra_plugins` namespace, so
the classes live in hydra_plugins/lossbench_launchers/ and their logic here; the presets are
in lossbench/configs/hydra/launcher/."""
