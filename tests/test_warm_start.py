"""Warm rank starts (``launcher.start_method=forkserver``, the default): ranks forked from a process
that imported torch once, each still in its own session, a script still ``__main__`` with its own
argv and globals; ``spawn`` gives each rank a fresh interpreter; nothing outlives the job."""

import json
import os
import signal
from pathlib import Path

import pytest

from launcher.jobs import parent_pid
from launcher.supervise import descendants
from tests.conftest import REPO, assert_ok, wait_for, wait_for_no_leftovers
from tests.test_api import run_program

PROBE = REPO / "tests" / "scripts" / "warm_probe.py"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("start_method", "warm"), [("forkserver", True), ("spawn", False)])
def test_script_under_mp_spawn_starts_warm_or_fresh(launcher, tmp_path, start_method, warm):
    out = tmp_path / "out"
    out.mkdir()
    launch = launcher.run("launcher=mp_spawn", f"launcher.start_method={start_method}",
                          "--nproc-per-node=2", str(PROBE), "--flag", "x y",
                          env={"USER_SCRIPT_OUT": str(out)})
    assert_ok(launch)
    for rank in range(2):
        record = json.loads((out / f"rank_{rank}.json").read_text())
        assert record["forked_by_server"] is warm, record
        assert record["name"] == "__main__"
        assert record["argv"] == ["--flag", "x y"]
        assert record["fresh_globals"] == ["sys"]  # its own names, nothing of the warm process
        assert Path(record["cwd"]) == Path(launcher.workdir)
        assert record["own_session"]
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_functions_start_warm_in_their_own_session_and_leave_nothing(launcher, tmp_path, mode):
    proc = run_program(launcher, tmp_path, f"""
        every = launcher.launch(api_functions.how_started, gpus=2, launcher="{mode}", return_all=True,
                                **{{"hydra.run.dir": "{tmp_path}/run"}})
        print(json.dumps(every))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    every = json.loads(proc.stdout.strip().splitlines()[-1])
    assert every == [{"forked": True, "parent_is_launcher": False, "own_session": True}] * 2


def test_stop_signals_to_every_process_leave_the_fork_server_to_the_launcher(launcher, tmp_path):
    """Slurm signals every process of a step (scancel --signal, a preemption's SIGTERM). The fork
    server must outlive them: ranks whose parent it is would die with it before checkpointing."""
    proc, job_id = launcher.start("trainer.epochs=1000", "data.dataset.num_samples=2048")
    try:
        metrics = launcher.workdir / "run" / "metrics.jsonl"

        def epochs() -> int:
            return metrics.read_text().count("\n") if metrics.exists() else 0

        wait_for(lambda: epochs() >= 1, 120, "the first epoch")
        # The launcher's child whose command is the fork server (its forks, the ranks, share it).
        servers = [pid for pid in descendants(proc.pid) if parent_pid(pid) == proc.pid
                   and b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(servers) == 1, "the job's ranks come from one fork server"
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM):
            os.kill(servers[0], signum)
        signalled_at = epochs()
        wait_for(lambda: epochs() >= signalled_at + 2, 60, "two more epochs after the signals")
        assert servers[0] in descendants(proc.pid), "the fork server died of a stop signal"
        proc.send_signal(signal.SIGTERM)  # the launcher stops the job as it would under Slurm
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped every rank" in stderr
    assert "killed by SIGKILL" not in stderr, "ranks died with the fork server"
    wait_for_no_leftovers(job_id)
