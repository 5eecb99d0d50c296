"""Against a real Slurm cluster (two compute nodes on this machine, ``slurm/local_cluster.sh``).

CI starts the cluster and sets LAUNCHER_REQUIRE_SLURM=1, so there these tests fail rather than
skip when it is down. Elsewhere they skip with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    DDP_SCRIPT,
    REPO,
    TINY,
    Launcher,
    project_with_its_own_trainer,
    wait_for,
    wait_for_no_leftovers,
)

pytestmark = pytest.mark.slow  # real jobs: several processes each

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
JOB_TIMEOUT_S = 180
CPU_ONLY = "backend=gloo"  # the test cluster has no GPUs: ask Slurm for none
# Jobs of the tests share the two 4-CPU nodes, as jobs did before cpus_per_task=auto gave every task
# its node's share of the CPUs (tests/test_slurm_cpus.py tests auto); points of a sweep run in parallel.
SHARE_NODES = "slurm.cpus_per_task=1"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    status = subprocess.run(["bash", str(REPO / "slurm" / "local_cluster.sh"), "status"],
                            capture_output=True, text=True, timeout=60)
    if status.returncode != 0:
        reason = ("no local Slurm cluster is running (start one as root with "
                  f"`bash slurm/local_cluster.sh start`): {status.stdout.strip()} {status.stderr.strip()}")
        if os.environ.get("LAUNCHER_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


class SlurmRunner:
    """Submits from a test's own directory, with a marker to find the job's processes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.job_marker = uuid.uuid4().hex
        self.jobs: list[str] = []

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env.update(LAUNCHER_JOB_ID=self.job_marker, LAUNCHER_PYTHON=sys.executable,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
        return env

    def sbatch(self, *args: str) -> str:
        done = subprocess.run(["sbatch", "--parsable", f"--chdir={self.workdir}", *args],
                              capture_output=True, text=True, env=self.env(), timeout=60)
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip().split(";")[0]
        self.jobs.append(job_id)
        return job_id

    def launcher(self, *overrides: str, timeout_s: float = JOB_TIMEOUT_S,
                 share_nodes: bool = True, module: str = "launcher") -> subprocess.CompletedProcess:
        """``python -m MODULE launcher=slurm ...`` (the launcher, or launcher.check); the jobs it
        submits are noted for clean-up."""
        # The test cluster has no GPUs: an integer gpus=N would ask Slurm for N GPUs per node.
        shared = [SHARE_NODES] if share_nodes else []
        done = self.run_module([module, "launcher=slurm", CPU_ONLY, *shared, *overrides], timeout_s)
        self.jobs += [line.split()[3].rstrip(":") for line in done.stdout.splitlines()
                      if line.startswith("submitted Slurm job")]
        return done

    def run_module(self, module_and_args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        """``python -m MODULE ARGS`` on this machine (the submitting side) in the test's directory:
        a fork of the pre-imported launcher (`tests.preimported`) where that is the same launch."""
        return Launcher(self.workdir).run_command([sys.executable, "-m", *module_and_args], self.env(), timeout_s)

    @staticmethod
    def state(job_id: str) -> str:
        done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                              capture_output=True, text=True, timeout=30)
        return (done.stdout.strip().splitlines() or ["UNKNOWN"])[0].split()[0]

    def wait(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
        wait_for(lambda: self.state(job_id) in TERMINAL, timeout_s, f"Slurm job {job_id} to end")
        return self.state(job_id)

    def output(self, job_id: str) -> str:
        path = self.workdir / f"slurm-{job_id}.out"
        return path.read_text() if path.exists() else ""

    def run_dir(self, job_id: str) -> Path:
        return self.workdir / "outputs" / f"slurm-{job_id}"

    def cleanup(self) -> None:
        for job_id in self.jobs:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


@pytest.fixture
def slurm(slurm_cluster, tmp_path) -> SlurmRunner:
    runner = SlurmRunner(tmp_path)
    yield runner
    runner.cleanup()
    wait_for_no_leftovers(runner.job_marker, timeout_s=30)


def summaries(root: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in root.rglob("summary.json")]


def test_train_sbatch_one_task_per_rank_2x2(slurm, local_weights):
    job = slurm.sbatch("-N", "2", "--ntasks-per-node=2", str(REPO / "slurm" / "train.sbatch"), *TINY)
    state = slurm.wait(job)
    assert state == "COMPLETED", f"{state}\n{slurm.output(job)[-4000:]}"
    found = summaries(slurm.run_dir(job))
    assert len(found) == 1, "summary.json is written once, by rank 0"
    assert found[0]["world_size"] == 4 and found[0]["gpus_per_node"] == [2, 2]
    assert found[0]["weights_sha256"] == local_weights("gpus=4", *TINY)
    logs = slurm.run_dir(job) / "logs"
    for rank in range(4):  # one task per rank: each task keeps its own log, prefixed on srun's output
        assert (logs / f"rank_{rank}.log").read_text().startswith(f"==== attempt 0: rank {rank} ")
    assert "[rank 0] " in slurm.output(job)


def test_train_torchrun_sbatch_one_task_per_node_2x2(slurm):
    job = slurm.sbatch("-N", "2", str(REPO / "slurm" / "train_torchrun.sbatch"), "gpus=2", *TINY)
    state = slurm.wait(job)
    assert state == "COMPLETED", f"{state}\n{slurm.output(job)[-4000:]}"
    found = summaries(slurm.run_dir(job))
    assert len(found) == 1 and found[0]["world_size"] == 4 and found[0]["launcher"] == "torchrun"
    assert found[0]["gpus_per_node"] == [2, 2]


def test_uneven_tasks_per_node(slurm):
    # Three tasks on two nodes without --ntasks-per-node: Slurm packs them 2 + 1.
    job = slurm.sbatch("-N", "2", "-n", "3", str(REPO / "slurm" / "train.sbatch"), *TINY)
    state = slurm.wait(job)
    assert state == "COMPLETED", f"{state}\n{slurm.output(job)[-4000:]}"
    found = summaries(slurm.run_dir(job))
    assert len(found) == 1 and found[0]["world_size"] == 3
    assert sorted(found[0]["gpus_per_node"]) == [1, 2], found[0]["gpus_per_node"]


def test_mismatch_fails_at_once_with_the_sbatch_lines_that_fit(slurm):
    job = slurm.sbatch("-N", "2", "--ntasks-per-node=2", str(REPO / "slurm" / "train.sbatch"), "gpus=4")
    state = slurm.wait(job)
    out = slurm.output(job)
    assert state == "FAILED", f"{state}\n{out[-3000:]}"
    assert "gpus=4: this Slurm step runs SLURM_TASKS_PER_NODE=2(x2) tasks" in out, out[-3000:]
    assert "#SBATCH --nodes=2" in out and "#SBATCH --ntasks-per-node=4" in out, out[-3000:]
    assert not (slurm.run_dir(job) / "config.yaml").exists(), "nothing may start on a config error"


def test_launcher_slurm_dry_run_prints_the_script_and_submits_nothing(slurm):
    done = slurm.launcher("nodes=2", "gpus=2", "dry_run=true", "slurm.time=7", "slurm.partition=debug",
                          "+slurm.extra.exclusive=true")
    assert done.returncode == 0, done.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --time=7",
                 "#SBATCH --partition=debug", "#SBATCH --exclusive", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@90", "--kill-on-bad-exit=1"):
        assert line in done.stdout, f"{line!r} missing from:\n{done.stdout}"
    assert "nothing was submitted" in done.stdout and not slurm.jobs
    assert not (slurm.workdir / "outputs").exists()


def test_launcher_slurm_wait_streams_progress_and_succeeds(slurm):
    done = slurm.launcher("nodes=2", "gpus=1", "slurm.wait=true", "slurm.time=10", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(slurm.jobs) == 1
    assert "[rank 0]" in done.stdout and "epoch 2/2" in done.stdout, done.stdout[-3000:]
    assert slurm.state(slurm.jobs[0]) == "COMPLETED"
    found = summaries(slurm.workdir / "outputs")
    assert len(found) == 1 and found[0]["world_size"] == 2


def test_launcher_slurm_failing_rank_fails_the_job_with_its_traceback(slurm):
    done = slurm.launcher("nodes=2", "gpus=1", "slurm.wait=true", "slurm.time=10", f"script={DDP_SCRIPT}",
                          f"script_args=[{slurm.workdir / 'out'},--fail-rank,1]")  # the rank on node 1
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "rank 1 on host" in done.stderr and "deliberate failure on rank 1" in done.stderr, done.stderr
    assert "Traceback" in done.stderr
    assert slurm.state(slurm.jobs[0]) == "FAILED"


def test_a_script_under_slurm_imports_its_own_sibling_trainer(slurm):
    """Each Slurm task runs the script in the launcher's own process, which imported our trainer
    package for its checks: the script's ``import trainer`` must still find its own trainer.py."""
    script = project_with_its_own_trainer(slurm.workdir / "project")
    project = script.parent
    done = slurm.launcher("nodes=1", "gpus=2", "slurm.wait=true", "slurm.time=10", f"script={script}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [(project / f"imported_{rank}").read_text() for rank in (0, 1)] == ["the user trainer"] * 2


def test_configuration_values_in_the_script_are_never_run(slurm):
    pwned = slurm.workdir / "PWNED"
    name = f"x$(touch {pwned});y"
    done = slurm.launcher("nodes=1", "gpus=1", "slurm.wait=true", "slurm.time=10", "trainer.epochs=1",
                          "data.dataset.num_samples=512", f"slurm.job_name='{name}'")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def listed_name() -> str:
        return subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobName", "-j", slurm.jobs[0]],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    # slurmdbd may first hold a placeholder record named "allocation" (the step's start reached it
    # before the job's); the real name follows within moments.
    wait_for(lambda: listed_name() != "allocation", 30, "sacct to record the job's name")
    assert listed_name() == name
    assert not pwned.exists(), "a job name was executed by a shell"


# The requeue tests: a run long enough to be signalled in, on 2 nodes x 1 rank (each requeued attempt
# starts its tasks anew; the 2 x 2 layouts are tested above).
REQUEUED = ("data.dataset.num_samples=4096", "trainer.epochs=12", "save.every_epochs=0", "trainer.curves=false")


@pytest.mark.parametrize(("template", "layout"), [("train.sbatch", ["--ntasks-per-node=1"]),
                                                  ("train_torchrun.sbatch", [])])
def test_time_limit_signal_checkpoints_requeues_and_resumes_to_the_same_weights(slurm, local_weights,
                                                                                template, layout):
    job = slurm.sbatch("-N", "2", *layout, str(REPO / "slurm" / template), "gpus=1", *REQUEUED)
    run_dir = slurm.run_dir(job)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, 120,
             "the first epoch of the Slurm job")
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    signalled_at = time.monotonic()
    # Requeued, the job waits about 11 s (cred_expire + 1) before it runs again: status says so.
    wait_for(lambda: tool_status(slurm, run_dir)["state"] == "requeued", 60,
             "launcher.status to report the requeued job")
    state = slurm.wait(job, timeout_s=JOB_TIMEOUT_S + 60)
    out = slurm.output(job)
    assert state == "COMPLETED", f"{state}\n{out[-4000:]}"
    assert "requeued job" in out and "stopping after step checkpoint: SIGUSR1 received" in out, out[-4000:]
    finished = tool_status(slurm, run_dir)
    assert finished["state"] == "finished" and finished["attempts"] == 2, finished
    (summary,) = summaries(run_dir)
    assert summary["restarts"] == 1, summary
    assert summary["weights_sha256"] == local_weights("gpus=2", *REQUEUED)
    assert time.monotonic() - signalled_at < JOB_TIMEOUT_S
    rank_log = (run_dir / "logs" / "rank_1.log").read_text()  # node 1's, appended across the requeue
    assert rank_log.index("==== attempt 0: rank 1 ") < rank_log.index("==== attempt 1: rank 1 ")


def test_submitit_time_limit_signal_requeues_and_resumes(slurm, local_weights):
    """launcher=slurm: submitit asks for USR2 before the time limit; the ranks, not submitit,
    checkpoint and requeue, and the requeued job resumes to the same weights."""
    done = slurm.launcher("nodes=2", "gpus=1", "slurm.time=10", *REQUEUED, timeout_s=60)
    assert done.returncode == 0, done.stderr
    (job,) = slurm.jobs
    run_dir = Path(next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                        if line.strip().startswith("run dir:")))
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, 120,
             "the first epoch of the submitted job")
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    state = slurm.wait(job, timeout_s=JOB_TIMEOUT_S + 60)
    assert state == "COMPLETED", state
    train_log = (run_dir / "train.log").read_text()
    assert "SIGUSR2 received" in train_log and "requeued job" in train_log, train_log[-3000:]
    (summary,) = summaries(run_dir)
    assert summary["restarts"] == 1
    assert summary["weights_sha256"] == local_weights("gpus=2", *REQUEUED)


def test_slurm_sweep_runs_each_point_as_one_slurm_job_and_reports(slurm):
    """hydra-submitit-launcher (the real plugin) with our preset: each point is one Slurm job
    whose tasks are the ranks (2 nodes x 1 task), the points run in parallel."""
    sweep = slurm.workdir / "sweep"
    done = slurm.run_module(["launcher", "-m", "hydra/launcher=slurm", "optim.lr=0.1,0.03", "nodes=2", "gpus=1",
                             CPU_ONLY, SHARE_NODES, "slurm.time=10", f"hydra.sweep.dir={sweep}", *TINY],
                            JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    job_ids = {path.name.split("_")[0] for path in (sweep / ".submitit").iterdir()
               if path.name[0].isdigit()}
    slurm.jobs += sorted(job_ids)
    assert len(job_ids) == 1, job_ids  # one array job, one element per point
    states = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,NNodes", "-j", job_ids.pop()],
                            capture_output=True, text=True, timeout=30).stdout.split()
    assert len(states) == 2 and all(line.endswith("|COMPLETED|2") for line in states), states
    for point in ("0", "1"):
        summary = json.loads((sweep / point / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["nodes"] == 2
    table = (sweep / "sweep_summary.md").read_text()
    assert "| 0 | optim.lr=0.1 | completed |" in table and "| 1 | optim.lr=0.03 | completed |" in table
    assert (sweep / "sweep_summary.png").stat().st_size > 10_000


# --- what reaches sbatch is checked on every path; a dry run never submits --------------------------

def jobs_named(name: str) -> list[str]:
    """Every job of this name Slurm knows of: queued or running (squeue), or ended (sacct)."""
    queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%A"], capture_output=True, text=True,
                            timeout=30).stdout.split()
    ended = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", f"--name={name}", "-S", "now-1days"],
                           capture_output=True, text=True, timeout=30).stdout.split()
    return sorted({job.split("_")[0] for job in queued + ended})


def run_launcher_in(slurm, *args: str) -> subprocess.CompletedProcess:
    return slurm.run_module(["launcher", *args], 120)


def test_line_breaks_and_bad_option_names_are_refused_before_sbatch_on_every_path(slurm):
    pwned = slurm.workdir / "PWNED"
    name = f"safety-{uuid.uuid4().hex[:12]}"
    payload = f"'x\ntouch {pwned}\n#'"  # one argv element: ends the #SBATCH line if it gets there
    single = ("launcher=slurm", "nodes=1", "gpus=1", "slurm.time=5", f"slurm.job_name={name}")
    sweep = ("-m", "hydra/launcher=slurm", "nodes=1", "gpus=1", "slurm.time=5", f"slurm.job_name={name}",
             "optim.lr=0.1,0.2", f"hydra.sweep.dir={slurm.workdir / 'sweep'}")
    cases = [((*single, f"+slurm.extra.comment={payload}"), "slurm.extra.comment"),
             ((*single, "+slurm.extra={a b:1}"), "slurm.extra"),
             ((*sweep, f"+hydra.launcher.additional_parameters.comment={payload}"),
              "hydra.launcher.additional_parameters.comment"),
             ((*sweep, f"slurm.partition={payload}"), "slurm.partition")]
    for args, key in cases:
        done = run_launcher_in(slurm, *args)
        slurm.jobs += jobs_named(name)
        assert done.returncode == 2, f"{args}: {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: invalid config: {key}="), done.stderr
    assert jobs_named(name) == [], "a job was submitted"
    assert not pwned.exists()


