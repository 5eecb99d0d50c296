"""The launcher's typed configuration, built once from Hydra's config and validated up front.

Every check here runs before anything is started or written, so a bad value costs the user one
line on stderr (exit code 2) and never a half-started job or an overwritten run directory.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.allocation import SLURM_TASK_ROLES, Allocation, sbatch_hint
from launcher.child import COLLECTIVE_TIMEOUT_ENV, INIT_TIMEOUT_ENV, LOCAL_RANK_ARG_ENV
from launcher.errors import ConfigError
from launcher.network import (
    PortUnavailable,
    check_port_free,
    free_port,
    interface_names,
    interface_of,
    is_local_address,
    route_source_address,
)
from launcher.rank_output import (
    CONSOLE_LOCAL_RANKS_ENV,
    CONSOLE_RANKS_ENV,
    LOG_DIR_ENV,
    LOGS_SUBDIR,
)
from launcher.ranks import RankInfo, rank_info
from trainer.options import LR_SCALING_RULES, PRECISIONS, PROGRESS_BAR, SCHEDULE_INTERVALS
from trainer.options import MODES as TRAINER_MODES

MODES = ("torchrun", "mp_spawn", "slurm")
RENDEZVOUS = ("static", "c10d")
BACKENDS = ("auto", "nccl", "gloo")
SOCKET_IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
CPU_PROCESSES_WITHOUT_GPU = 2
TRAINER_MODULE = "trainer"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Target:
    """What every rank runs: our trainer module, or the user's script, module or executable."""

    kind: str  # "module" | "script" | "exec" (an executable, no python)
    name: str
    args: tuple[str, ...] = ()

    def python_args(self) -> list[str]:
        """Arguments after ``python`` that run the target (as torchrun would)."""
        head = ["-m", self.name] if self.kind == "module" else [self.name]
        return [*head, *self.args]

    def command(self) -> list[str]:
        """The target as a command line: ``python ...``, or the executable itself."""
        return [self.name, *self.args] if self.kind == "exec" else ["python", *self.python_args()]


@dataclass(frozen=True)
class ModeConfig:
    name: str
    max_restarts: int = 0
    monitor_interval_s: float = 0.1
    shutdown_grace_s: float = 10.0
    start_method: str = "spawn"
    rdzv: str = "static"
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    local_rank_arg: bool = False  # append --local_rank=N to the target's arguments (legacy scripts)


