"""``launcher=slurm``: submit the job to Slurm through submitit, one Slurm task per rank.

The login node validates everything, fixes the run directory, and submits; in the job every task
runs ``python -m launcher`` with the user's overrides, becoming its rank (see ``app``). Values from
the configuration reach Slurm only as arguments (submitit quotes every ``#SBATCH`` value and
submits with a list, never a shell string), so a job name like ``x$(touch /tmp/pwned)`` is a name.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.errors import ConfigError
from launcher.failures import recorded_failures
from launcher.supervise import run_forwarding_signals

LOG_FOLDER = "slurm"
SIGNAL_FORMAT = "USR2@SECONDS (submitit's time-limit signal, e.g. USR2@90)"


@dataclass(frozen=True)
class SlurmSubmission:
    """What to ask Slurm for; every field validated before anything is submitted."""

    job_name: str
    time_min: int
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    cpus_per_task: int
    mem_gb: float | None
    signal_delay_s: int
    wait: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def executor_parameters(self, nodes: int, tasks_per_node: int, gpus_per_node: int) -> dict[str, Any]:
        """submitit's ``slurm_*`` parameters: nodes x tasks per node = the ranks."""
        params: dict[str, Any] = {
            "slurm_job_name": self.job_name,
            "slurm_time": self.time_min,
            "slurm_nodes": nodes,
            "slurm_ntasks_per_node": tasks_per_node,
            "slurm_cpus_per_task": self.cpus_per_task,
            "slurm_signal_delay_s": self.signal_delay_s,
            # A failing rank ends the step; ranks are placed in block order (rank = node-major).
            "slurm_srun_args": ["--kill-on-bad-exit=1", "--distribution=block"],
            "slurm_additional_parameters": {"requeue": True, **self.extra},
        }
        if gpus_per_node:
            params["slurm_gpus_per_node"] = gpus_per_node
        optional = {"slurm_partition": self.partition, "slurm_account": self.account,
                    "slurm_qos": self.qos, "slurm_constraint": self.constraint,
                    "slurm_mem_gb": self.mem_gb}
        params.update({key: value for key, value in optional.items() if value is not None})
        return params


