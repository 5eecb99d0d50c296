"""Issue "Real clusters": GPUs asked of Slurm, per-task GPU binding, host lists, waiting on a job,
and setup lines. No Slurm cluster and no GPU needed: the dry runs render without Slurm commands,
and the CUDA device count is passed into the pure device rule where this machine has no GPU."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launcher.config import _backend, load_job_config
from launcher.devices import cuda_device_index
from launcher.environments import SlurmEnvironment
from launcher.errors import ConfigError
from launcher.local import LocalLaunch
from launcher.resolvers import slurm_gpus
from launcher.slurm.hostlist import expand_hostlist
from launcher.slurm.queue import job_state
from launcher.slurm.submit import plan_submission
from launcher.slurm.task import SlurmTask
from launcher.slurm.watch import wait_for
from launcher.validation import check_config
from tests.composing import composed
from tests.test_submit_safety import NO_SLURM, only_error_line

# --- 3. host lists ------------------------------------------------------------------------------

HOSTLISTS = [
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-03,7]", ["n01", "n02", "n03", "n7"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("a,b[1-2]", ["a", "b1", "b2"]),
    ("gpu-[001-002].cluster", ["gpu-001.cluster", "gpu-002.cluster"]),
]


@pytest.mark.parametrize(("hostlist", "hosts"), HOSTLISTS, ids=[case[0] for case in HOSTLISTS])
def test_hostlist_forms_slurm_produces(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize(("hostlist", "hosts"), HOSTLISTS, ids=[case[0] for case in HOSTLISTS])
def test_hostlist_agrees_with_scontrol_where_it_accepts_the_form(hostlist, hosts):
    if shutil.which("scontrol") is None:
        pytest.skip("no scontrol here")
    done = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode or not done.stdout.split():
        pytest.skip(f"this scontrol rejects {hostlist}: {done.stderr.strip()}")
    assert done.stdout.split() == hosts


def test_master_addr_of_a_two_bracket_node_list_is_the_first_host():
    env = SlurmEnvironment({"SLURM_JOB_NODELIST": "rack[1-2]-node[01-02]"})
    assert env.main_address() == "rack1-node01"


@pytest.mark.parametrize("hostlist", ["n[1-", "n[a-b]", ""])
def test_a_host_list_that_cannot_be_expanded_is_an_error_not_a_host(hostlist):
    with pytest.raises(ConfigError) as error:
        expand_hostlist(hostlist)
    assert error.value.key == "SLURM_JOB_NODELIST"


# --- 1. GPUs asked of Slurm ---------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "expected"), [
    ((), 4),
    (("backend=nccl",), 4),
    (("backend=gloo",), 0),
    (("slurm.gpus_per_node=0",), 0),
    (("slurm.gpus_per_node=2",), 2),
    (("backend=gloo", "slurm.gpus_per_node=1"), 1),
], ids=["auto", "nccl", "gloo", "zero", "explicit", "gloo-explicit"])
def test_launcher_slurm_asks_for_gpus_per_node(tmp_path, overrides, expected):
    cfg = composed("launcher=slurm", "nodes=2", "gpus=4", "slurm.cpus_per_task=1", *overrides)  # no sinfo
    assert plan_submission(cfg, tmp_path / "run").gpus_per_node == expected


@pytest.mark.parametrize(("spec", "gpus", "backend", "expected"), [
    ("auto", 4, "auto", 4), ("auto", 4, "nccl", 4), ("auto", 4, "gloo", None),
    ("auto", "auto", "auto", None), ("auto", "auto", "nccl", "auto"), (0, 4, "nccl", None),
    (2, 4, "gloo", 2),
])
def test_sweep_preset_resolver(spec, gpus, backend, expected):
    assert slurm_gpus(spec, gpus, backend) == expected


@pytest.mark.slow  # three launcher processes; in-process: test_launcher_slurm_asks_for_gpus_per_node
def test_slurm_dry_run_asks_for_the_gpus(launcher):
    asked = launcher.run("launcher=slurm", "nodes=2", "gpus=4", "dry_run=true", env=NO_SLURM)
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "#SBATCH --gpus-per-node=4" in asked.stdout, asked.stdout
    for override in ("backend=gloo", "slurm.gpus_per_node=0"):
        none = launcher.run("launcher=slurm", "nodes=2", "gpus=4", "dry_run=true", override, env=NO_SLURM)
        assert none.returncode == 0, none.stderr[-3000:]
        assert "--gpus-per-node" not in none.stdout, (override, none.stdout)


@pytest.mark.slow  # three launcher processes
def test_slurm_sweep_dry_run_asks_for_the_gpus(launcher, tmp_path):
    common = ("-m", "hydra/launcher=slurm", "dry_run=true", "nodes=2", "gpus=4", "optim.lr=0.1,0.2",
              f"hydra.sweep.dir={tmp_path / 'sweep'}")
    asked = launcher.run(*common, env=NO_SLURM)
    assert asked.returncode == 0, asked.stdout[-2000:] + asked.stderr[-3000:]
    assert "#SBATCH --gpus-per-node=4" in asked.stdout, asked.stdout
    for override in ("backend=gloo", "slurm.gpus_per_node=0"):
        none = launcher.run(*common, override, env=NO_SLURM)
        assert none.returncode == 0, none.stdout[-2000:] + none.stderr[-3000:]
        assert "--gpus-per-node" not in none.stdout, (override, none.stdout)


# --- 5. setup lines -----------------------------------------------------------------------------

SETUP = "slurm.setup=['module load cuda/12.1','conda activate train']"


def setup_lines(script: str) -> list[str]:
    lines = script.splitlines()
    return [line for line in lines[lines.index("# setup") + 1: lines.index("# command")] if line]


@pytest.mark.slow  # two launcher processes; in-process: tests/test_golden.py (sbatch_launcher_slurm)
def test_setup_lines_reach_both_scripts(launcher, tmp_path):
    single = launcher.run("launcher=slurm", "nodes=1", "gpus=1", "dry_run=true", SETUP, env=NO_SLURM)
    sweep = launcher.run("-m", "hydra/launcher=slurm", "dry_run=true", "nodes=1", "gpus=1", "optim.lr=0.1,0.2",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}", SETUP, env=NO_SLURM)
    for done in (single, sweep):
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert setup_lines(done.stdout) == ["module load cuda/12.1", "conda activate train"], done.stdout


@pytest.mark.slow  # two launcher processes a case
@pytest.mark.parametrize("char", ["\n", "\r"], ids=["newline", "carriage-return"])
def test_a_setup_line_with_a_line_break_is_refused(launcher, tmp_path, char):
    hostile = f"slurm.setup=['module load x{char}touch PWNED']"
    single = launcher.run("launcher=slurm", "nodes=1", "gpus=1", "dry_run=true", hostile, env=NO_SLURM)
    sweep = launcher.run("-m", "hydra/launcher=slurm", "nodes=1", "gpus=1", "optim.lr=0.1,0.2",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}", hostile, env=NO_SLURM)
    for done in (single, sweep):
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
        assert only_error_line(done.stderr).startswith("error: invalid config: slurm.setup="), done.stderr
    assert not (launcher.workdir / "PWNED").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("setup", ["'module load x'", "[[nested]]", "[{a:1}]"], ids=["string", "nested", "mapping"])
def test_setup_must_be_a_list_of_lines(setup):
    with pytest.raises(ConfigError) as error:
        check_config(composed("launcher=slurm", f"slurm.setup={setup}"))
    assert error.value.key == "slurm.setup"


# --- 4. waiting on a job ------------------------------------------------------------------------

class FakeJob:
    job_id = "77"

    class paths:  # noqa: N801 - submitit's attribute name
        stderr = Path("/nonexistent/77_%t_log.err")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_polls_slurm_seldom_after_the_first_minute_and_stops_at_the_end(tmp_path):
    fake, asked = FakeTime(), []
    end = 1000.0 + 3600

    def state_of(job_id):
        asked.append(fake.now)
        return "COMPLETED" if fake.now >= end else "RUNNING"

    assert wait_for(FakeJob(), tmp_path, state_of=state_of, sleep=fake.sleep, clock=fake.clock) == 0
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:], strict=False)]
    late = [gap for when, gap in zip(asked, gaps, strict=False) if when - 1000.0 >= 60]
    assert late and all(15 <= gap <= 30 for gap in late), late
    assert len(asked) < 3600 / 15 + 60  # never once a second for the job's life
    assert asked[-1] - end <= 30  # ends soon after Slurm says so


def test_wait_gives_up_with_a_message_when_slurm_never_answers(tmp_path, capsys):
    fake, asked = FakeTime(), []

    def state_of(job_id):
        asked.append(fake.now)

    assert wait_for(FakeJob(), tmp_path, state_of=state_of, sleep=fake.sleep, clock=fake.clock) == 1
    assert 3 <= len(asked) <= 20
    message = capsys.readouterr().err
    assert "stopped waiting for job 77" in message and "squeue -j 77" in message


def test_one_unanswered_poll_does_not_end_the_wait(tmp_path):
    fake, answers = FakeTime(), iter([None, None, "RUNNING", None, "FAILED"])
    assert wait_for(FakeJob(), tmp_path, state_of=lambda job_id: next(answers), sleep=fake.sleep,
                    clock=fake.clock) == 1  # FAILED: exit 1, after every answer was asked for
    assert next(answers, "spent") == "spent"


def fake_tools(tmp_path: Path, monkeypatch, **scripts: str) -> None:
    """Only the named Slurm tools exist, each a shell script body."""
    fake_bin = tmp_path / "fake-slurm"
    fake_bin.mkdir()
    for name, body in scripts.items():
        tool = fake_bin / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))  # not /usr/bin, where the real Slurm tools are
    for name in ("sacct", "squeue", "scontrol"):
        if name not in scripts:
            assert shutil.which(name, path=str(fake_bin)) is None


def test_state_from_sacct(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, sacct="echo 'CANCELLED by 0'", squeue="exit 1", scontrol="exit 1")
    assert job_state("77").state == "CANCELLED"


def test_state_falls_back_to_squeue_without_sacct(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, squeue="echo RUNNING", scontrol="exit 1")
    assert job_state("77").state == "RUNNING"


def test_state_falls_back_to_scontrol_when_sacct_fails_and_squeue_forgot_the_job(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, sacct="echo 'sacct: error: slurmdbd down' >&2; exit 1",
               squeue="echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1",
               scontrol="echo 'JobId=77 JobName=x'; echo '   JobState=COMPLETED Reason=None Dependency=(null)'")
    assert job_state("77").state == "COMPLETED"


def test_no_slurm_tool_answers(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch)
    assert job_state("77").state is None


# --- 2. which GPU a rank uses -------------------------------------------------------------------

# (visible devices, CUDA_VISIBLE_DEVICES, ranks sharing the view, local rank) -> index or error
DEVICE_CASES = [
    (1, "3", 1, 0, 0),      # Slurm --gpus-per-task=1: each task sees its own GPU
    (1, "3", 1, 3, 0),      # ... also the task with local rank 3
    (4, None, 1, 3, 3),     # a Slurm task that sees the whole node: by local rank
    (4, None, 4, 2, 2),     # the launcher's ranks on a 4-GPU node
    (2, "2,3", 2, 1, 1),    # the user's CUDA_VISIBLE_DEVICES=2,3
    (8, None, 2, 1, 1),     # more devices than ranks
    (1, None, 2, 0, None),  # two ranks, one device
    (2, "2,3", 4, 0, None),  # four ranks, two devices
    (2, "0,1", 1, 3, None),  # a task with local rank 3 that sees two devices
    (0, "", 1, 0, None),    # nothing visible
]


@pytest.mark.parametrize(("visible", "cvd", "sharing", "local_rank", "expected"), DEVICE_CASES)
def test_launcher_device_rule(visible, cvd, sharing, local_rank, expected):
    if expected is None:
        with pytest.raises(ConfigError) as error:
            cuda_device_index(visible, cvd, sharing, local_rank)
        assert f"{visible} visible device" in str(error.value)
        if cvd:
            assert f"CUDA_VISIBLE_DEVICES={cvd}" in str(error.value)
    else:
        assert cuda_device_index(visible, cvd, sharing, local_rank) == expected


# Every view of 0-4 devices shared by 1-4 ranks, every local rank there (a task alone: up to 4).
AGREEMENT_CASES = [(visible, sharing, local_rank) for visible in range(5) for sharing in range(1, 5)
                   for local_rank in range(sharing if sharing > 1 else 5)]


@pytest.mark.parametrize(("visible", "sharing", "local_rank"), AGREEMENT_CASES)
def test_trainer_and_launcher_pick_the_same_device(visible, sharing, local_rank):
    from trainer.distributed import cuda_device_index as trainer_rule

    try:
        ours = cuda_device_index(visible, None, sharing, local_rank)
    except ConfigError:
        ours = "refused"
    try:
        theirs = trainer_rule(visible, sharing, local_rank)
    except RuntimeError:
        theirs = "refused"
    assert ours == theirs


def test_a_slurm_task_bound_to_one_gpu_passes_the_launchers_check():
    # Was refused: "needs one CUDA device per process" (4 tasks on the node, 1 visible device).
    assert _backend("nccl", local_procs=4, cuda_devices=1, cuda_visible_devices="2", task_local_rank=3) == "nccl"
    with pytest.raises(ConfigError, match="1 visible device"):
        _backend("nccl", local_procs=4, cuda_devices=1)  # the launcher starts 4 ranks: one device is too few


def nccl_plan(tmp_path, monkeypatch, cuda_devices: int, visible: str | None, *overrides: str) -> str:
    """The dry run's text for a job whose device count is ``cuda_devices`` (simulated: this
    machine has no GPU, so the plan is made with gloo and given the count)."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    cfg = composed("dry_run=true", "backend=gloo", *overrides)
    job = load_job_config(cfg, tmp_path / "run")
    return LocalLaunch(dataclasses.replace(job, backend="nccl", cuda_devices=cuda_devices)).describe()