@dataclass(frozen=True)
class JobConfig:
    nodes: int
    procs_per_node: tuple[int, ...]
    node_rank: int
    master_addr: str
    master_port: int
    backend: str  # resolved: "nccl" or "gloo"
    init_timeout_s: float
    collective_timeout_s: float
    seed: int
    dry_run: bool
    mode: ModeConfig
    target: Target
    run_dir: Path
    local_addr: str  # this node's address as the other nodes reach it
    socket_ifname: str | None  # exported as GLOO/NCCL_SOCKET_IFNAME; None: leave them as they are
    rdzv_endpoint: str  # host:port of the rendezvous store
    rdzv_id: str  # the run id every node passes to the rendezvous
    slurm_rank: RankInfo | None = None  # this process IS that rank (a task of `srun`, one per rank)
    console_ranks: tuple[int, ...] | None = None  # None: every rank's output on the console
    console_local_ranks: tuple[int, ...] | None = None

    @property
    def ranks_from_rendezvous(self) -> bool:
        """With c10d rendezvous, node ranks (hence global ranks) are assigned as nodes join."""
        return self.mode.rdzv == "c10d"

    def network_env(self) -> dict[str, str]:
        if self.socket_ifname is None:
            return {}
        return {variable: self.socket_ifname for variable in SOCKET_IFNAME_VARIABLES}

    def rank_env(self) -> dict[str, str]:
        """What ``launcher.child`` reads in every rank: where its output goes, which ranks the
        console shows, the timeouts a script's process group gets, the legacy ``--local_rank``."""
        def ranks(chosen: tuple[int, ...] | None) -> str:
            return "all" if chosen is None else ",".join(map(str, chosen))

        return {
            LOG_DIR_ENV: str(self.run_dir / LOGS_SUBDIR),
            CONSOLE_RANKS_ENV: ranks(self.console_ranks),
            CONSOLE_LOCAL_RANKS_ENV: ranks(self.console_local_ranks),
            INIT_TIMEOUT_ENV: f"{self.init_timeout_s:g}",
            COLLECTIVE_TIMEOUT_ENV: f"{self.collective_timeout_s:g}",
            LOCAL_RANK_ARG_ENV: "1" if self.mode.local_rank_arg else "0",
        }

    @property
    def world_size(self) -> int:
        return sum(self.procs_per_node)

    @property
    def local_world_size(self) -> int:
        return self.procs_per_node[self.node_rank]

    @property
    def device_type(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(key, value, "must be an integer >= 1")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(key, value, "must be a number of seconds > 0")
    return float(value)


# Device nodes a CUDA-capable torch needs: NVIDIA's, WSL2's GPU bridge, and ROCm's (torch.cuda on AMD).
GPU_DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


def _cuda_device_count() -> int:
    """Without any GPU device node torch could only answer 0, so it is not imported: importing it
    takes about a second, which every launch (and every rejected config) would otherwise pay."""
    if not any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _procs_per_node(value: Any, nodes: int, cuda_devices: int) -> tuple[int, ...]:
    if value == "auto":
        count = cuda_devices or CPU_PROCESSES_WITHOUT_GPU
        return (count,) * nodes
    if _is_int(value):
        return (_positive_int("gpus", value),) * nodes
    if isinstance(value, (list, tuple, ListConfig)):
        counts = list(value)
        if len(counts) != nodes:
            raise ConfigError(
                "gpus", counts, f"a per-node list needs one entry per node (nodes={nodes})"
            )
        if not all(_is_int(count) and count >= 1 for count in counts):
            raise ConfigError("gpus", counts, "every per-node count must be an integer >= 1")
        return tuple(counts)
    raise ConfigError("gpus", value, "allowed: auto, an integer >= 1, or a per-node list like [4,2]")


def _backend(requested: Any, local_procs: int, cuda_devices: int) -> str:
    if requested not in BACKENDS:
        raise ConfigError("backend", requested, f"allowed: {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if cuda_devices else "gloo"
    if requested == "nccl":
        if cuda_devices == 0:
            raise ConfigError("backend", requested, "needs CUDA, and no CUDA device is visible; allowed here: gloo, auto")
        if cuda_devices < local_procs:
            raise ConfigError(
                "backend",
                requested,
                f"needs one CUDA device per process: {local_procs} processes on this node, "
                f"{cuda_devices} visible devices; lower gpus or use gloo",
            )
    return requested


def _master_port(value: Any, nodes: int, master_addr: str, hosts_store: bool) -> int:
    """The port of the rank-0 store. The node that hosts it checks, before starting anything, that
    ``master_addr`` is one of its addresses and the port is free there."""
    if value == "auto":
        if nodes > 1:
            raise ConfigError(
                "master_port", value, "with nodes > 1 every node must be given the same port (1-65535)"
            )
        try:
            return free_port(master_addr)
        except OSError as err:
            raise ConfigError("master_addr", master_addr, f"cannot bind a port on it ({err})") from err
    if not _is_int(value) or not 1 <= value <= 65535:
        raise ConfigError("master_port", value, "allowed: auto or an integer in 1-65535")
    if hosts_store:
        try:
            check_port_free(master_addr, value)
        except PortUnavailable as why:
            if why.foreign_address:
                raise ConfigError("master_addr", master_addr,
                                  f"node_rank 0 hosts the rendezvous there, but {why}") from why
            advice = "pick another port" + (" or use master_port=auto" if nodes == 1 else "")
            raise ConfigError("master_port", value, f"{why}; {advice}") from why
    return value


def _check_writable_dir(key: str, path: Path) -> None:
    """The run directory must be creatable (or writable if it exists) before anything starts."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(key, str(path), f"cannot be created: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(key, str(path), f"is not writable ({probe} denies writing)")


def _script_args(value: Any) -> tuple[str, ...]:
    """A list is passed verbatim; a string is split as a shell would (never into characters)."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as err:
            raise ConfigError("script_args", value, f"cannot be split as a shell would ({err}); "
                              "give a list: 'script_args=[--lr,0.1]'") from err
    if isinstance(value, (list, tuple, ListConfig)):
        return tuple(str(arg) for arg in value)
    raise ConfigError("script_args", value, "a list of arguments, or one string split as a shell would")


def _target(cfg: DictConfig, run_dir: Path) -> Target:
    script = cfg.get("script")
    script_args = _script_args(cfg.get("script_args"))
    as_module, no_python = cfg.get("script_module", False), cfg.get("no_python", False)
    for key, value in (("script_module", as_module), ("no_python", no_python)):
        _check_bool(key, value)
    if script is None:
        for key, value in (("script_args", list(script_args)), ("script_module", as_module),
                           ("no_python", no_python)):
            if value:
                raise ConfigError(key, value, "only used together with script (a path, a module "
                                  "with script_module=true, or an executable with no_python=true)")
        return Target("module", TRAINER_MODULE, (str(run_dir / "config.yaml"),))
    script = str(script)
    if as_module and no_python:
        raise ConfigError("no_python", True, "runs an executable; script_module=true runs a Python module: choose one")
    if as_module:
        if not MODULE_NAME.fullmatch(script):
            raise ConfigError("script", script, "with script_module=true: a dotted module name such as mypkg.train")
        return Target("module", script, script_args)
    if no_python:
        executable = shutil.which(script)
        if executable is None:
            raise ConfigError("script", script, "with no_python=true: no such executable (a path, or a name on PATH)")
        return Target("exec", script if os.sep not in script else str(Path(script).resolve()), script_args)
    path = Path(script).expanduser()
    if not path.is_file():
        raise ConfigError("script", script, "no such file; give the path of a Python script "
                          "(a module: script_module=true, an executable: no_python=true)")
    return Target("script", str(path.resolve()), script_args)


def _console_ranks(key: str, value: Any) -> tuple[int, ...] | None:
    if value == "all":
        return None
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not values or not all(_is_int(rank) and rank >= 0 for rank in values):
        raise ConfigError(key, value, "allowed: all, a rank (0), or a list of ranks [0,3]")
    return tuple(values)


def _mode(cfg: Any) -> ModeConfig:
    if not isinstance(cfg, DictConfig) or cfg.get("name") not in MODES:
        name = cfg.get("name") if isinstance(cfg, DictConfig) else cfg
        raise ConfigError("launcher", name, f"allowed: {', '.join(MODES)}")
    options = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(options, dict)
    try:
        mode = ModeConfig(**options)
    except TypeError as err:
        raise ConfigError("launcher", options, f"unknown option ({err})") from err
    if not _is_int(mode.max_restarts) or mode.max_restarts < 0:
        raise ConfigError("launcher.max_restarts", mode.max_restarts, "must be an integer >= 0")
    if mode.name == "mp_spawn" and mode.max_restarts:
        raise ConfigError("launcher.max_restarts", mode.max_restarts, "restarts need launcher=torchrun")
    _check_bool("launcher.local_rank_arg", mode.local_rank_arg)
    if mode.rdzv not in RENDEZVOUS:
        raise ConfigError("launcher.rdzv", mode.rdzv, f"allowed: {', '.join(RENDEZVOUS)}")
    if mode.name == "mp_spawn" and mode.rdzv != "static":
        raise ConfigError("launcher.rdzv", mode.rdzv, "dynamic rendezvous needs launcher=torchrun")
    return mode


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6addr]:port``."""
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("launcher.rdzv_endpoint", endpoint, "allowed: HOST:PORT with a port in 1-65535")
    return host, int(port)


def _local_addr(value: Any, reach: str, reach_key: str) -> str:
    """This node's address as peers see it: given, or the source of this machine's route to
    ``reach`` (the rendezvous host, configured as ``reach_key``)."""
    if value != "auto":
        if not is_local_address(str(value)):
            raise ConfigError("local_addr", value,
                              "is not an address of this machine; allowed: auto or one of its addresses")
        return str(value)
    try:
        return route_source_address(reach)
    except socket.gaierror as err:
        raise ConfigError(reach_key, reach, f"cannot be resolved ({err.strerror})") from err
    except OSError as err:
        raise ConfigError(reach_key, reach, f"no route from this machine ({err.strerror}); "
                          "check the address, or the network this node is on") from err


def _socket_ifname(value: Any, local_addr: str, backend: str) -> str | None:
    """The interface gloo/NCCL use: given, or the one holding ``local_addr``.

    Left unset, gloo binds to whatever this machine's hostname resolves to; on many machines that
    is 127.0.0.1, which the other nodes cannot reach.
    """
    if value is None:
        return None
    if value == "auto":
        if any(os.environ.get(variable) for variable in SOCKET_IFNAME_VARIABLES):
            return None  # the user's own environment says which interface
        return interface_of(local_addr)
    names = str(value)
    if backend == "gloo":  # NCCL's syntax also allows prefixes (eth), exclusions (^docker) and =exact
        unknown = [name for name in names.split(",") if name not in interface_names()]
        if unknown:
            raise ConfigError("socket_ifname", value,
                              f"no interface {', '.join(unknown)} here; allowed: auto, null, or of "
                              f"{', '.join(interface_names())}")
    return names


def _from_allocation(key: str, value: Any, default: int | str, allocation: Allocation | None) -> Any:
    """``auto`` takes what the Slurm step fixed (or ``default`` outside Slurm); an explicit value
    must agree with the step. ``key`` is also the Allocation field that holds the fixed value."""
    fixed = getattr(allocation, key) if allocation is not None else None
    if value == "auto":
        return default if fixed is None else fixed
    if fixed is not None and value != fixed:
        raise ConfigError(key, value, f"Slurm job {allocation.job_id} fixed it to {fixed!r} for this "
                          f"task; use {key}=auto or submit the job to fit")
    return value


def _slurm_rank(allocation: Allocation, procs: tuple[int, ...], cfg_gpus: Any, cuda: bool,
                mode: ModeConfig) -> RankInfo:
    """One task per rank: the tasks Slurm placed must be the ranks the config asks for."""
    if procs != allocation.tasks_per_node:
        raise ConfigError("gpus", cfg_gpus, f"this Slurm step runs SLURM_TASKS_PER_NODE="
                          f"{allocation.tasks_spec} tasks, one per rank, but the config asks for "
                          f"{list(procs)} ranks per node",
                          sbatch_hint(len(procs), procs, "rank", cuda))
    info = rank_info(procs, allocation.node_rank, allocation.local_rank)
    if info.rank != allocation.global_rank:
        raise ConfigError("environment", f"SLURM_PROCID={allocation.global_rank}",
                          f"node {allocation.node_rank} local task {allocation.local_rank} is rank "
                          f"{info.rank} in block order; submit with --distribution=block")
    if mode.max_restarts:
        raise ConfigError("launcher.max_restarts", mode.max_restarts,
                          "one task per rank has no agent to restart it; Slurm requeues instead")
    return info


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "allowed: true, false")


def _check_training_options(cfg: DictConfig, device_type: str) -> None:
    """The trainer's options, checked here so a typo costs one line, not a started job."""
    trainer = cfg.get("trainer")
    if not isinstance(trainer, DictConfig):
        return
    mode = trainer.get("mode", "train")
    if mode not in TRAINER_MODES:
        raise ConfigError("trainer.mode", mode, f"allowed: {', '.join(TRAINER_MODES)}")
    checkpoint = cfg.get("checkpoint")
    if mode == "eval" and (checkpoint is None or not Path(str(checkpoint)).is_file()):
        raise ConfigError("checkpoint", checkpoint, "trainer.mode=eval needs the path of an existing checkpoint")
    if mode == "train" and checkpoint is not None:
        raise ConfigError("checkpoint", checkpoint, "is read by trainer.mode=eval only; to continue "
                          "training from it use resume=PATH")
    precision = str(trainer.get("precision", 32))
    if precision not in PRECISIONS:
        raise ConfigError("trainer.precision", trainer.get("precision"), f"allowed: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("trainer.precision", "fp16", "needs CUDA (backend=nccl); allowed on CPU: 32, bf16")
    accumulate = trainer.get("accumulate", 1)
    if not _is_int(accumulate) or accumulate < 1:
        raise ConfigError("trainer.accumulate", accumulate, "must be an integer >= 1")
    clip = trainer.get("clip_grad_norm")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip <= 0):
        raise ConfigError("trainer.clip_grad_norm", clip, "null or a number > 0")
    for key in ("channels_last", "compile", "tensorboard"):
        _check_bool(f"trainer.{key}", trainer.get(key, False))
    every = trainer.get("tensorboard_every_steps", 1)
    if not _is_int(every) or every < 1:
        raise ConfigError("trainer.tensorboard_every_steps", every, "must be an integer >= 1")
    if trainer.get("progress_bar", "auto") not in PROGRESS_BAR:
        raise ConfigError("trainer.progress_bar", trainer.get("progress_bar"), "allowed: auto, true, false")
    for key in ("deterministic", "cudnn_benchmark"):
        _check_bool(key, cfg.get(key, False))
    if cfg.get("deterministic") and cfg.get("cudnn_benchmark"):
        raise ConfigError("cudnn_benchmark", True, "benchmarking picks kernels anew in every run; "
                          "with deterministic=true it must be false")
    scale_lr = OmegaConf.select(cfg, "optim.scale_lr", default="none")
    if scale_lr not in LR_SCALING_RULES:
        raise ConfigError("optim.scale_lr", scale_lr, f"allowed: {', '.join(LR_SCALING_RULES)}")
    interval = OmegaConf.select(cfg, "sched.interval", default="epoch")
    if interval not in SCHEDULE_INTERVALS:
        raise ConfigError("sched.interval", interval, f"allowed: {', '.join(SCHEDULE_INTERVALS)}")


def load_job_config(cfg: DictConfig, run_dir: Path, allocation: Allocation | None = None) -> JobConfig:
    """Validate the user's config and resolve every ``auto`` into a concrete value.

    Inside a Slurm step (``allocation``), ``auto`` means what Slurm decided and explicit values
    are checked against it. With ``slurm_task=rank`` each task is one rank; with
    ``slurm_task=node`` each task is one node's launcher, starting that node's ranks itself.
    """
    role = cfg.get("slurm_task", "rank")
    if role not in SLURM_TASK_ROLES:
        raise ConfigError("slurm_task", role, f"allowed: {', '.join(SLURM_TASK_ROLES)}")
    if allocation is not None and role == "node" and set(allocation.tasks_per_node) != {1}:
        raise ConfigError("slurm_task", role, f"one launcher per node needs one task per node, this "
                          f"step has SLURM_TASKS_PER_NODE={allocation.tasks_spec}",
                          sbatch_hint(allocation.nodes, (1,) * allocation.nodes, "node", False))
    nodes = _from_allocation("nodes", cfg.get("nodes"), 1, allocation)
    nodes = _positive_int("nodes", nodes)
    node_rank = _from_allocation("node_rank", cfg.get("node_rank"), 0, allocation)
    if not _is_int(node_rank) or not 0 <= node_rank < nodes:
        raise ConfigError("node_rank", node_rank, f"allowed: auto or an integer in [0, {nodes}) for nodes={nodes}")
    mode = _mode(cfg.get("launcher"))
    gpus = cfg.get("gpus")
    if mode.rdzv == "c10d" and not (_is_int(gpus) or gpus == "auto"):
        raise ConfigError("gpus", gpus, "with launcher.rdzv=c10d nodes get their rank as they "
                          "join: give each node its own count (gpus=2 on one, gpus=1 on another)")
    needs_cuda_probe = gpus == "auto" or cfg.get("backend") in ("auto", "nccl")
    cuda_devices = _cuda_device_count() if needs_cuda_probe else 0
    slurm_ranks = allocation is not None and role == "rank"
    if slurm_ranks and gpus == "auto":
        procs = allocation.tasks_per_node
    else:
        procs = _procs_per_node(gpus, nodes, cuda_devices)
    backend = _backend(cfg.get("backend"), procs[node_rank], cuda_devices)
    slurm_rank = (_slurm_rank(allocation, procs, gpus, backend == "nccl", mode)
                  if slurm_ranks else None)
    _check_training_options(cfg, "cuda" if backend == "nccl" else "cpu")
    init_timeout = _seconds("init_timeout", cfg.get("init_timeout"))
    collective_timeout = _seconds("collective_timeout", cfg.get("collective_timeout"))
    seed = cfg.get("seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError("seed", seed, "must be an integer >= 0")
    dry_run = cfg.get("dry_run")
    if not isinstance(dry_run, bool):
        raise ConfigError("dry_run", dry_run, "allowed: true, false")
    master_addr = str(_from_allocation("master_addr", cfg.get("master_addr"), "127.0.0.1", allocation))
    target = _target(cfg, run_dir)
    if mode.local_rank_arg and target.name == TRAINER_MODULE:
        raise ConfigError("launcher.local_rank_arg", True, "is for scripts that read --local_rank "
                          "(torch.distributed.launch style); the built-in trainer reads LOCAL_RANK")
    resume = cfg.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).is_file():
        raise ConfigError("resume", resume, "allowed: null, auto, or the path of an existing checkpoint")
    if not dry_run:
        _check_writable_dir("hydra.run.dir", run_dir)
    static = mode.rdzv == "static"
    if static or mode.rdzv_endpoint is None:
        if slurm_rank is not None:
            hosts_store = slurm_rank.rank == 0
        else:
            hosts_store = static and node_rank == 0 or nodes == 1
        port = cfg.get("master_port")
        if port == "auto" and allocation is not None:
            port = allocation.master_port
        master_port = _master_port(port, nodes, master_addr, hosts_store)
        rdzv_host, rdzv_port, rdzv_key = master_addr, master_port, "master_addr"
    else:
        rdzv_host, rdzv_port = _split_endpoint(mode.rdzv_endpoint)
        master_port, rdzv_key = rdzv_port, "launcher.rdzv_endpoint"
    local_addr = _local_addr(cfg.get("local_addr"), rdzv_host, rdzv_key)
    return JobConfig(
        nodes=nodes,
        procs_per_node=procs,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        backend=backend,
        init_timeout_s=init_timeout,
        collective_timeout_s=collective_timeout,
        seed=seed,
        dry_run=dry_run,
        mode=mode,
        target=target,
        run_dir=run_dir,
        local_addr=local_addr,
        socket_ifname=_socket_ifname(cfg.get("socket_ifname"), local_addr, backend),
        rdzv_endpoint=f"[{rdzv_host}]:{rdzv_port}" if ":" in rdzv_host else f"{rdzv_host}:{rdzv_port}",
        # Every node must name the same run: derive it from what they all share.
        rdzv_id=mode.rdzv_id or f"launcher-{rdzv_host}-{rdzv_port}",
        slurm_rank=slurm_rank,
        console_ranks=_console_ranks("console_ranks", cfg.get("console_ranks", "all")),
        console_local_ranks=_console_ranks("console_local_ranks", cfg.get("console_local_ranks", "all")),
    )


def resolved_config(cfg: DictConfig, job: JobConfig) -> dict[str, Any]:
    """The config every rank reads: resolved once here (``${now:}`` included), autos filled in."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    container.update(
        nodes=job.nodes,  # not node_rank: one Slurm run dir's config.yaml serves every node
        master_addr=job.master_addr,
        gpus=list(job.procs_per_node),
        master_port=job.master_port,
        backend=job.backend,
        run_dir=str(job.run_dir),
    )
    return container