def _optional_str(cfg: DictConfig, key: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\n" in value:
        raise ConfigError(f"slurm.{key}", value, "must be a non-empty single-line string or null")
    return value


def submission_from_config(cfg: DictConfig) -> SlurmSubmission:
    slurm = cfg.get("slurm")
    if not isinstance(slurm, DictConfig):
        raise ConfigError("slurm", slurm, "the slurm settings block is missing")
    time_min = slurm.get("time")
    if not isinstance(time_min, int) or isinstance(time_min, bool) or time_min < 1:
        raise ConfigError("slurm.time", time_min, "minutes, an integer >= 1")
    cpus = slurm.get("cpus_per_task")
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
        raise ConfigError("slurm.cpus_per_task", cpus, "an integer >= 1")
    mem = slurm.get("mem_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0):
        raise ConfigError("slurm.mem_gb", mem, "null or a number of GB > 0")
    signal_spec = str(slurm.get("signal"))
    name, _, seconds = signal_spec.partition("@")
    if name != "USR2" or not seconds.isdigit():
        raise ConfigError("slurm.signal", signal_spec, f"allowed: {SIGNAL_FORMAT}")
    wait = slurm.get("wait")
    if not isinstance(wait, bool):
        raise ConfigError("slurm.wait", wait, "allowed: true, false")
    extra = slurm.get("extra") or {}
    if not isinstance(extra, DictConfig) and extra != {}:
        raise ConfigError("slurm.extra", extra, "a mapping of extra sbatch options, e.g. {exclusive: true}")
    extra_options = OmegaConf.to_container(extra) if isinstance(extra, DictConfig) else {}
    assert isinstance(extra_options, dict)
    return SlurmSubmission(
        job_name=_optional_str(slurm, "job_name") or "ddp-train",
        time_min=time_min,
        partition=_optional_str(slurm, "partition"),
        account=_optional_str(slurm, "account"),
        qos=_optional_str(slurm, "qos"),
        constraint=_optional_str(slurm, "constraint"),
        cpus_per_task=cpus,
        mem_gb=mem,
        signal_delay_s=int(seconds),
        wait=wait,
        extra={str(key): value for key, value in extra_options.items()},
    )


class RankTask:
    """What every Slurm task runs (pickled by submitit): ``python -m launcher OVERRIDES``.

    The launcher in the task sees the Slurm step and becomes its rank. Time-limit signals go to
    the ranks, which checkpoint and requeue the job themselves; submitit's own handler would requeue
    at once, before the checkpoint is written, so this process only passes signals on.
    """

    def __init__(self, overrides: list[str], run_dir: Path) -> None:
        self.overrides = overrides
        self.run_dir = run_dir

    def __call__(self) -> int:
        command = [sys.executable, "-m", "launcher", *self.overrides, f"hydra.run.dir={self.run_dir}"]
        code = run_forwarding_signals(command)
        if code:
            raise RuntimeError(failure_report(self.run_dir) or f"rank exited with code {code}")
        return code


def failure_report(run_dir: Path) -> str | None:
    """The first recorded failure of the job's last attempt, with its traceback."""
    from launcher.failures import first_failure

    failures_dir = run_dir / "failures"
    recorded = recorded_failures(failures_dir) if failures_dir.is_dir() else []
    if not recorded:
        return None
    failure = first_failure(failures_dir, {failure.rank: (1, failure.time) for failure in recorded})
    return failure.describe() if failure else None


def _job_overrides() -> list[str]:
    """The user's overrides, minus what only concerns the submission."""
    from hydra.core.hydra_config import HydraConfig

    dropped = ("launcher=", "dry_run=", "hydra.run.dir=", "slurm.wait=")
    return [item for item in HydraConfig.get().overrides.task if not item.startswith(dropped)]


def _executor(folder: Path, parameters: dict[str, Any]) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**parameters)
    return executor


def sbatch_script(folder: Path, parameters: dict[str, Any]) -> str:
    """The exact script submitit would hand to sbatch."""
    executor = _executor(folder, parameters)
    return executor._executor._make_submission_file_text(executor._executor._submitit_command_str, "dry-run")


@dataclass(frozen=True)
class SubmitPlan:
    """A validated ``launcher=slurm`` job: submitted as is, or printed by ``dry_run``."""

    submission: SlurmSubmission
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    run_dir: Path
    dry_run: bool

    @property
    def folder(self) -> Path:
        return self.run_dir / LOG_FOLDER

    def parameters(self) -> dict[str, Any]:
        return self.submission.executor_parameters(self.nodes, self.tasks_per_node, self.gpus_per_node)

    def describe(self) -> str:
        return "\n".join([
            sbatch_script(self.folder, self.parameters()).rstrip(),
            "# each task runs: " + shlex.join(["python", "-m", "launcher", *_job_overrides(),
                                                f"hydra.run.dir={self.run_dir}"]),
            "# nothing was submitted",
        ])

    def submit(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        job = _executor(self.folder, self.parameters()).submit(RankTask(_job_overrides(), self.run_dir))
        print(f"submitted Slurm job {job.job_id}: {self.nodes} node(s) x {self.tasks_per_node} task(s)")
        print(f"  run dir: {self.run_dir}")
        print(f"  logs:    {self.folder}/{job.job_id}_<task>_log.out (.err)", flush=True)
        if not self.submission.wait:
            return 0
        return wait_for(job, self.run_dir)


def plan_submission(cfg: DictConfig, run_dir: Path) -> SubmitPlan:
    """Validate ``launcher=slurm`` on the submitting machine: nothing here looks at its devices."""
    nodes = cfg.get("nodes")
    nodes = 1 if nodes == "auto" else nodes
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ConfigError("nodes", nodes, "allowed: auto (1) or an integer >= 1")
    gpus = cfg.get("gpus")
    if isinstance(gpus, ListConfig) and len(set(gpus)) == 1 and len(gpus) == nodes:
        gpus = gpus[0]
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ConfigError("gpus", gpus, "launcher=slurm needs the tasks per node as one integer "
                          "(one task per rank; Slurm gives every node the same count)")
    backend = cfg.get("backend")
    if backend not in ("auto", "nccl", "gloo"):
        raise ConfigError("backend", backend, "allowed: auto, nccl, gloo")
    dry_run = cfg.get("dry_run")
    if not isinstance(dry_run, bool):
        raise ConfigError("dry_run", dry_run, "allowed: true, false")
    gpus_per_node = cfg.slurm.get("gpus_per_node")
    if gpus_per_node == "auto":
        gpus_per_node = gpus if backend == "nccl" else 0
    if not isinstance(gpus_per_node, int) or isinstance(gpus_per_node, bool) or gpus_per_node < 0:
        raise ConfigError("slurm.gpus_per_node", gpus_per_node,
                          "allowed: auto (gpus when backend=nccl, else 0) or an integer >= 0")
    return SubmitPlan(submission_from_config(cfg), nodes, gpus, gpus_per_node, run_dir, dry_run)


def _progress_lines(train_log: Path, offset: int) -> tuple[list[str], int]:
    if not train_log.exists():
        return [], offset
    with train_log.open() as file:
        file.seek(offset)
        text = file.read()
    complete = text[: text.rfind("\n") + 1]
    return complete.splitlines(), offset + len(complete)


SLURM_TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def wait_for(job: Any, run_dir: Path, poll_s: float = 1.0) -> int:
    """Stream rank 0's progress until Slurm says the job ended (requeues included); exit code 0
    only for COMPLETED. (submitit's ``done()`` turns true as soon as rank 0 returned, before Slurm
    has the job's final state.)"""
    offset = 0
    train_log = run_dir / "train.log"
    while True:
        lines, offset = _progress_lines(train_log, offset)
        for line in lines:
            print(line, flush=True)
        state = str(job.watcher.get_state(job.job_id, mode="force")).split()[0]
        if state in SLURM_TERMINAL_STATES:
            break
        time.sleep(poll_s)
    lines, _ = _progress_lines(train_log, offset)
    for line in lines:
        print(line, flush=True)
    if state == "COMPLETED":
        summary = run_dir / "summary.json"
        if summary.exists():
            print(f"job {job.job_id} COMPLETED: {json.dumps(json.loads(summary.read_text()))}")
        return 0
    report = failure_report(run_dir)
    print(f"job {job.job_id} ended {state}", file=sys.stderr)
    if report:
        print(report, file=sys.stderr)
    else:
        stderr = Path(str(job.paths.stderr).replace("%t", "0"))
        if stderr.exists():
            print(f"--- {stderr} (tail) ---", file=sys.stderr)
            print("\n".join(stderr.read_text().splitlines()[-20:]), file=sys.stderr)
    return 1
