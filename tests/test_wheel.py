"""A built wheel holds the configs and runs outside the source tree."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_trains(tmp_path):
    # Build from a copy of the files git knows (a build/ left in the tree would be reused).
    source = tmp_path / "source"
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        cwd=tmp_path,
        timeout=600,
    )
    (wheel,) = wheels.glob("lossbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lossbench/configs/config.yaml" in names
    assert "lossbench/configs/probe/sharpness.yaml" in names

    # A fresh venv with the wheel alone; its dependencies come from this environment's
    # site-packages by a .pth path entry (no network), whose own .pth files (the editable
    # install of the source tree) are not processed.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (venv / purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
        + [str(wheel)],
        check=True,
        timeout=600,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    where = subprocess.run(
        [str(python), "-c", "import lossbench; print(lossbench.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # not the source tree
    result = subprocess.run(
        [str(venv / "bin" / "lossbench"), "model.widths=[8]", "trainer.steps=10"]
        + ["trainer.log_every=5", "probe=off", "trainer.progress=false"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "completed 10 steps" in result.stdout
    assert (tmp_path / "run" / "metrics.parquet").exists()
