"""Warm rank starts (``launcher.start_method=forkserver``, the default): ranks forked from a process
that imported torch once, each still in its own session, a script still ``__main__`` with its own
argv and globals; ``spawn`` gives each rank a fresh interpreter; nothing outlives the job."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.jobs import parent_pid
from launcher.supervise import descendants
from tests.conftest import (
    REPO,
    assert_no_litter,
    assert_ok,
    wait_for,
    wait_for_no_leftovers,
)
from tests.test_api import run_program

PROBE = REPO / "tests" / "scripts" / "warm_probe.py"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
@pytest.mark.parametrize(("start_method", "warm"), [("forkserver", True), ("spawn", False)])
def test_script_starts_warm_or_fresh(launcher, tmp_path, short_tmpdir, mode, start_method, warm):
    out = tmp_path / "out"
    out.mkdir()
    fresh_start_method = subprocess.run([sys.executable, "-c", "import multiprocessing as m; print(m.get_start_method())"],
                                        capture_output=True, text=True, check=True).stdout.strip()
    launch = launcher.run(f"launcher={mode}", f"launcher.start_method={start_method}",
                          "--nproc-per-node=2", str(PROBE), "--flag", "x y",
                          env={"USER_SCRIPT_OUT": str(out), "TMPDIR": str(short_tmpdir)})
    assert_ok(launch)
    assert_no_litter(short_tmpdir)
    for rank in range(2):
        record = json.loads((out / f"rank_{rank}.json").read_text())
        assert record["forked_by_server"] is warm, record
        assert record["name"] == "__main__"
        assert record["argv"] == ["--flag", "x y"]
        assert record["fresh_globals"] == ["sys"]  # its own names, nothing of the warm process
        assert Path(record["cwd"]) == Path(launcher.workdir)
        assert record["own_session"]
        assert record["start_method"] == fresh_start_method  # its DataLoader workers start as usual
        assert (out / f"rank_{rank}.atexit").exists(), "the script's exit handler ran, as python's would"
        # Nothing of the launcher's own state: its logging, its open files, its Hydra app, its
        # signal handlers, its C++ log level (raised for its agent only).
        assert "probe says: the script's own logging" in (launch.run_dir / "logs" / f"rank_{rank}.log").read_text()
        assert not [name for name in record["open_files"] if name.endswith("launcher.log")], record["open_files"]
        assert record["hydra_starts_afresh"]
        assert record["signal_handlers"] == {"SIGINT": "default_int_handler"}
        assert record["cpp_log_level"] == 1, "TORCH_CPP_LOG_LEVEL unset: torch's default, WARNING"
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_a_tmpdir_too_long_for_the_servers_socket_starts_the_ranks_fresh(launcher, tmp_path, mode):
    """The fork server listens on a Unix socket made in TMPDIR, whose path may not exceed 107 bytes;
    a longer TMPDIR (some clusters set one per job) made the launch fail with a traceback."""
    long_tmpdir = tmp_path / ("t" * 60)
    long_tmpdir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    launch = launcher.run(f"launcher={mode}", "--nproc-per-node=2", str(PROBE),
                          env={"USER_SCRIPT_OUT": str(out), "TMPDIR": str(long_tmpdir)})
    assert_ok(launch)
    assert f"TMPDIR={long_tmpdir} is too long for the fork server's socket" in launch.stderr
    for rank in range(2):
        assert not json.loads((out / f"rank_{rank}.json").read_text())["forked_by_server"]
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_a_warm_script_may_end_with_os_exit(launcher, tmp_path, mode):
    """Forked, a rank that leaves with ``os._exit(0)`` returns nothing to torchrun's agent, which
    waited for it forever; its forked children leaving that way must not count as it finishing."""
    out = tmp_path / "out"
    out.mkdir()
    env = {"USER_SCRIPT_OUT": str(out), "USER_SCRIPT_END": "os_exit"}
    launch = launcher.run(f"launcher={mode}", "--nproc-per-node=2", str(PROBE), env=env, timeout_s=60)
    assert_ok(launch)
    assert json.loads((out / "rank_1.json").read_text())["forked_by_server"]
    for rank in range(2):  # flushed before the exit, as python -u would have
        assert f"rank {rank} last words, unflushed" in (launch.run_dir / "logs" / f"rank_{rank}.log").read_text()
    failing = launcher.run(f"launcher={mode}", "--nproc-per-node=2", str(PROBE), run_dir=tmp_path / "failing",
                           env={**env, "PROBE_RANK_1_CODE": "3"}, timeout_s=60)
    assert failing.returncode == 1, failing.stderr[-3000:]
    assert "rank 1 on host" in failing.stderr and "exited with code 3" in failing.stderr, failing.stderr[-3000:]
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
        # The launcher's child that is the ranks' parent (its other child, multiprocessing's
        # resource tracker, has none).
        below = descendants(proc.pid)
        servers = [pid for pid in below if parent_pid(pid) == proc.pid
                   and any(parent_pid(other) == pid for other in below)]
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


def test_the_warm_trainer_leaves_tensorboard_and_matplotlib_to_rank_0():
    """The fork server preloads the trainer before any rank can start: what only rank 0 needs, and
    only once it writes (TensorBoard about 0.3 s, matplotlib about 0.5 s), must not be in it."""
    probe = ("import sys, trainer.train; "
             "print(sorted({name.split('.')[0] for name in sys.modules} & {'tensorboard', 'matplotlib'}))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip() == "[]"
