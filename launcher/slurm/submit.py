"""``launcher=slurm``: submit the job to Slurm through submitit, one Slurm task per rank.

The login node validates everything, fixes the run directory, and submits; in the job every task
runs ``python -m launcher`` with the user's overrides, becoming its rank (see ``app``). Values from
the configuration reach Slurm only as arguments (submitit quotes every ``#SBATCH`` value and
submits with a list, never a shell string), so a job name like ``x$(touch /tmp/pwned)`` is a name.
Quoting cannot hold a line break, though: an ``#SBATCH`` line is a comment, and its value's newline
would start a line of the batch script. So every option name and value that reaches submitit, here
and through Hydra's submitit launcher (``-m hydra/launcher=slurm``, ``check_slurm_sweep``), is
checked first: single-line values, option names of letters, digits, ``_`` and ``-``.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.errors import ConfigError
from launcher.launches import JobFailed
from launcher.resolvers import gpus_per_node
from launcher.slurm import LOG_FOLDER
from launcher.slurm.cpus import resolve_cpus_per_task
from launcher.slurm.task import RankTask, run_dir_override
from launcher.slurm.watch import wait_for

SIGNAL_FORMAT = "USR2@SECONDS (submitit's time-limit signal, e.g. USR2@90)"
OPTION_NAME = re.compile(r"[A-Za-z0-9_-]+")
LINE_BREAKS = ("\n", "\r", "\0")
SINGLE_LINE = "must be on one line: no newline, carriage return or NUL (it would end the #SBATCH line)"
OPTION_NAME_RULE = "sbatch option names are letters, digits, _ and - only (e.g. mail-type)"
# The run directory is handed to every task as an override; these would be read as a sweep or an
# interpolation there, after the job was accepted.
RUN_DIR_BREAKERS = (*LINE_BREAKS, ",", "${")
SLURM_SWEEP_HINT = ("launcher=slurm submits one job and returns: a sweep on Slurm is "
                    "`-m hydra/launcher=slurm ...` (one Slurm job per point)")


def check_sbatch_option(key: str, value: Any) -> None:
    """A value that reaches the sbatch script (also inside lists and mappings): on one line."""
    if isinstance(value, Mapping):
        check_sbatch_options(key, value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_sbatch_option(key, item)
    elif any(char in str(value) for char in LINE_BREAKS):
        raise ConfigError(key, value, SINGLE_LINE)


def check_sbatch_options(prefix: str, options: Mapping) -> None:
    """Every name (``[A-Za-z0-9_-]+``: sbatch writes it unquoted) and value of ``options``."""
    for name, value in options.items():
        if not isinstance(name, str) or not OPTION_NAME.fullmatch(name):
            raise ConfigError(prefix, name, OPTION_NAME_RULE)
        check_sbatch_option(f"{prefix}.{name}", value)


@dataclass(frozen=True)
class SlurmSubmission:
    """What to ask Slurm for; every field validated before anything is submitted."""

    job_name: str
    time_min: int
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    cpus_per_task: int | str  # an integer >= 1; auto until counted for the tasks per node
    mem_gb: float | None
    signal_delay_s: int
    wait: bool
    extra: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()  # shell lines run in the batch script before srun (module load, ...)

    def executor_parameters(self, nodes: int, tasks_per_node: int, gpus_per_node: int) -> dict[str, Any]:
        """submitit's parameters, named as Hydra's submitit launcher names them (``slurm_executor``):
        nodes x tasks per node = the ranks."""
        if not isinstance(self.cpus_per_task, int):  # submission_from_config(cfg, tasks_per_node) counts it
            raise RuntimeError(f"cpus_per_task={self.cpus_per_task!r} was not counted for the tasks per node")
        params: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": self.time_min,
            "nodes": nodes,
            "tasks_per_node": tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "signal_delay_s": self.signal_delay_s,
            # A failing rank ends the step; ranks are placed in block order (rank = node-major).
            "srun_args": ["--kill-on-bad-exit=1", "--distribution=block"],
            "additional_parameters": {"requeue": True, **self.extra},
        }
        if self.setup:
            params["setup"] = list(self.setup)
        if gpus_per_node:
            params["gpus_per_node"] = gpus_per_node
        optional = {"partition": self.partition, "account": self.account, "qos": self.qos,
                    "constraint": self.constraint, "mem_gb": self.mem_gb}
        params.update({key: value for key, value in optional.items() if value is not None})
        return params


def submission_from_config(cfg: DictConfig, tasks_per_node: int | None = None) -> SlurmSubmission:
    """The slurm block as sbatch gets it. Its keys' types and ranges are the schema's
    (``launcher.schema.SlurmOptions``, checked by ``launcher.validation`` before this runs); what
    is checked here is the sbatch boundary's own: option names, and every value on one line.
    ``cpus_per_task: auto`` is counted for ``tasks_per_node`` where it is given (a submission:
    ``sinfo`` is asked, ``launcher.slurm.cpus``), else left as ``auto`` (a check of the block)."""
    slurm = cfg.slurm
    strings = {key: slurm.get(key) for key in ("job_name", "partition", "account", "qos", "constraint")}
    for key, value in strings.items():
        check_sbatch_option(f"slurm.{key}", value)
    extra = cast("dict[str, Any]", OmegaConf.to_container(slurm.extra, resolve=True))
    check_sbatch_options("slurm.extra", extra)
    for name, value in extra.items():
        if isinstance(value, (Mapping, list)) or value is None:
            raise ConfigError(f"slurm.extra.{name}", value, "one value: a string, a number, or true "
                              "(a flag such as exclusive)")
    setup = tuple(str(line) for line in slurm.setup)
    check_sbatch_option("slurm.setup", setup)
    return SlurmSubmission(
        job_name=strings["job_name"] or "ddp-train",
        time_min=slurm.time,
        partition=strings["partition"],
        account=strings["account"],
        qos=strings["qos"],
        constraint=strings["constraint"],
        cpus_per_task=(slurm.cpus_per_task if tasks_per_node is None else cast(
            int, resolve_cpus_per_task(slurm.cpus_per_task, strings["partition"], tasks_per_node))),
        mem_gb=slurm.mem_gb,
        signal_delay_s=int(str(slurm.signal).partition("@")[2]),
        wait=slurm.wait,
        extra=extra,
        setup=setup,
    )


def _job_overrides() -> list[str]:
    """The user's overrides, minus what only concerns the submission."""
    from hydra.core.hydra_config import HydraConfig

    dropped = ("launcher=", "dry_run=", "hydra.run.dir=", "slurm.wait=")
    return [item for item in HydraConfig.get().overrides.task if not item.startswith(dropped)]


