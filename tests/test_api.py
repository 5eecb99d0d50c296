"""``launcher.launch()`` from a Python program: a function or a script on every rank, rank 0's
result back, the first failing rank raised with its traceback, nothing left running."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, job_processes

pytestmark = pytest.mark.slow


def run_program(launcher, tmp_path, body: str) -> subprocess.CompletedProcess:
    """A Python program (as a user's or a notebook's) that imports launcher and calls launch()."""
    job_id = launcher.new_job_id()
    program = "import json, launcher\nfrom tests import api_functions\n" + textwrap.dedent(body)
    proc = launcher.run_command([sys.executable, "-c", program], launcher.env(job_id), timeout_s=180)
    assert not job_processes(job_id), "processes of the job outlived launch()"
    return proc


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_function_on_three_ranks_returns_rank_zeros_result_or_all(launcher, tmp_path, mode):
    proc = run_program(launcher, tmp_path, f"""
        first = launcher.launch(api_functions.reduce_ranks, 2.0, gpus=3, launcher="{mode}",
                                **{{"hydra.run.dir": "{tmp_path}/one"}})
        every = launcher.launch(api_functions.reduce_ranks, 1.0, gpus=3, launcher="{mode}",
                                return_all=True, overrides=["hydra.run.dir={tmp_path}/all"])
        print(json.dumps([first, every]))
    """)
    assert proc.returncode == 0, proc.stderr
    first, every = json.loads(proc.stdout.splitlines()[-1])
    assert first == {"rank": 0, "world_size": 3, "sum": 12.0, "local_rank": 0}
    assert [result["rank"] for result in every] == [0, 1, 2] and {r["sum"] for r in every} == {6.0}


def test_failing_rank_is_raised_with_its_traceback(launcher, tmp_path):
    proc = run_program(launcher, tmp_path, f"""
        from launcher.errors import LaunchFailed
        try:
            launcher.launch(api_functions.fail_on_rank, 1, gpus=2, **{{"hydra.run.dir": "{tmp_path}/run"}})
        except LaunchFailed as failed:
            print(json.dumps({{"message": str(failed), "rank": failed.failure.rank}}))
    """)
    assert proc.returncode == 0, proc.stderr
    caught = json.loads(proc.stdout.splitlines()[-1])
    assert caught["rank"] == 1
    assert "rank 1 on host" in caught["message"]
    assert "ValueError: deliberate failure in a launched function on rank 1" in caught["message"]
    assert "api_functions.py" in caught["message"], "the traceback names the user's code"


def test_script_with_verbatim_arguments(launcher, tmp_path):
    out = tmp_path / "out"
    script = REPO / "tests" / "scripts" / "user_script.py"
    proc = run_program(launcher, tmp_path, f"""
        import os
        os.environ["USER_SCRIPT_OUT"] = "{out}"
        result = launcher.launch("{script}", args=["--lr=0.1", "a b", "${{x}}"], gpus=2,
                                 **{{"hydra.run.dir": "{tmp_path}/run"}})
        print(json.dumps(result))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) is None
    for rank in (0, 1):
        assert json.loads((out / f"rank_{rank}.json").read_text())["argv"] == ["--lr=0.1", "a b", "${x}"]


def test_bad_value_raises_before_anything_starts(launcher, tmp_path):
    proc = run_program(launcher, tmp_path, f"""
        from launcher.errors import ConfigError
        try:
            launcher.launch(api_functions.reduce_ranks, 1.0, gpus=0, **{{"hydra.run.dir": "{tmp_path}/run"}})
        except ConfigError as error:
            print("ConfigError:", error)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ConfigError: invalid config: gpus=0" in proc.stdout
    assert not (tmp_path / "run").exists()


def test_function_in_main_is_refused_with_the_reason(launcher, tmp_path):
    proc = run_program(launcher, tmp_path, """
        def local_function():
            return 1
        try:
            launcher.launch(local_function, gpus=2)
        except TypeError as error:
            print("TypeError:", error)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "defined in __main__" in proc.stdout
