"""A user's own torchrun-compatible script, launched as torchrun users type it: arguments verbatim,
per-rank logs, console prefix and filter, timeouts that apply, no shadowing of our packages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_ok, project_with_its_own_trainer, wait_for_no_leftovers

USER_SCRIPT = REPO / "tests" / "scripts" / "user_script.py"
MODES = ["torchrun", "mp_spawn"]
# Arguments a shell would hand over as they are; each must reach the script byte for byte.
NASTY_ARGS = ["--lr=0.1", "a b", "it's", 'say "hi"', "key=value", "+gpus=3", "trainer.epochs=1",
              "--nproc-per-node=7", "${oc.env:HOME}", "back\\slash\\", "", "x,y", "[1,2]", "ünï"]

pytestmark = pytest.mark.slow


def records(out: Path, world_size: int) -> list[dict]:
    return [json.loads((out / f"rank_{rank}.json").read_text()) for rank in range(world_size)]


@pytest.mark.parametrize("mode", MODES)
def test_torchrun_command_line_reaches_three_ranks_verbatim(launcher, tmp_path, mode):
    out = tmp_path / "out"
    launch = launcher.run(f"launcher={mode}", "--nproc-per-node=3", str(USER_SCRIPT), *NASTY_ARGS,
                          env={"USER_SCRIPT_OUT": str(out)})
    assert_ok(launch)
    for rank, record in enumerate(records(out, 3)):
        assert record["argv"] == NASTY_ARGS
        assert (record["RANK"], record["LOCAL_RANK"], record["WORLD_SIZE"]) == (str(rank), str(rank), "3")
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_module_form_runs_a_package_module_from_the_working_directory(launcher, tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(USER_SCRIPT, package / "train.py")
    out = tmp_path / "out"
    launch = launcher.run("--nproc_per_node", "2", "-m", "mypkg.train", "--epochs", "3",
                          env={"USER_SCRIPT_OUT": str(out)})
    assert_ok(launch)
    assert [record["argv"] for record in records(out, 2)] == [["--epochs", "3"]] * 2


def test_no_python_runs_an_executable_per_rank(launcher, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    command = 'echo "rank $RANK of $WORLD_SIZE: $1" > "$0/rank_$RANK.txt"'
    launch = launcher.run("--nproc-per-node=2", "--no-python", "sh", "-c", command, str(out), "a b")
    assert_ok(launch)
    assert [(out / f"rank_{rank}.txt").read_text() for rank in (0, 1)] == \
        ["rank 0 of 2: a b\n", "rank 1 of 2: a b\n"]


@pytest.mark.parametrize("mode", MODES)
def test_legacy_local_rank_argument_is_appended(launcher, tmp_path, mode):
    script = tmp_path / "legacy.py"
    script.write_text(
        "import argparse, os\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--local_rank', type=int, required=True)\n"
        "parser.add_argument('--tag')\n"
        "args = parser.parse_args()\n"
        "open(os.path.join(os.path.dirname(__file__), f'local_{args.local_rank}_{args.tag}'), 'w').close()\n")
    launch = launcher.run(f"launcher={mode}", "--local-rank-arg", "--nproc-per-node=2", str(script), "--tag", "t")
    assert_ok(launch)
    assert (tmp_path / "local_0_t").exists() and (tmp_path / "local_1_t").exists()


@pytest.mark.parametrize("mode", MODES)
def test_crash_output_in_per_rank_logs_and_traceback_once_on_the_console(launcher, tmp_path, mode):
    launch = launcher.run(f"launcher={mode}", "--nproc-per-node=2", str(USER_SCRIPT),
                          env={"USER_SCRIPT_MODE": "fail"})
    assert launch.returncode == 1, launch.stderr
    logs = launch.run_dir / "logs"
    assert sorted(path.name for path in logs.iterdir()) == ["rank_0.log", "rank_1.log"]
    failed = (logs / "rank_1.log").read_text()
    assert failed.startswith("==== attempt 0: rank 1 (local rank 1)")
    assert "hello from rank 1 on stdout" in failed and "warning from rank 1 on stderr" in failed
    assert "RuntimeError: deliberate failure on rank 1, attempt 0" in failed
    assert failed.index("hello from rank 1") < failed.index("Traceback")
    assert "hello from rank 0 on stdout" in (logs / "rank_0.log").read_text()
    console = launch.stdout + launch.stderr
    assert console.count("Traceback (most recent call last)") == 1, console
    assert "rank 1 on host" in launch.stderr and "failed first: RuntimeError: deliberate failure" in launch.stderr
    assert "Terminating process" not in console
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_logs_are_appended_across_a_torchrun_restart(launcher, tmp_path):
    launch = launcher.run("--max-restarts=1", "--nproc-per-node=2", str(USER_SCRIPT),
                          env={"USER_SCRIPT_MODE": "fail_first_attempt"})
    assert_ok(launch)
    log = (launch.run_dir / "logs" / "rank_1.log").read_text()
    first, second = log.index("==== attempt 0: rank 1"), log.index("==== attempt 1: rank 1")
    assert first < log.index("deliberate failure on rank 1, attempt 0") < second
    assert "rank 1 done: sum 2" in log[second:]
    assert "recovered by 1 restart(s)" in launch.stderr


@pytest.mark.parametrize("mode", MODES)
def test_console_prefixes_every_line_and_filters_ranks(launcher, tmp_path, mode):
    everyone = launcher.run(f"launcher={mode}", "--nproc-per-node=2", str(USER_SCRIPT),
                            run_dir=tmp_path / "all")
    assert_ok(everyone)
    for rank in (0, 1):
        assert f"[rank {rank}] hello from rank {rank} on stdout" in everyone.stdout.splitlines()
        assert f"[rank {rank}] warning from rank {rank} on stderr" in everyone.stderr.splitlines()
    only_zero = launcher.run(f"launcher={mode}", "console_ranks=0", "--nproc-per-node=2", str(USER_SCRIPT),
                             run_dir=tmp_path / "zero")
    assert_ok(only_zero)
    assert "[rank 0] hello from rank 0 on stdout" in only_zero.stdout
    assert "[rank 1]" not in only_zero.stdout + only_zero.stderr
    assert "hello from rank 1 on stdout" in (only_zero.run_dir / "logs" / "rank_1.log").read_text()
    local_filter = launcher.run(f"launcher={mode}", "--local-ranks-filter=1", "--nproc-per-node=2",
                                str(USER_SCRIPT), run_dir=tmp_path / "local")
    assert_ok(local_filter)
    assert "[rank 1] hello from rank 1" in local_filter.stdout and "[rank 0]" not in local_filter.stdout


@pytest.mark.parametrize("mode", MODES)
def test_script_stalled_in_a_collective_fails_within_the_collective_timeout(launcher, mode):
    launch = launcher.run(f"launcher={mode}", "collective_timeout=3", "--nproc-per-node=2", str(USER_SCRIPT),
                          env={"USER_SCRIPT_MODE": "stall"}, timeout_s=60)
    assert launch.returncode == 1, launch.stderr
    # start-up (~3 s) + 3 s + stopping the stalled rank; it would otherwise take 40 s
    assert launch.elapsed_s < 25, f"took {launch.elapsed_s:.1f}s"
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_script_keeps_its_own_timeout(launcher):
    launch = launcher.run("collective_timeout=3", "--nproc-per-node=2", str(USER_SCRIPT),
                          env={"USER_SCRIPT_MODE": "own_timeout"}, timeout_s=60)
    assert_ok(launch)
    assert "rank 0 done: sum 2" in launch.stdout


@pytest.mark.parametrize("mode", MODES)
def test_peer_that_never_joins_fails_within_the_init_timeout(launcher, mode):
    launch = launcher.run(f"launcher={mode}", "init_timeout=5", "--nproc-per-node=2", str(USER_SCRIPT),
                          env={"USER_SCRIPT_MODE": "never_join"}, timeout_s=90)
    assert launch.returncode == 1, launch.stderr
    assert launch.elapsed_s < 30, f"took {launch.elapsed_s:.1f}s; rank 1 sleeps 60 s"
    assert "rank 0" in launch.stderr
    wait_for_no_leftovers(launcher.job_ids[-1])


def shadowing_files(workdir: Path) -> None:
    """The names users give their own files: none may replace the launcher's or trainer's code."""
    (workdir / "trainer.py").write_text("raise SystemExit('the user trainer.py was imported')\n")
    (workdir / "launcher.py").write_text("raise SystemExit('the user launcher.py was imported')\n")
    package = workdir / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Sequential):\n"
        "    def __init__(self, in_features, num_classes, **_):\n"
        "        super().__init__(torch.nn.Linear(in_features, num_classes))\n")


def console_script() -> str:
    path = Path(sys.executable).parent / "ddp-launch"
    if not path.exists():
        pytest.skip("ddp-launch is not installed next to this interpreter (pip install -e .)")
    return str(path)


@pytest.mark.parametrize("mode", MODES)
def test_user_files_named_trainer_and_launcher_do_not_shadow_ours(launcher, tmp_path, mode):
    shadowing_files(tmp_path)
    # ddp-launch: `python -m launcher` itself would run ./launcher.py, as Python always does.
    launch = launcher.run(f"launcher={mode}", "data.dataset.num_samples=512", "trainer.epochs=1", "trainer.curves=false",
                          "model._target_=mypkg.Net", entry=[console_script()])
    assert_ok(launch)
    assert launch.summary()["global_step"] > 0
    assert "user trainer.py" not in launch.stderr and "user launcher.py" not in launch.stderr


def test_trainer_py_in_the_working_directory_with_python_m_launcher(launcher, tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "__init__.py").write_text("raise SystemExit('the user trainer/ was imported')\n")
    launch = launcher.run("launcher=mp_spawn", "data.dataset.num_samples=512", "trainer.epochs=1", "trainer.curves=false")
    assert_ok(launch)


@pytest.mark.parametrize("command", [["launcher", "dry_run=true"], ["launcher.check", "dry_run=true"],
                                     ["launcher.status", "run"], ["launcher.logs", "run"],
                                     ["launcher.cancel", "run"], ["launcher.report", "sweep"]])
def test_no_command_takes_a_users_trainer_package_for_ours(tmp_path, command):
    """Each entry point moves the working directory to the end of sys.path before anything
    imports our trainer package (its shared modules: trainer.options, trainer.contract)."""
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "__init__.py").write_text("raise SystemExit('the user trainer/ was imported')\n")
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / "metrics.jsonl").write_text("")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert "the user trainer/ was imported" not in done.stdout + done.stderr, done.stderr[-2000:]


def test_script_imports_its_own_siblings_first(launcher, tmp_path):
    """A user's script next to its own trainer.py gets that one, as `python train.py` would."""
    script = project_with_its_own_trainer(tmp_path / "project")
    scripts = script.parent
    assert_ok(launcher.run("--nproc-per-node=2", str(script)))
    assert (scripts / "imported_0").read_text() == (scripts / "imported_1").read_text() == "the user trainer"


@pytest.mark.parametrize("mode", MODES)
def test_trainer_logs_are_not_prefixed_twice(launcher, mode):
    launch = launcher.run(f"launcher={mode}", "data.dataset.num_samples=512", "trainer.epochs=1", "trainer.curves=false")
    assert_ok(launch)
    assert not [line for line in launch.stderr.splitlines() if line.startswith("[rank 0] [rank 0]")]
    log = (launch.run_dir / "logs" / "rank_0.log").read_text()
    assert log.startswith("==== attempt 0: rank 0") and " INFO " in log


def test_run_directory_records_the_arguments(launcher, tmp_path):
    launch = launcher.run("--nproc-per-node=2", str(USER_SCRIPT), "--flag=1", "two words")
    assert_ok(launch)
    assert os.path.exists(launch.run_dir / "config.yaml")
    assert "two words" in (launch.run_dir / "config.yaml").read_text()