def test_dry_run_device_column_follows_the_rule(tmp_path, monkeypatch):
    text = nccl_plan(tmp_path, monkeypatch, 2, "2,3", "gpus=2")
    assert "device=cuda:0 (CUDA_VISIBLE_DEVICES entry 2)" in text
    assert "device=cuda:1 (CUDA_VISIBLE_DEVICES entry 3)" in text
    assert "devices: CUDA_VISIBLE_DEVICES=2,3 (2 CUDA device(s) visible here)" in text
    with pytest.raises(ConfigError, match=r"CUDA_VISIBLE_DEVICES=2"):
        nccl_plan(tmp_path, monkeypatch, 1, "2", "gpus=2")


@pytest.mark.slow  # a launcher process; in-process: test_dry_run_device_column_follows_the_rule
def test_users_cuda_visible_devices_is_shown_in_the_dry_run(launcher):
    done = launcher.run("dry_run=true", "gpus=2", env={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices: CUDA_VISIBLE_DEVICES=2,3" in done.stdout, done.stdout


def test_dry_run_of_a_slurm_task_bound_to_one_gpu(tmp_path, monkeypatch):
    from launcher.slurm.allocation import Allocation

    step = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
            "SLURM_NTASKS": "4", "SLURM_NODEID": "1", "SLURM_TASKS_PER_NODE": "2(x2)",
            "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.2"}
    allocation = Allocation.from_slurm(SlurmEnvironment(step))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    cfg = composed("dry_run=true", "backend=gloo", "master_addr=auto")
    job = load_job_config(cfg, tmp_path / "run", allocation)
    text = SlurmTask(dataclasses.replace(job, backend="nccl", cuda_devices=1)).describe()
    assert "local_rank=1 rank=3" in text and "device=cuda:0 (CUDA_VISIBLE_DEVICES entry 1)" in text
    assert OmegaConf.select(cfg, "slurm.setup") == []