def check_run_dir(key: str, run_dir: Path) -> None:
    if any(text in str(run_dir) for text in RUN_DIR_BREAKERS):
        raise ConfigError(key, str(run_dir), "a run directory without newline, carriage return, NUL, "
                          "',' or '${' (each task is handed it as an override); run from another "
                          "directory or set hydra.run.dir")


@functools.cache
def _script_only_executor() -> type:
    from submitit.slurm.slurm import SlurmExecutor

    class ScriptOnlySlurmExecutor(SlurmExecutor):
        """submitit's Slurm executor that only writes the script: it needs no Slurm command
        (submitit's own refuses to start without ``srun``), and submits nothing."""

        @classmethod
        def affinity(cls) -> int:
            return 1

        def _submit_command(self, command: str) -> Any:
            raise RuntimeError("a dry run submits nothing")

    return ScriptOnlySlurmExecutor


def slurm_executor(folder: Path, parameters: Mapping[str, Any], *, script_only: bool = False,
                   key: str = "slurm") -> Any:
    """submitit's Slurm executor, configured as ``AutoExecutor(cluster="slurm")`` configures it
    (and so as Hydra's submitit launcher does) from ``parameters``: the generic names
    (``timeout_min``, ``mem_gb``, ``name``, ...) and Slurm's own (``partition``, ...).

    Every option is checked again here, whatever path it came by (``key`` names them in the error).
    ``script_only``: an executor that only renders the script, on any machine.
    """
    from submitit import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    check_sbatch_option(f"{key} (log folder)", str(folder))
    given = {name: value for name, value in parameters.items() if value is not None}
    check_sbatch_options(key, given)
    executor = (_script_only_executor() if script_only else SlurmExecutor)(folder)
    generic = AutoExecutor._typed_parameters()
    executor.update_parameters(
        **executor._convert_parameters({name: value for name, value in given.items() if name in generic}),
        **{name: value for name, value in given.items() if name not in generic})
    return executor


