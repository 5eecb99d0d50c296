"""``python -m launcher.status``, ``launcher.logs`` and ``launcher.cancel`` on real local runs:
one that finishes, one that fails, one running, one killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_ok, wait_for, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # real jobs

# rank 1 raises in "fail" mode; otherwise every rank waits until the gate file exists.
GATED_SCRIPT = """\
import os, sys, time
from pathlib import Path
rank = int(os.environ["RANK"])
mode, gate = sys.argv[1], Path(sys.argv[2])
print(f"rank {rank} started", flush=True)
if mode == "fail" and rank == 1:
    raise RuntimeError("deliberate failure on rank 1")
deadline = time.time() + 120
while not gate.exists() and time.time() < deadline:
    time.sleep(0.05)
print(f"rank {rank} released", flush=True)
"""


def tool(name: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", f"launcher.{name}", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout_s, env=env, cwd=REPO)


def status_json(run_dir: Path) -> dict:
    done = tool("status", run_dir, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "gated.py"
    path.write_text(GATED_SCRIPT)
    return path


def test_finished_training_run(launcher, tmp_path):
    run_dir = tmp_path / "done"
    assert_ok(launcher.run("data.dataset.num_samples=512", "trainer.epochs=2", run_dir=run_dir))
    found = status_json(run_dir)
    assert found["state"] == "finished" and found["target"] == "built-in trainer"
    assert found["attempts"] == 1 and found["failure"] is None
    progress = found["progress"]
    assert progress["epoch"] == 2 and progress["epochs"] == 2
    assert 0 < progress["val_acc"] <= 1 and progress["val_loss"] > 0 and progress["samples_per_s"] > 0
    assert progress["epoch_s"] is not None and progress["eta_s"] is None  # no ETA for an ended run
    text = tool("status", run_dir)
    assert text.returncode == 0
    assert "state:     finished" in text.stdout and "epoch 2/2" in text.stdout, text.stdout
    # -f on a finished run prints the latest attempt and ends once the file is quiet for 2 s.
    start = time.monotonic()
    follow = tool("logs", run_dir, "-f", timeout_s=30)
    assert follow.returncode == 0
    assert follow.stdout.startswith("==== attempt 0: rank 0 ") and "epoch 2/2" in follow.stdout
    assert 2 <= time.monotonic() - start < 15


def test_not_a_run_dir_and_unknown_rank(tmp_path, launcher):
    done = tool("status", tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not a run directory" in done.stderr
    done = tool("status", tmp_path / "missing")
    assert done.returncode == 2 and "no such directory" in done.stderr


def test_failed_script_run(launcher, tmp_path, script):
    run_dir = tmp_path / "failed"
    run = launcher.run("--nproc-per-node=2", str(script), "fail", str(tmp_path / "never"), run_dir=run_dir)
    assert run.returncode == 1, run.stderr[-3000:]
    found = status_json(run_dir)
    assert found["state"] == "failed"
    failure = found["failure"]
    assert failure["rank"] == 1 and failure["error"] == "RuntimeError: deliberate failure on rank 1"
    assert str(run_dir / "failure.json") in failure["traceback_in"][0]
    assert str(run_dir / "logs" / "rank_1.log") in failure["traceback_in"]
    assert found["progress"] is None and set(found["ranks"]) == {"0", "1"}  # a script: per-rank logs
    text = tool("status", run_dir).stdout
    assert "failure:   rank 1 on" in text and "deliberate failure on rank 1" in text, text
    assert "rank 1:" in text and text.rstrip().endswith("| RuntimeError: deliberate failure on rank 1"), text
    rank1 = tool("logs", run_dir, "--rank", "1")
    assert rank1.returncode == 0
    assert rank1.stdout.startswith("==== attempt 0: rank 1 (local rank 1)")
    assert "rank 1 started" in rank1.stdout and "RuntimeError: deliberate failure on rank 1" in rank1.stdout
    assert "rank 0 started" not in rank1.stdout
    unknown = tool("logs", run_dir, "--rank", "7")
    assert unknown.returncode == 2 and unknown.stderr.strip().endswith("ranks there: 0, 1"), unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_running_then_released_script_run(launcher, tmp_path, script):
    run_dir, gate = tmp_path / "running", tmp_path / "gate"
    proc, job_id = launcher.start("--nproc-per-node=2", str(script), "wait", str(gate), run_dir=run_dir)
    logs = run_dir / "logs"
    try:
        wait_for(lambda: all((logs / f"rank_{r}.log").exists() and f"rank {r} started" in
                             (logs / f"rank_{r}.log").read_text() for r in (0, 1)), 60, "both ranks to start")
        found = status_json(run_dir)
        assert found["state"] == "running", found
        assert found["latest_attempt"]["pid"] in found["alive_pids"]
        assert "rank 0 started" in found["ranks"]["0"]["last_lines"][-1]
        assert "rank 1 started" in tool("logs", run_dir, "--rank", "1").stdout
        # -f follows a running rank: what is appended after the start shows up.
        follower = subprocess.Popen([sys.executable, "-m", "launcher.logs", str(run_dir), "-f"],
                                    cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        gate.touch()
        assert proc.wait(timeout=60) == 0
        out, _ = follower.communicate(timeout=30)  # ends by itself: launcher.log says finished
        assert "rank 0 released" in out
    finally:
        gate.touch()
    found = status_json(run_dir)
    assert found["state"] == "finished" and "all ranks finished" in found["detail"], found
    wait_for_no_leftovers(job_id)


def test_killed_run_is_not_running(launcher, tmp_path, script):
    run_dir = tmp_path / "killed"
    proc, job_id = launcher.start("--nproc-per-node=2", str(script), "wait", str(tmp_path / "gate"),
                                  run_dir=run_dir)
    log = run_dir / "logs" / "rank_0.log"
    wait_for(lambda: log.exists() and "rank 0 started" in log.read_text(), 60, "rank 0 to start")
    assert status_json(run_dir)["state"] == "running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for_no_leftovers(job_id)
    found = status_json(run_dir)
    assert found["state"] == "stopped" and "killed?" in found["detail"], found
    assert found["alive_pids"] == []
    assert "stopped (no summary, no failure: killed?)" in tool("status", run_dir).stdout


def test_cancel_stops_a_local_run(launcher, tmp_path, script):
    run_dir = tmp_path / "cancelled"
    proc, job_id = launcher.start("--nproc-per-node=2", str(script), "wait", str(tmp_path / "gate"),
                                  run_dir=run_dir)
    log = run_dir / "logs" / "rank_1.log"
    wait_for(lambda: log.exists() and "rank 1 started" in log.read_text(), 60, "rank 1 to start")
    done = tool("cancel", run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent SIGTERM to the launcher (pid {proc.pid}" in done.stdout and "stopped" in done.stdout
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    wait_for_no_leftovers(job_id)
    found = status_json(run_dir)
    assert found["state"] == "stopped" and "interrupted (received SIGTERM)" in found["detail"], found
    again = tool("cancel", run_dir)
    assert again.returncode == 0 and "nothing to cancel" in again.stdout
