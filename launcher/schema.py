"""The launcher's schema: the top-level keys of ``conf/config.yaml``, its ``slurm`` block and the
launch modes (``conf/launcher/*.yaml``), as typed dataclasses.

Each field has its type, the default of ``conf/``, and in its metadata a ``doc`` (the comment in
the YAML) and a ``check``: a ``trainer.options.Check`` (a range, choices, a pattern) or, where the
allowed values need code to say (``auto or an integer >= 1``, a host name), a ``launcher.rules.Rule``.
``launcher.validation`` derives its rules from them; the trainer's blocks (``trainer``, ``save``,
the data loader keys) are ``trainer.options``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.rules import (
    ARGUMENTS,
    AUTO,
    COUNT,
    ENDPOINT,
    HOST,
    QUALIFIED_NAME,
    RANKS,
    Rule,
    checked,
    integer,
    is_text,
    listof,
)
from launcher.slurm.allocation import SLURM_TASK_ROLES
from launcher.slurm.submit import SIGNAL_FORMAT
from launcher.warm import START_METHODS
from trainer.options import (
    AT_LEAST_0,
    BUILTIN_METRICS,
    NON_BLANK,
    NON_EMPTY,
    Check,
    SaveOptions,
    TrainerOptions,
    block,
    option,
)

BACKENDS = ("auto", "nccl", "gloo")
RENDEZVOUS = ("static", "c10d")
MODE_NAMES = ("torchrun", "mp_spawn", "slurm")  # conf/launcher/*.yaml: each file's launcher.name

CHECKPOINT = Check(pattern=NON_BLANK, what="the path of a checkpoint")
# torchrun's rendezvous and shutdown take whole seconds (it truncates 0.5 to 0: no wait at all).
WHOLE_SECONDS = "whole seconds, an integer"
SECONDS = "seconds, a number"
SINGLE_LINE = Check(pattern=r"[^\n\r\0]+", what="a non-empty single-line string")
METRICS = AUTO | Rule(
    f"a list of metrics ({', '.join(BUILTIN_METRICS)} or dotted names of functions), [] for none",
    lambda value: isinstance(value, list) and all(
        item in BUILTIN_METRICS or QUALIFIED_NAME.accepts(item) for item in value))


@dataclass
class SlurmOptions:
    """The ``slurm`` block: launcher=slurm submission (through submitit), and requeue behaviour in
    any Slurm job."""

    partition: str | None = option(None, "the partition to submit to (null: the cluster's default)",
                                   SINGLE_LINE)
    time: int = option(60, "minutes", Check(low=1, what="minutes, an integer"))
    account: str | None = option(None, "the account charged (null: your default)", SINGLE_LINE)
    qos: str | None = option(None, "the quality of service (null: the default)", SINGLE_LINE)
    constraint: str | None = option(None, "node features required, e.g. a100 (null: any node)",
                                    SINGLE_LINE)
    cpus_per_task: Any = option("auto", "per task (= per rank), for data loading: auto = the partition's "
                                "CPUs per node / tasks per node (sinfo's smallest node; 1 where sinfo "
                                "does not answer), or N", AUTO | COUNT)
    mem_gb: float | None = option(None, "per node", Check(low=0, exclusive=True, what="a number of GB"))
    gpus_per_node: Any = option("auto", "auto: gpus (one GPU per rank) unless backend=gloo (gpus=auto: "
                                "only with backend=nccl); 0: none", AUTO | integer(0))
    job_name: str | None = option("ddp-train", "the job's name in the queue", SINGLE_LINE)
    signal: str = option("USR2@90", "submitit's time-limit signal, this many seconds before the end",
                         Check(pattern=r"USR2@[0-9]+", what=SIGNAL_FORMAT))
    extra: dict[str, Any] = option({}, "more sbatch options, e.g. {exclusive: true, mail-type: END}", Rule(
        "a mapping of extra sbatch options, e.g. {exclusive: true}", lambda value: isinstance(value, dict)))
    setup: list[str] = option([], "shell lines run in the batch script before the ranks start, e.g. "
                              "['module load cuda/12.1', 'conda activate train']", Rule(
                                  "a list of shell lines run before the ranks start, e.g. "
                                  "['module load cuda/12.1', 'conda activate train']",
                                  lambda value: isinstance(value, list)
                                  and all(isinstance(line, str) for line in value)))
    wait: bool = option(False, "wait for the job, stream rank 0's progress, exit with its status")
    max_requeues: int = option(3, "times a job requeues itself when its time limit nears (USR1/USR2)",
                               AT_LEAST_0)


@dataclass
class Config:
    """The top-level keys of ``conf/config.yaml`` and its blocks; the group options (launcher,
    model, data, optim, sched, loss) are composed in from their own files."""

    # --- where and how many
    nodes: Any = option("auto", "machines in the job (auto: 1, or the Slurm step's nodes)", AUTO | COUNT)
    gpus: Any = option("auto", "processes per node: int, per-node list [4,2], or auto (CUDA devices, "
                       "else 2 CPU procs; Slurm: tasks per node)",
                       AUTO | COUNT | listof(COUNT, "per-node counts like [4,2]"))
    node_rank: Any = option("auto", "this machine's index in [0, nodes) (auto: 0, or SLURM_NODEID)",
                            AUTO | integer(0))
    master_addr: str = option("auto", "address of node 0, reachable from every node (auto: 127.0.0.1, "
                              "or the first Slurm host)", AUTO | HOST)
    master_port: Any = option("auto", "auto = a free port (single node), or derived from the Slurm "
                              "job id", AUTO | integer(1, 65535))
    slurm_task: str = option("rank", "inside srun: each task is one rank (rank), or one node's "
                             "launcher (node)", Check(choices=SLURM_TASK_ROLES))
    local_addr: str = option("auto", "this node's address as other nodes reach it (auto: the source "
                             "of the route to master_addr)", AUTO | HOST)
    socket_ifname: str | None = option("auto", "GLOO/NCCL_SOCKET_IFNAME: auto = the interface of "
                                       "local_addr, null = leave as in the environment",
                                       AUTO | Rule("interface names like eth0 or eth0,ib0", is_text))
    backend: str = option("auto", "auto | nccl | gloo (auto = nccl when CUDA is usable)",
                          Check(choices=BACKENDS))
    init_timeout: int = option(120, "seconds to wait for all ranks to join (never torch's 30 min)",
                               Check(low=1, what=WHOLE_SECONDS))
    collective_timeout: float = option(300.0, "seconds one collective may wait once training runs (a "
                                       "lost peer or cut link)", Check(low=1, what=SECONDS))
    seed: int = option(0, "the run's seed: every rank's random streams derive from it", AT_LEAST_0)
    deterministic: bool = option(False, "deterministic kernels only (an op without one raises), cuDNN "
                                 "deterministic")
    cudnn_benchmark: bool = option(False, "let cuDNN pick the fastest kernels for fixed input shapes "
                                   "(not with deterministic)")
    dry_run: bool = option(False, "print each rank's plan and command, start nothing")
    # --- what runs
    task: str | None = option(None, "mypkg.step: step(model, batch) -> loss or (loss, metric sums) "
                              "replaces the built-in (inputs, targets) step", QUALIFIED_NAME)
    metrics: Any = option("auto", "validation metrics: [accuracy], [] or dotted names of metric(output, "
                          "target) -> sum; auto: accuracy for a classification loss", METRICS)
    script: str | None = option(None, "path/to/train.py: run your torchrun-compatible script instead "
                                "of the trainer", NON_EMPTY)
    script_args: Any = option([], "the script's arguments, passed verbatim (a string is split as a "
                              "shell would)", ARGUMENTS)
    script_module: bool = option(False, "script is a module name, run as `python -m script` "
                                 "(torchrun's -m)")
    no_python: bool = option(False, "script is an executable, run without python (torchrun's "
                             "--no-python)")
    console_ranks: Any = option("all", "ranks the console shows: all, a rank, or a list [0,3]; "
                                "DIR/logs/rank_N.log keep every rank", RANKS)
    console_local_ranks: Any = option("all", "the same by local rank (torchrun's --local-ranks-filter)",
                                      RANKS)
    resume: str | None = option(None, "null | auto (continue from run_dir/checkpoints/last.pt if "
                                "present) | PATH", AUTO | checked(CHECKPOINT, str))
    overwrite: bool = option(False, "true: replace an earlier run in the run dir (else refused unless "
                             "resume continues it)")
    checkpoint: str | None = option(None, "trainer.mode=eval: the checkpoint to evaluate (PATH)",
                                    CHECKPOINT)
    trainer: TrainerOptions = block(TrainerOptions, "the built-in trainer's options")
    slurm: SlurmOptions = block(SlurmOptions, "launcher=slurm submission (through submitit), and "
                                 "requeue behaviour in any Slurm job")
    save: SaveOptions = block(SaveOptions, "checkpoints of a training run, into "
                               "run_dir/checkpoints/last.pt")


def _name(mode: str) -> Any:
    return option(mode, "the launch mode (conf/launcher/NAME.yaml)", Check(choices=MODE_NAMES))


def _local_rank_arg() -> Any:
    return option(False, "append --local_rank=N to the script's arguments (torch.distributed.launch "
                  "scripts)")


def _start_method() -> Any:
    return option("forkserver", "forkserver: ranks forked from a process that imported torch once; "
                  "spawn: a fresh interpreter each", Check(choices=START_METHODS))


def _shutdown_grace_s() -> Any:
    return option(5, "SIGTERM -> SIGKILL grace when stopping ranks (Ctrl-C ends the job within 10 s)",
                  Check(low=0, what=WHOLE_SECONDS))


@dataclass
class TorchrunMode:
    """launcher=torchrun: PyTorch's elastic agent."""

    name: str = _name("torchrun")
    rdzv: str = option("static", "static: node ranks from node_rank, store at master_addr:master_port; "
                       "c10d: nodes join at rdzv_endpoint and get their node rank as they arrive",
                       Check(choices=RENDEZVOUS))
    rdzv_endpoint: str | None = option(None, "c10d: HOST:PORT of the rendezvous store (null: "
                                       "master_addr:master_port)", ENDPOINT)
    rdzv_id: str | None = option(None, "c10d: the job id all nodes pass (null: derived from the "
                                 "endpoint)", NON_EMPTY)
    max_restarts: int = option(0, "restart all ranks up to K times after a failure; they resume from "
                               "the last checkpoint", AT_LEAST_0)
    monitor_interval_s: float = option(0.1, "how often the agent checks its workers",
                                       Check(low=0, exclusive=True, what=SECONDS))
    start_method: str = _start_method()
    shutdown_grace_s: int = _shutdown_grace_s()
    local_rank_arg: bool = _local_rank_arg()


@dataclass
class MpSpawnMode:
    """launcher=mp_spawn: torch.multiprocessing.start_processes, this node's ranks as children of
    the launcher."""

    name: str = _name("mp_spawn")
    start_method: str = _start_method()
    shutdown_grace_s: int = _shutdown_grace_s()
    local_rank_arg: bool = _local_rank_arg()


@dataclass
class SlurmMode:
    """launcher=slurm: submit to Slurm through submitit (settings: the slurm block)."""

    name: str = _name("slurm")
    local_rank_arg: bool = _local_rank_arg()


LAUNCH_MODES: dict[str, type] = dict(zip(MODE_NAMES, (TorchrunMode, MpSpawnMode, SlurmMode), strict=True))