def sbatch_script(folder: Path, parameters: Mapping[str, Any], array_size: int = 1,
                  key: str = "slurm") -> str:
    """The exact script submitit hands to sbatch (for ``array_size`` > 1: the array job that
    submitit's ``map_array`` submits), rendered without any Slurm command."""
    executor = slurm_executor(folder, parameters, script_only=True, key=key)
    if array_size > 1:
        executor.parameters["map_count"] = array_size
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


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
                                                run_dir_override(self.run_dir)]),
            "# nothing was submitted",
        ])

    def run(self, cfg: DictConfig, sweep_point: bool) -> None:
        code = self.submit()
        if code:
            raise JobFailed(f"Slurm job of {self.run_dir} did not complete", code)

    def submit(self) -> int:
        if self.dry_run:  # answered before (app.answer_dry_run); never reaches sbatch
            raise RuntimeError("dry_run=true: a dry run submits nothing")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        job = slurm_executor(self.folder, self.parameters()).submit(RankTask(_job_overrides(), self.run_dir))
        print(f"submitted Slurm job {job.job_id}: {self.nodes} node(s) x {self.tasks_per_node} task(s)")
        print(f"  run dir: {self.run_dir}")
        print(f"  logs:    {self.folder}/{job.job_id}_<task>_log.out (.err)", flush=True)
        if not self.submission.wait:
            return 0
        return wait_for(job, self.run_dir)


def auto_gpus_per_node(spec: Any, gpus: Any, backend: Any) -> Any:
    """GPUs per node to ask Slurm for (``resolvers.gpus_per_node``, the sweep preset's rule too);
    a per-node list of one count is that count."""
    if isinstance(gpus, (ListConfig, list)) and len(set(gpus)) == 1:
        gpus = gpus[0]
    return gpus_per_node(spec, gpus, backend)


def plan_submission(cfg: DictConfig, run_dir: Path) -> SubmitPlan:
    """``launcher=slurm`` on the submitting machine, its keys checked by the schema's rules before:
    the counts Slurm is asked for. Nothing here looks at this machine's devices."""
    nodes = cfg.get("nodes")
    nodes = 1 if nodes == "auto" else nodes  # the schema allows auto or an integer >= 1
    gpus = cfg.get("gpus")
    if isinstance(gpus, ListConfig) and len(set(gpus)) == 1 and len(gpus) == nodes:
        gpus = gpus[0]
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ConfigError("gpus", gpus, "launcher=slurm needs the tasks per node as one integer "
                          "(one task per rank; Slurm gives every node the same count)")
    backend, dry_run = cfg.get("backend"), cfg.get("dry_run")
    gpus_per_node = auto_gpus_per_node(cfg.slurm.get("gpus_per_node"), cfg.get("gpus"), backend)
    if not isinstance(gpus_per_node, int) or isinstance(gpus_per_node, bool) or gpus_per_node < 0:
        raise ConfigError("slurm.gpus_per_node", gpus_per_node,
                          "allowed: auto (gpus unless backend=gloo) or an integer >= 0")
    check_run_dir("hydra.run.dir", run_dir)
    return SubmitPlan(submission_from_config(cfg, gpus), nodes, gpus, gpus_per_node, run_dir, dry_run)


