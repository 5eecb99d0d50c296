"""Golden files: the exact text a dry run prints, for a few fixed command lines.

``python -m launcher ... dry_run=true`` prints each rank's place and the command that would start
it; with ``launcher=slurm`` it prints the sbatch script submitit would hand to Slurm. Each case
below is a command line; its text is made in-process, as the command line makes it (the flags
read by ``launcher.cli``, the config composed with Hydra's compose API, checked by
``launcher.app.load_checked``, printed by the launch's ``describe()``),
and compared exactly with ``tests/golden/<case>.txt``. ``test_the_command_line_prints_the_golden_text``
(slow) runs the real ``python -m launcher`` on the same command lines and compares its output with
the same files.

What differs from machine to machine is replaced, in this order, before comparing:

- the test's working directory (its ``tmp_path``; the run directory is ``WORKDIR/run``) -> ``WORKDIR``
- the Python executable (``sys.executable``) -> ``PYTHON``
- the repository's path -> ``REPO``
- the master port, picked free at run time (``launcher.network.free_port``) -> ``PORT``

Nothing else is normalised: the backend and the GPU counts are given (no CUDA probe), and
``CUDA_VISIBLE_DEVICES`` and the Slurm and torchrun variables are removed for the test. No case
names a host: the addresses are 127.0.0.1. The mp_spawn command names the fork server the ranks
would be forked from, which a fresh launcher process has not started at a dry run (None); the
in-process text is made as there, whatever this test process started before.

After an intended change to what a dry run prints, rewrite the files and review the diff::

    UPDATE_GOLDEN=1 pytest tests/test_golden.py
    git diff tests/golden/

Only the in-process test writes the files; the slow one then compares the real command line's
output with what was written.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from launcher import app
from launcher.__main__ import CONFIG_DIR
from launcher.cli import parse_command_line
from launcher.modes import mp_spawn
from launcher.network import free_port
from tests.composing import composed
from tests.conftest import REPO

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# case (the golden file's name) -> the command line after `python -m launcher`; {port}: a free port.
CASES = {
    "dry_run_torchrun": ["dry_run=true", "gpus=2", "backend=gloo", "master_port={port}"],
    "dry_run_mp_spawn_second_node": ["dry_run=true", "launcher=mp_spawn", "nodes=2", "gpus=[2,1]",
                                     "node_rank=1", "master_addr=127.0.0.1", "master_port={port}",
                                     "backend=gloo"],
    "dry_run_c10d": ["dry_run=true", "nodes=2", "gpus=2", "backend=gloo", "launcher.rdzv=c10d",
                     "launcher.rdzv_endpoint=127.0.0.1:29400", "launcher.rdzv_id=job7"],
    # torchrun's flags and a script with its arguments (train.py in the working directory)
    "dry_run_torchrun_flags_and_script": ["--nproc-per-node=2", "--max-restarts=0", "backend=gloo",
                                          "dry_run=true", "master_port={port}", "train.py", "--lr=0.1",
                                          "a b"],
    # slurm.cpus_per_task pinned: auto asks this machine's sinfo (launcher.slurm.cpus)
    "sbatch_launcher_slurm": ["launcher=slurm", "dry_run=true", "nodes=2", "gpus=2", "slurm.partition=debug",
                              "slurm.time=30", "slurm.cpus_per_task=1", "slurm.setup=['module load cuda/12.1']",
                              "+slurm.extra.exclusive=true"],
}


class Case:
    """One case's command line, in its own working directory with a free master port."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir.resolve()
        self.run_dir = self.workdir / "run"
        self.port = free_port("127.0.0.1")
        self.argv = [arg.format(port=self.port) for arg in CASES[name]]
        (self.workdir / "train.py").write_text("print('hello')\n")

    def normalised(self, text: str) -> str:
        for machine, placeholder in ((str(self.workdir), "WORKDIR"), (sys.executable, "PYTHON"),
                                     (str(REPO), "REPO")):
            text = text.replace(machine, placeholder)
        text = re.sub(rf"(?<!\d){self.port}(?!\d)", "PORT", text)
        for machine in (str(self.workdir), sys.executable, str(REPO), sys.prefix):
            assert machine not in text, f"{machine!r} is left in the text of {self.name}:\n{text}"
        return text.rstrip("\n") + "\n"

    def assert_golden(self, text: str, may_update: bool = True) -> None:
        golden = GOLDEN_DIR / f"{self.name}.txt"
        actual = self.normalised(text)
        if UPDATE and may_update:
            GOLDEN_DIR.mkdir(exist_ok=True)
            golden.write_text(actual)
            return
        assert golden.exists(), f"{golden} is missing; write it with UPDATE_GOLDEN=1 pytest {__file__}"
        expected = golden.read_text()
        if actual != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                                actual.splitlines(keepends=True),
                                                fromfile=str(golden), tofile=f"{self.name} (now)"))
            pytest.fail(f"the text of {self.name} differs from {golden.name} (if the change is "
                        f"intended: UPDATE_GOLDEN=1 pytest {__file__}):\n{diff}", pytrace=False)


@pytest.fixture
def plain_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Slurm step, no rank of another launcher, no user's device selection: the same text on
    every machine, with or without GPUs."""
    for name in [name for name in os.environ if name.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(name)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)


def printed_in_process(case: Case, monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``python -m launcher`` prints for the case's command line, made in this process."""
    # The directory the command line is typed in: a relative script is found there.
    monkeypatch.chdir(case.workdir)
    # A fresh launcher process runs no fork server before a dry run (this test process may).
    monkeypatch.setattr(mp_spawn, "fork_server_pid", lambda: None)
    overrides = parse_command_line(case.argv, config_dir=CONFIG_DIR).hydra_args
    cfg = composed(f"hydra.run.dir={case.run_dir}", *overrides)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # restored after
    HydraConfig.instance().set_config(cfg)  # as Hydra sets it; SubmitPlan reads the overrides there
    launch = app.load_checked(cfg, case.run_dir)
    assert launch.dry_run
    return launch.describe()


@pytest.mark.parametrize("name", CASES)
def test_dry_run_text_is_the_golden_text(name, tmp_path, monkeypatch, plain_machine):
    case = Case(name, tmp_path)
    case.assert_golden(printed_in_process(case, monkeypatch))
    assert not case.run_dir.exists(), "a dry run created the run directory"


@pytest.mark.slow  # the real command line: one launcher process per case
@pytest.mark.parametrize("name", CASES)
def test_the_command_line_prints_the_golden_text(name, launcher, plain_machine):
    case = Case(name, launcher.workdir)
    # The venv's bin only: no Slurm command, so nothing could be submitted even by mistake.
    done = launcher.run(*case.argv, run_dir=case.run_dir, env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stderr == "", done.stderr
    case.assert_golden(done.stdout, may_update=False)  # the in-process test writes the files
    assert not case.run_dir.exists(), "a dry run created the run directory"
