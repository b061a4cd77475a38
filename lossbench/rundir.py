"""Who owns a run directory: a run claims a new or empty one, or refuses to start.

Never delete or overwrite what lossbench did not create (DESIGN, "Files a run leaves"):

- a directory that holds anything is refused, unless the run resumes the lossbench run in it
  (`trainer.resume=true`) or is told to move its contents aside (`trainer.overwrite=true`
  moves them into `previous-<time>/` inside it, deleting nothing);
- a run stopped by a bad value removes only what this invocation created: the folders it
  made (the run directory and parents that did not exist) and the files it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lossbench.errors import ConfigError

SUMMARY_FILE = "summary.json"
PREVIOUS_PREFIX = "previous-"


@dataclass
class Claim:
    """What claiming a directory did: the folders it created (outermost first), and where it
    moved earlier contents (`trainer.overwrite`), if anywhere."""

    run_dir: Path
    created: list[Path] = field(default_factory=list)
    moved_to: Path | None = None
    resumed: bool = False


def _contents(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []


def claim_run_dir(
    run_dir, *, resume: bool = False, overwrite: bool = False, key: str = "hydra.run.dir"
) -> Claim:
    """Make `run_dir` this run's, or raise `ConfigError` naming it. Creates missing folders."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(key, str(run_dir), "a directory (this path is a file)")
    entries = _contents(run_dir)
    claim = Claim(run_dir)
    if resume:
        if not (run_dir / SUMMARY_FILE).exists():
            raise ConfigError(
                "trainer.resume",
                True,
                f"only for a directory holding a lossbench run ({key}={str(run_dir)!r} has no "
                f"{SUMMARY_FILE})",
            )
        claim.resumed = True
        return claim
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            key,
            str(run_dir),
            f"a new or empty directory (it holds {len(entries)} entries: {shown}); "
            "trainer.resume=true continues the run there, trainer.overwrite=true moves its "
            f"files into {PREVIOUS_PREFIX}<time>/",
        )
    if entries:
        claim.moved_to = move_aside(run_dir)
        return claim
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    claim.created = sorted(missing, key=lambda p: len(p.parts))
    run_dir.mkdir(parents=True, exist_ok=True)
    return claim


def move_aside(run_dir: Path) -> Path:
    """Move everything in `run_dir` (earlier `previous-*` folders excepted) into a new
    `previous-<time>/` folder inside it; returns that folder. Nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"{PREVIOUS_PREFIX}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = run_dir / f"{PREVIOUS_PREFIX}{stamp}-{n}"
    target.mkdir()
    for name in _contents(run_dir):
        if name.startswith(PREVIOUS_PREFIX):
            continue
        (run_dir / name).rename(target / name)
    return target


def release(claim: Claim) -> None:
    """Undo a claim whose run was refused: remove what this invocation created, nothing else.

    A folder the claim created goes with everything in it (only this invocation wrote
    there); in a folder that existed empty, the files written since are removed; moved
    contents are moved back."""
    import shutil

    if claim.resumed:
        return
    if claim.created:
        shutil.rmtree(claim.created[0], ignore_errors=True)
        return
    run_dir = claim.run_dir
    for name in _contents(run_dir):
        if claim.moved_to is not None and run_dir / name == claim.moved_to:
            continue
        if name.startswith(PREVIOUS_PREFIX):
            continue
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if claim.moved_to is not None:
        for path in claim.moved_to.iterdir():
            path.rename(run_dir / path.name)
        claim.moved_to.rmdir()


def config_record(cfg) -> dict:
    """The config as plain JSON-able data (stored in summary.json; resume compares it)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_record(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {str(k): config_record(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [config_record(v) for v in cfg]
    return cfg


# Keys a resumed run may change: they do not change a single number in the files.
RESUME_FREE_KEYS = (
    "trainer.progress",
    "trainer.resume",
    "trainer.overwrite",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.save_params",
    "objective",  # what a sweeper reads from the summary, not part of the run
)


def _flat(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_config(stored: dict, current: dict) -> None:
    """A resumed run must be the same run: refuse, naming the keys, when its config differs."""
    old, new = _flat(stored), _flat(json.loads(json.dumps(current)))
    differ = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUME_FREE_KEYS
    )
    if differ:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in differ[:6])
        raise ConfigError("trainer.resume", True, f"the stored run's config; these differ: {shown}")