def test_multirun_with_launcher_slurm_and_dry_run_submits_nothing(slurm):
    name = f"dry-{uuid.uuid4().hex[:12]}"
    done = run_launcher_in(slurm, "-m", "launcher=slurm", "dry_run=true", "nodes=1", "gpus=1",
                           f"slurm.job_name={name}", "optim.lr=0.1,0.2", f"hydra.sweep.dir={slurm.workdir / 'sweep'}")
    slurm.jobs += jobs_named(name)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "hydra/launcher=slurm" in done.stderr, done.stderr
    assert jobs_named(name) == [] and not (slurm.workdir / "sweep").exists()


def test_dry_run_of_a_slurm_sweep_submits_nothing(slurm):
    name = f"dry-{uuid.uuid4().hex[:12]}"
    done = run_launcher_in(slurm, "-m", "hydra/launcher=slurm", "dry_run=true", "nodes=2", "gpus=1",
                           f"slurm.job_name={name}", "optim.lr=0.1,0.2", f"hydra.sweep.dir={slurm.workdir / 'sweep'}")
    slurm.jobs += jobs_named(name)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "#SBATCH --array=0-1%2" in done.stdout and "# nothing was submitted" in done.stdout
    assert jobs_named(name) == [] and not (slurm.workdir / "sweep").exists()


