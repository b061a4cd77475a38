"""`hydra/launcher=slurm` and `slurm_local`: submitit with requeue and resume
(`lossbench.launchers.cluster`). Needs the `slurm` extra; without hydra-submitit-launcher
this module defines nothing."""

from lossbench.launchers.cluster import Resuming

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # pip install "lossbench[slurm]"
    submitit_launcher = None

if submitit_launcher is not None:

    class SlurmLauncher(Resuming, submitit_launcher.SlurmLauncher):
        """submitit's SLURM launcher with lossbench's resume on requeue."""

    class LocalLauncher(Resuming, submitit_launcher.LocalLauncher):
        """submitit's local launcher (a process per job on this machine) with the same
        resume: the test bed of the SLURM path."""
