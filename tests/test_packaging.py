"""A plain (non-editable) install ships the Hydra configs and runs ``python -m launcher``."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import RANK_VARIABLES, REPO

pytestmark = pytest.mark.slow  # real jobs: several processes each

SOURCES = ["pyproject.toml", "README.md", "launcher", "trainer", "conf", "hydra_plugins"]


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(source)], check=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("launcher/conf/config.yaml", "launcher/conf/launcher/torchrun.yaml",
                   "launcher/conf/launcher/mp_spawn.yaml", "launcher/conf/data/synthetic.yaml",
                   "launcher/conf/hydra/job_logging/launcher.yaml"):
        assert config in names, f"{config} missing from the wheel"

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    assert not set(env) & set(RANK_VARIABLES)
    run_dir = workdir / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "launcher=mp_spawn", "trainer.epochs=1",
         "data.dataset.num_samples=512", f"hydra.run.dir={run_dir}"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "summary.json").exists()
    launcher_file = subprocess.run(
        [sys.executable, "-c", "import launcher, trainer; print(launcher.__file__, trainer.__file__)"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert str(REPO) not in launcher_file and str(site) in launcher_file