def test_launcher_slurm_run_dir_with_quotes_and_brackets_reaches_every_task(slurm):
    """The run directory is handed to the tasks as a quoted override: read back exactly."""
    slurm.workdir = slurm.workdir / "it's [a] (b) {c} d=e"
    slurm.workdir.mkdir()
    done = slurm.launcher("nodes=2", "gpus=1", "slurm.wait=true", "slurm.time=10", "trainer.epochs=1",
                          "data.dataset.num_samples=512")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (summary,) = summaries(slurm.workdir / "outputs")
    assert summary["world_size"] == 2 and summary["nodes"] == 2


# --- launcher.status / launcher.logs / launcher.cancel on launcher=slurm jobs --------------------------

# slurm.launcher() passes backend=gloo: CPU ranks, no GPU asked of Slurm.
def run_tool(slurm, name: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"launcher.{name}", *map(str, args)], cwd=slurm.workdir,
                          capture_output=True, text=True, env=slurm.env(), timeout=timeout_s)


def submitted_run_dir(done: subprocess.CompletedProcess) -> Path:
    return Path(next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                     if line.strip().startswith("run dir:")))


def tool_status(slurm, run_dir: Path) -> dict:
    done = run_tool(slurm, "status", run_dir, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_and_logs_of_finished_and_failed_slurm_jobs(slurm):
    done = slurm.launcher("nodes=1", "gpus=2", "slurm.wait=true", "slurm.time=10", "trainer.epochs=2",
                          "data.dataset.num_samples=512")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run_dir = submitted_run_dir(done)
    found = tool_status(slurm, run_dir)
    assert found["state"] == "finished" and found["slurm"]["job_id"] == slurm.jobs[0], found
    assert found["progress"]["epoch"] == 2 and found["progress"]["epochs"] == 2
    assert found["attempts"] == 1
    rank1 = run_tool(slurm, "logs", run_dir, "--rank", "1")
    assert rank1.returncode == 0 and rank1.stdout.startswith("==== attempt 0: rank 1 "), rank1.stdout[:500]
    follow = run_tool(slurm, "logs", run_dir, "-f", timeout_s=60)
    assert follow.returncode == 0 and "epoch 2/2" in follow.stdout
    # Without logs/ (e.g. a rank that never got to capture its output), submitit's task log.
    (run_dir / "logs").rename(run_dir / "logs.moved")
    fallback = run_tool(slurm, "logs", run_dir, "--rank", "0")
    assert fallback.returncode == 0 and "epoch 2/2" in fallback.stdout, fallback.stdout[-2000:]
    unknown = run_tool(slurm, "logs", run_dir, "--rank", "5")
    assert unknown.returncode == 2 and "ranks there: 0, 1" in unknown.stderr, unknown.stderr

    failed = slurm.launcher("nodes=1", "gpus=2", "slurm.wait=true", "slurm.time=10", f"script={DDP_SCRIPT}",
                            f"script_args=[{slurm.workdir / 'out'},--fail-rank,1]")
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    run_dir = submitted_run_dir(failed)
    found = tool_status(slurm, run_dir)
    assert found["state"] == "failed" and found["slurm"]["state"] == "FAILED", found
    assert found["failure"]["rank"] == 1
    assert found["failure"]["error"] == "RuntimeError: deliberate failure on rank 1", found["failure"]
    assert "deliberate failure on rank 1" in run_tool(slurm, "logs", run_dir, "--rank", "1").stdout
    text = run_tool(slurm, "status", run_dir).stdout
    assert "state:     failed" in text and "failure:   rank 1 on" in text, text


def test_cancel_a_running_slurm_job(slurm):
    done = slurm.launcher("nodes=1", "gpus=2", "slurm.time=10", f"script={DDP_SCRIPT}",
                          f"script_args=[{slurm.workdir / 'out'},--hang]", timeout_s=60)
    assert done.returncode == 0, done.stderr
    (job,) = slurm.jobs
    run_dir = submitted_run_dir(done)
    wait_for(lambda: (slurm.workdir / "out" / "hanging_1").exists(), 120, "both ranks to hang")
    found = tool_status(slurm, run_dir)
    assert found["state"] == "running" and found["slurm"]["state"] == "RUNNING", found
    cancelled = run_tool(slurm, "cancel", run_dir)
    assert cancelled.returncode == 0 and f"scancel {job}: sent" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    assert slurm.wait(job) == "CANCELLED"
    assert tool_status(slurm, run_dir)["state"] == "cancelled"
    again = run_tool(slurm, "cancel", run_dir)
    assert again.returncode == 0 and "already ended (CANCELLED)" in again.stdout
