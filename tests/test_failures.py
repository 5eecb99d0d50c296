"""Failures end the whole job fast, name the rank that failed first, and leave no process behind."""

import json
import signal
import socket
import subprocess

import pytest

from tests.conftest import (
    DDP_SCRIPT,
    TINY,
    assert_no_litter,
    job_processes,
    wait_for,
    wait_for_no_leftovers,
)

pytestmark = pytest.mark.slow  # real jobs: several processes each

MODES = ["torchrun", "mp_spawn"]
HOST = socket.gethostname()


def failed_script_run(launcher, tmp_path, tmpdir, mode, *script_flags):
    """Run the test script with a fault; the job must fail as a whole, fast."""
    flags = ",".join(script_flags)
    launch = launcher.run(f"launcher={mode}", f"script={DDP_SCRIPT}",
                          f"script_args=[{tmp_path / 'out'},{flags}]", env={"TMPDIR": str(tmpdir)})
    assert launch.returncode == 1, launch.stderr
    assert launch.elapsed_s < 30
    assert_no_litter(tmpdir)
    return launch


@pytest.mark.parametrize("mode", MODES)
def test_raising_rank_is_named_with_host_and_traceback(launcher, tmp_path, short_tmpdir, mode):
    launch = failed_script_run(launcher, tmp_path, short_tmpdir, mode, "--fail-rank", "1")
    assert f"rank 1 on host {HOST} failed first: RuntimeError: deliberate failure on rank 1" in launch.stderr
    report = launch.stderr.split("failed first", 1)[1]
    assert 'ddp_script.py", line' in report and "raise RuntimeError" in report
    assert "launcher/child.py" not in report, "the report should show the user's frames only"
    failure = json.loads((launch.run_dir / "failure.json").read_text())
    assert failure["rank"] == 1 and failure["host"] == HOST
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.mark.parametrize("mode", MODES)
def test_rank_killed_by_signal_is_named(launcher, tmp_path, short_tmpdir, mode):
    launch = failed_script_run(launcher, tmp_path, short_tmpdir, mode, "--die-rank", "0")
    assert f"rank 0 on host {HOST} failed first: killed by SIGKILL" in launch.stderr
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_exception_inside_the_trainer_names_the_rank_and_the_model_code(launcher):
    launch = launcher.run(*TINY, "model._target_=tests.plugins.FaultyMLP", "+model.fault_step=3",
                          "+model.rank=1")
    assert launch.returncode == 1, launch.stderr
    assert f"rank 1 on host {HOST} failed first: RuntimeError: deliberate fault at training step 3" in launch.stderr
    assert "plugins.py" in launch.stderr.split("failed first", 1)[1]
    assert not (launch.run_dir / "summary.json").exists()
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_stalled_peer_fails_the_job_within_the_collective_timeout(launcher):
    # Rank 1 hangs for 60 s; rank 0 waits in the gradient all-reduce for collective_timeout=4 s.
    launch = launcher.run(*TINY, "collective_timeout=4", "model._target_=tests.plugins.FaultyMLP",
                          "+model.fault_step=3", "+model.rank=1", "+model.action=stall")
    assert launch.returncode == 1, launch.stderr
    assert launch.elapsed_s < 30, f"took {launch.elapsed_s:.0f}s: the collective timeout was not applied"
    assert f"rank 0 on host {HOST} failed first" in launch.stderr
    assert "timed out" in launch.stderr.split("failed first", 1)[1].lower()
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_rank_and_dataloader_worker(launcher, tmp_path, short_tmpdir, mode, signum):
    """And leaves nothing in TMPDIR (`launcher.scratch`)."""
    out = tmp_path / "out"
    proc, job_id = launcher.start(f"launcher={mode}", f"script={DDP_SCRIPT}",
                                  f"script_args=[{out},--hang,--workers,2]", env={"TMPDIR": str(short_tmpdir)})
    try:
        wait_for(lambda: all((out / f"hanging_{rank}").exists() for rank in (0, 1)), 60,
                 "both ranks to start their DataLoader workers")
        # 2 ranks, each with 2 workers, are running (plus helpers such as the launcher itself).
        assert len(job_processes(job_id)) >= 7
        proc.send_signal(signum)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired as hung:
            raise AssertionError(f"launcher still running 10 s after {signum.name}") from hung
        assert proc.returncode == 128 + signum
        assert "interrupted" in proc.stderr.read()
        wait_for_no_leftovers(job_id, timeout_s=5)
        assert_no_litter(short_tmpdir)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("mode", MODES)
def test_launcher_killed_with_sigkill_takes_its_ranks_along(launcher, tmp_path, mode):
    out = tmp_path / "out"
    proc, job_id = launcher.start(f"launcher={mode}", f"script={DDP_SCRIPT}", f"script_args=[{out},--hang,--workers,2]")
    try:
        wait_for(lambda: all((out / f"hanging_{rank}").exists() for rank in (0, 1)), 60,
                 "both ranks to start their DataLoader workers")
        proc.kill()
        proc.wait(timeout=5)
        # Ranks die with their parent at once; orphaned DataLoader workers notice within ~5 s.
        wait_for_no_leftovers(job_id, timeout_s=15)
    finally:
        proc.kill()
        proc.communicate()
