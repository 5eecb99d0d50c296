"""Bad configuration on the real command line: one line naming the key, exit code 2, nothing
started, nothing written. What each key allows is tested in-process (tests/test_validation.py);
these cases prove the command-line path: Hydra's callback, Hydra's own errors, dry runs."""

import socket

import pytest

from launcher.config import _backend
from launcher.errors import ConfigError
from tests.conftest import assert_ok

BAD = [
    (["nodes=0"], "nodes=0"),
    (["data.batch_size=0"], "data.batch_size=0"),  # read by the trainer only: once a failure in every rank
    (["trainer.epochs=${nosuch}"], "trainer.epochs='${nosuch}': cannot be resolved"),  # once after .hydra/
    (["dry_run=true", "launcher.rdzv=c10d", "launcher.rdzv_endpoint=123"],
     "launcher.rdzv_endpoint=123: allowed: null or HOST:PORT"),  # once a traceback in the callback
    (["nodes=2", "master_port=29500"], "node_rank='auto': with nodes=2 outside Slurm"),
]
# Hydra's own errors: an unknown group option or key, an override that does not parse.
HYDRA_ERRORS = [
    (["launcher=nope"], "error: launcher=nope: no such option; available: mp_spawn, slurm, torchrun"),
    (["data.batchsiz=3"], "error: unknown key data.batchsiz: did you mean data.batch_size?"),
    (["launcher=mp_spawn", "launcher.rdzv=c10d"],
     "error: unknown key launcher.rdzv: launcher has name, start_method, shutdown_grace_s, local_rank_arg"),
    (["trainer.epochs=["], "error: trainer.epochs=[: cannot parse it (no viable alternative at input '[')"),
    (["-m", "launcher=nope"], "error: launcher=nope: no such option"),
]


def assert_rejected(launch, key_text):
    assert launch.returncode == 2, launch.stderr
    lines = launch.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{launch.stderr}"
    assert lines[0].startswith("error: invalid config: ") and key_text in lines[0], lines[0]
    assert "Traceback" not in launch.stderr


@pytest.mark.slow  # ~1 s a case; each message is checked in-process in tests/test_validation.py
@pytest.mark.parametrize(("overrides", "key_text"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_rejected_before_anything_starts(launcher, overrides, key_text):
    launch = launcher.run(*overrides)
    assert_rejected(launch, key_text)
    assert not launch.run_dir.exists(), "a rejected run created its run directory"


@pytest.mark.parametrize(("overrides", "line"), HYDRA_ERRORS, ids=[" ".join(o) for o, _ in HYDRA_ERRORS])
def test_hydra_errors_are_one_line_with_exit_code_2(launcher, overrides, line):
    launch = launcher.run(*overrides)
    assert launch.returncode == 2, launch.stderr
    assert launch.stderr.splitlines() == [launch.stderr.strip()] and launch.stderr.startswith(line), launch.stderr
    assert not launch.run_dir.exists() and not (launcher.workdir / "multirun").exists()


@pytest.mark.slow  # about a second; the message is checked in-process in tests/test_validation.py
def test_a_sweep_with_a_bad_value_it_does_not_vary_is_refused_once(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    launch = launcher.run("-m", "optim.lr=0.1,0.01", "data.batch_size=0", f"hydra.sweep.dir={sweep}")
    assert_rejected(launch, "data.batch_size=0")
    assert not sweep.exists()


def test_port_in_use_is_named(launcher):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        launch = launcher.run(f"master_port={port}")
    assert_rejected(launch, f"port {port} is already in use on 127.0.0.1")


def test_unwritable_run_dir(launcher, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    launch = launcher.run(run_dir=blocker / "run")
    assert_rejected(launch, "hydra.run.dir=")
    assert "is not a directory" in launch.stderr


@pytest.mark.slow  # trains a run first (real job)
def test_rejected_run_leaves_existing_run_dir_untouched(launcher, tmp_path):
    run_dir = tmp_path / "existing"
    assert_ok(launcher.run("trainer.epochs=1", "data.dataset.num_samples=256", run_dir=run_dir))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes())
              for path in run_dir.rglob("*") if path.is_file()}
    assert (run_dir / "checkpoints" / "last.pt") in before
    launch = launcher.run("nodes=0", run_dir=run_dir)
    assert launch.returncode == 2
    after = {path: (path.stat().st_mtime_ns, path.read_bytes())
             for path in run_dir.rglob("*") if path.is_file()}
    assert after == before


def test_nccl_with_fewer_devices_than_processes_names_both_counts():
    # The GPU count cannot be changed on this machine: the pure check gets it as an argument.
    with pytest.raises(ConfigError) as error:
        _backend("nccl", local_procs=4, cuda_devices=2)
    assert "4 processes" in str(error.value) and "2 visible devices" in str(error.value)