# hydra/launcher=slurm_submit: the plugin's launcher without the wait (launcher.slurm.sweep; Hydra takes
# launchers only from the hydra_plugins namespace, hence the name).
SUBMIT_AND_EXIT_LAUNCHER = "hydra_plugins.ddp_launcher.SubmitAndExitSlurmLauncher"


def is_slurm_sweep(cfg: DictConfig) -> bool:
    """``-m hydra/launcher=slurm`` (or ``slurm_submit``): Hydra's submitit launcher submits the
    points to Slurm."""
    target = OmegaConf.select(cfg, "hydra.launcher._target_")
    return isinstance(target, str) and (
        (target.startswith("hydra_plugins.hydra_submitit_launcher.") and target.endswith(".SlurmLauncher"))
        or target == SUBMIT_AND_EXIT_LAUNCHER)


@dataclass(frozen=True)
class SweepSubmission:
    """What Hydra's submitit launcher will hand to submitit: its folder and its parameters."""

    folder: Path
    parameters: dict[str, Any]

    def describe(self, points: list[int] | None) -> str:
        """The sbatch script of the sweep's (first) array job; ``points``: points per array job."""
        size = points[0] if points else 1
        count = (f"# {sum(points)} sweep point(s): {len(points)} such job(s), one array element per point"
                 if points else "# one array element per sweep point")
        return "\n".join([sbatch_script(self.folder, self.parameters, size, key="hydra.launcher").rstrip(),
                          count, "# nothing was submitted"])


def _resolved(node: DictConfig, name: Any) -> Any:
    """``node[name]`` resolved, as ``OmegaConf.to_container(node, resolve=True)`` gives it."""
    value = node[name]
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def check_slurm_sweep(cfg: DictConfig) -> SweepSubmission:
    """``-m hydra/launcher=slurm``, before the plugin submits anything: the slurm block as for
    ``launcher=slurm``, the sweep directory, and every option the plugin hands to submitit
    (``hydra.launcher``, resolved as the plugin resolves it). ``cpus_per_task`` is resolved last,
    once everything else is known good: its ``auto`` asks ``sinfo`` (``launcher.slurm.cpus``)."""
    submission_from_config(cfg)
    check_sbatch_option("hydra.sweep.dir", str(cfg.hydra.sweep.dir))
    launcher = cfg.hydra.launcher
    options: dict[str, Any] = {name: None if name == "cpus_per_task" else _resolved(launcher, name)
                               for name in launcher}
    options.pop("_target_", None)
    check_sbatch_options("hydra.launcher", options)
    for name, source in (("nodes", "nodes"), ("tasks_per_node", "gpus")):
        value = options.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"hydra.launcher.{name}", value, f"an integer >= 1 (a Slurm sweep needs "
                              f"{source}=N, not auto or a list)")
    if "cpus_per_task" in options:
        options["cpus_per_task"] = _resolved(launcher, "cpus_per_task")
        check_sbatch_option("hydra.launcher.cpus_per_task", options["cpus_per_task"])
    folder = Path(str(options.pop("submitit_folder")))
    options.pop("max_num_timeout", None)  # the executor's, not the script's
    return SweepSubmission(folder, options)


def sweep_overrides(cfg: DictConfig) -> list[Any] | None:
    """A multirun's overrides as Hydra's parser reads them (the sweeper's ``params`` and the
    command line's); None where they do not parse here (the sweeper reports that itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.get("params") or {}).items()]
    try:
        return OverridesParser.create().parse_overrides([*params, *cfg.hydra.overrides.task])
    except Exception:
        return None


def sweep_points(cfg: DictConfig) -> list[int] | None:
    """Points per array job the basic sweeper will hand the launcher (None: not known here)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    sweeper = cfg.hydra.sweeper
    overrides = sweep_overrides(cfg)
    if overrides is None or sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return None
    try:
        batches = BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size"))
    except Exception:  # e.g. glob(), which needs the config's groups: the sweeper reports it
        return None
    return [len(batch) for batch in batches]
