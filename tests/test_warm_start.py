"""Warm rank starts (``launcher.start_method=forkserver``, the default): ranks forked from a process
that imported torch once, each still in its own session, a script still ``__main__`` with its own
argv and globals; ``spawn`` gives each rank a fresh interpreter; nothing outlives the job."""

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_ok, wait_for_no_leftovers
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
