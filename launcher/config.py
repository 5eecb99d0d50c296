"""The launcher's typed configuration, built once from Hydra's config and validated up front.

Every check here runs before anything is started or written, so a bad value costs the user one
line on stderr (exit code 2) and never a half-started job or an overwritten run directory.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import pickletools
import re
import shlex
import shutil
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.child import COLLECTIVE_TIMEOUT_ENV, INIT_TIMEOUT_ENV, LOCAL_RANK_ARG_ENV
from launcher.devices import cuda_device_index
from launcher.errors import ConfigError
from launcher.failures import FAILURE_FILE
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
from launcher.slurm import FAILURES_DIR
from launcher.slurm.allocation import Allocation, sbatch_hint
from trainer.contract import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    CURVES_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    TRAIN_LOG,
)

SOCKET_IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
CPU_PROCESSES_WITHOUT_GPU = 2
TRAINER_MODULE = "trainer"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Target:
    """What every rank runs: our trainer module, or the user's script, module or executable."""

    kind: str  # "module" | "script" | "exec" (an executable, no python) | "function" (launch())
    name: str
    args: tuple[str, ...] = ()

    @property
    def is_trainer(self) -> bool:
        return self.kind == "module" and self.name == TRAINER_MODULE

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
    shutdown_grace_s: float = 5.0
    start_method: str = "forkserver"  # launcher.warm: ranks forked from a warm process; or "spawn"
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
    cuda_devices: int = 0  # CUDA devices this process sees (0 where none was looked for)
    plugins: str | None = None  # the built-in trainer's: what it builds (for the dry run)

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
    def uses_file_store(self) -> bool:
        """One node whose ranks the launcher starts: rendezvous through a file, no open port."""
        return self.nodes == 1 and self.mode.rdzv == "static" and self.slurm_rank is None

    @property
    def world_size(self) -> int:
        return sum(self.procs_per_node)

    @property
    def local_world_size(self) -> int:
        return self.procs_per_node[self.node_rank]

    @property
    def device_type(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"


# Device nodes a CUDA-capable torch needs: NVIDIA's, WSL2's GPU bridge, and ROCm's (torch.cuda on AMD).
GPU_DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


def has_gpu_device_nodes() -> bool:
    """Whether this machine could have a GPU: only then does the launcher ask CUDA anything."""
    return any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES)


def _cuda_device_count() -> int:
    """Without any GPU device node torch could only answer 0, so it is not imported: importing it
    takes about a second, which every launch (and every rejected config) would otherwise pay."""
    if not has_gpu_device_nodes():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _procs_per_node(value: Any, nodes: int, cuda_devices: int) -> tuple[int, ...]:
    """``gpus`` (auto, a count, or a per-node list: ``launcher.validation``) for each node."""
    if value == "auto":
        return (cuda_devices or CPU_PROCESSES_WITHOUT_GPU,) * nodes
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) != nodes:
            raise ConfigError("gpus", list(value), f"a per-node list needs one entry per node (nodes={nodes})")
        return tuple(value)
    return (value,) * nodes


def _backend(requested: Any, local_procs: int, cuda_devices: int, cuda_visible_devices: str | None = None,
             task_local_rank: int | None = None) -> str:
    """``task_local_rank``: this process is a Slurm task that is one rank (its own view of the
    devices, e.g. ``--gpus-per-task=1``); else the node's ``local_procs`` ranks share this view."""
    if requested == "auto":
        requested = "nccl" if cuda_devices else "gloo"
    if requested == "nccl":
        if cuda_devices == 0:
            raise ConfigError("backend", requested, "needs CUDA, and no CUDA device is visible; allowed here: gloo, auto")
        if task_local_rank is None:  # the highest local rank needs the most devices
            cuda_device_index(cuda_devices, cuda_visible_devices, local_procs, local_procs - 1)
        else:
            cuda_device_index(cuda_devices, cuda_visible_devices, 1, task_local_rank)
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
    return tuple(str(arg) for arg in value)


def _target(cfg: DictConfig, run_dir: Path) -> Target:
    script = cfg.get("script")
    script_args = _script_args(cfg.get("script_args"))
    as_module, no_python = cfg.get("script_module", False), cfg.get("no_python", False)
    if script is None:
        for key, value in (("script_args", list(script_args)), ("script_module", as_module),
                           ("no_python", no_python)):
            if value:
                raise ConfigError(key, value, "only used together with script (a path, a module "
                                  "with script_module=true, or an executable with no_python=true)")
        return Target("module", TRAINER_MODULE, (str(run_dir / CONFIG_FILE),))
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


def _console_ranks(value: Any) -> tuple[int, ...] | None:
    """``all`` (None), a rank, or a list of ranks."""
    if value == "all":
        return None
    return tuple(value) if isinstance(value, (list, tuple, ListConfig)) else (value,)


def _mode(cfg: DictConfig) -> ModeConfig:
    """The launch mode's options, as ``launcher.validation`` allowed each, and how they combine."""
    options = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(options, dict)
    try:
        mode = ModeConfig(**options)
    except TypeError as err:
        raise ConfigError("launcher", options, f"unknown option ({err})") from err
    if mode.name == "mp_spawn" and mode.max_restarts:
        raise ConfigError("launcher.max_restarts", mode.max_restarts, "restarts need launcher=torchrun")
    if mode.name == "mp_spawn" and mode.rdzv != "static":
        raise ConfigError("launcher.rdzv", mode.rdzv, "dynamic rendezvous needs launcher=torchrun")
    return mode


def split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6addr]:port`` as (host, port); None when it is neither."""
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
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


def _address_peers_reach(loopback: str, allocation: Allocation) -> str:
    """Several Slurm nodes, and this node's route to the master went over loopback: the master is
    this node, and its name resolves here to 127.0.1.1 (Debian's default) or 127.0.0.1. Peers
    told that address (and gloo bound to ``lo``) could never connect. The source address of the
    route to another node of the step is the one they reach; loopback stays only where every other
    node is this machine too (a test cluster)."""
    peers = [host for index, host in enumerate(allocation.hosts) if index != allocation.node_rank]
    for peer in peers:
        try:
            address = route_source_address(peer)
        except OSError:
            continue  # does not resolve here, or no route: try the next node
        if not ipaddress.ip_address(address).is_loopback:
            return address
    if peers and all(is_local_address(peer) for peer in peers):
        return loopback
    raise ConfigError("local_addr", "auto", f"this node's route to the master is loopback ({loopback}) "
                      f"and no route to the other nodes ({', '.join(peers) or 'none listed'}) leaves "
                      "this machine, so they could not reach it",
                      "give this node's address (local_addr=ADDRESS) or its interface "
                      "(socket_ifname=eth0), or map its hostname to that address in /etc/hosts")


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
        assert allocation is not None  # fixed came from it
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


def _check_training_options(cfg: DictConfig, device_type: str) -> None:
    """The trainer's options that depend on each other or on the device (what each key allows on
    its own: ``launcher.validation``), checked here so a mistake costs one line, not a started job."""
    mode = OmegaConf.select(cfg, "trainer.mode")
    checkpoint = cfg.get("checkpoint")
    if mode == "eval" and (checkpoint is None or not Path(str(checkpoint)).is_file()):
        raise ConfigError("checkpoint", checkpoint, "trainer.mode=eval needs the path of an existing checkpoint")
    if mode == "train" and checkpoint is not None:
        raise ConfigError("checkpoint", checkpoint, "is read by trainer.mode=eval only; to continue "
                          "training from it use resume=PATH")
    if str(OmegaConf.select(cfg, "trainer.precision")) == "fp16" and device_type != "cuda":
        raise ConfigError("trainer.precision", "fp16", "needs CUDA (backend=nccl); allowed on CPU: 32, bf16")
    if cfg.get("deterministic") and cfg.get("cudnn_benchmark"):
        raise ConfigError("cudnn_benchmark", True, "benchmarking picks kernels anew in every run; "
                          "with deterministic=true it must be false")


# --- the run directory: a rerun never loses an earlier run ------------------------------------------
# Written by the built-in trainer only once every rank has joined the process group, that is after
# every task (Slurm) or node of this job passed its checks: proof of an earlier run even in a run
# directory that the tasks of one step enter together. ``config.yaml`` is written by each launcher
# as it starts, so it is proof only where no other launcher of this job shares the directory.
TRAINING_OUTPUTS = (SUMMARY_FILE, METRICS_FILE, CHECKPOINTS_DIR)
# What ``overwrite=true`` removes before the new run starts (config.yaml is replaced atomically,
# launcher.log and .hydra/ are Hydra's); the training outputs last, so a task that still sees one
# knows the clearing is not finished.
RUN_OUTPUTS = (LOGS_SUBDIR, FAILURES_DIR, FAILURE_FILE, TENSORBOARD_DIR, CURVES_FILE, TRAIN_LOG,
               *TRAINING_OUTPUTS)
# What the built-in trainer reads from a checkpoint: to resume from it, and to evaluate it.
RESUME_KEYS = ("model", "optimizer", "scheduler", "progress", "rng", "world_size")
EVAL_KEYS = ("model", "progress")


def _slurm_requeued() -> bool:
    """A Slurm job that runs again (requeued before its time limit, or after a node failure):
    the trainer continues from the job's own checkpoint, in the job's own run directory."""
    try:
        return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    except ValueError:
        return False


def _continues_run(cfg: DictConfig) -> bool:
    return cfg.get("resume") is not None or _slurm_requeued()


def previous_run(run_dir: Path, shared: bool) -> list[str]:
    """What in ``run_dir`` shows an earlier run (``shared``: other launchers of this job may be
    writing their config.yaml into it right now)."""
    found = []
    for name in TRAINING_OUTPUTS if shared else (CONFIG_FILE, *TRAINING_OUTPUTS):
        path = run_dir / name
        if path.is_dir():
            if any(path.iterdir()):
                found.append(f"{name}/")
        elif path.exists():
            found.append(name)
    return found


def check_run_dir(cfg: DictConfig, run_dir: Path, shared: bool) -> None:
    """Refuse to start in a directory that holds an earlier run, unless this run continues it
    (``resume``, a Slurm requeue) or replaces it (``overwrite=true``)."""
    if str(OmegaConf.select(cfg, "hydra.run.dir", default="x")).strip() == "":
        raise ConfigError("hydra.run.dir", "", "must name a directory (empty would be the current "
                          "directory, mixing the run's files with everything in it)")
    overwrite = cfg.get("overwrite", False)
    resume = cfg.get("resume")
    if overwrite and resume is not None:
        raise ConfigError("overwrite", True, f"replaces the run directory's earlier run, resume={resume} "
                          "continues it: give one of them")
    if overwrite or _continues_run(cfg):
        return
    found = previous_run(run_dir, shared)
    if found:
        raise ConfigError("hydra.run.dir", str(run_dir), f"holds an earlier run ({', '.join(found)}); "
                          "continue it with resume=auto, replace it with overwrite=true, or choose "
                          "another directory")


def outputs_to_replace(cfg: DictConfig, run_dir: Path, shared: bool) -> list[Path]:
    """With ``overwrite=true``: the earlier run's outputs, to remove before this run writes any."""
    if not cfg.get("overwrite", False) or _continues_run(cfg) or not previous_run(run_dir, shared):
        return []
    return [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists() or (run_dir / name).is_symlink()]


class _PickledDict:
    """A dict under construction in a pickle's opcodes: only its string keys are kept."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def add(self, items: list[Any]) -> None:
        self.keys.update(key for key in items[0::2] if isinstance(key, str))


_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}


def pickled_dict_keys(data: bytes) -> set[str] | None:
    """The string keys of the plain dict a pickle holds at its top level; None when it holds
    anything else or is no pickle.

    Read opcode by opcode with ``pickletools.genops``, tracking only the stack's shape: nothing is
    executed and no class is imported.
    """
    mark = object()
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop_to_mark() -> list[Any]:
        index = len(stack) - 1 - stack[::-1].index(mark)
        items = stack[index + 1:]
        del stack[index:]
        return items

    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "STOP":
                result = stack.pop()
                return set(result.keys) if isinstance(result, _PickledDict) else None
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[cast(int, arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[cast(int, arg)])
            elif name in _STRING_OPCODES:
                stack.append(str(arg))
            elif name == "EMPTY_DICT":
                stack.append(_PickledDict())
            elif name == "DICT":
                made = _PickledDict()
                made.add(pop_to_mark())
                stack.append(made)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                if isinstance(stack[-1], _PickledDict):
                    stack[-1].add([key, value])
            elif name == "SETITEMS":
                items = pop_to_mark()
                if isinstance(stack[-1], _PickledDict):
                    stack[-1].add(items)
            else:  # any other opcode: its effect on the stack's shape, its value unknown
                before = opcode.stack_before
                if pickletools.markobject in before:
                    pop_to_mark()
                    before = before[:before.index(pickletools.markobject)]
                if before:
                    if len(stack) < len(before):
                        return None
                    del stack[len(stack) - len(before):]
                stack.extend(mark if item is pickletools.markobject else None for item in opcode.stack_after)
    except (ValueError, IndexError, KeyError, EOFError):
        return None
    return None


def checkpoint_problem(path: Path, keys: tuple[str, ...]) -> str | None:
    """Why ``path`` is no checkpoint of the built-in trainer holding ``keys``; None if it is one.

    torch.save writes a zip archive whose ``*/data.pkl`` is a pickle; its opcodes are read, never
    run, so the check needs no torch and executes nothing.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                return "is a zip archive but no torch checkpoint (no data.pkl in it)"
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError):
        return "is not a checkpoint (torch.save writes a zip archive)"
    found = pickled_dict_keys(data)
    if found is None:
        return (f"is not a checkpoint of the built-in trainer (a dict of {', '.join(keys)}, as in "
                "RUN_DIR/checkpoints/last.pt); a model's bare state_dict is not one")
    missing = [key for key in keys if key not in found]
    if missing:
        return f"is not a checkpoint of the built-in trainer: it has no {', '.join(missing)}"
    return None


def _check_checkpoint_files(cfg: DictConfig, run_dir: Path) -> None:
    """``resume=PATH`` (or ``auto`` with DIR/checkpoints/last.pt) and, to evaluate, ``checkpoint``:
    a file the trainer can read, named in one line, not a KeyError inside every rank."""
    resume = cfg.get("resume")
    if resume == "auto":
        own = run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
        problem = checkpoint_problem(own, RESUME_KEYS) if own.is_file() else None
        if problem:
            raise ConfigError("resume", "auto", f"{own} {problem}")
    elif resume is not None:
        problem = checkpoint_problem(Path(str(resume)), RESUME_KEYS)
        if problem:
            raise ConfigError("resume", str(resume), problem)
    checkpoint = cfg.get("checkpoint")
    if OmegaConf.select(cfg, "trainer.mode", default="train") == "eval" and checkpoint is not None:
        problem = checkpoint_problem(Path(str(checkpoint)), EVAL_KEYS)
        if problem:
            raise ConfigError("checkpoint", str(checkpoint), problem)


def load_job_config(cfg: DictConfig, run_dir: Path, allocation: Allocation | None = None) -> JobConfig:
    """Validate the user's config and resolve every ``auto`` into a concrete value.

    Inside a Slurm step (``allocation``), ``auto`` means what Slurm decided and explicit values
    are checked against it. With ``slurm_task=rank`` each task is one rank; with
    ``slurm_task=node`` each task is one node's launcher, starting that node's ranks itself.
    """
    role = cfg.get("slurm_task", "rank")
    if allocation is not None and role == "node" and set(allocation.tasks_per_node) != {1}:
        raise ConfigError("slurm_task", role, f"one launcher per node needs one task per node, this "
                          f"step has SLURM_TASKS_PER_NODE={allocation.tasks_spec}",
                          sbatch_hint(allocation.nodes, (1,) * allocation.nodes, "node", False))
    mode = _mode(cfg.get("launcher"))
    nodes = _from_allocation("nodes", cfg.get("nodes"), 1, allocation)
    # Outside Slurm, auto would make every machine node 0.
    if cfg.get("node_rank") == "auto" and allocation is None and nodes > 1 and mode.rdzv == "static":
        raise ConfigError("node_rank", "auto", f"with nodes={nodes} outside Slurm each machine needs its "
                          f"own index: node_rank=0 where master_addr is, 1 to {nodes - 1} on the others "
                          "(or launcher.rdzv=c10d, which numbers the nodes as they join)")
    node_rank = _from_allocation("node_rank", cfg.get("node_rank"), 0, allocation)
    if not 0 <= node_rank < nodes:
        raise ConfigError("node_rank", node_rank, f"allowed: auto or an integer in [0, {nodes}) for nodes={nodes}")
    gpus = cfg.get("gpus")
    if mode.rdzv == "c10d" and isinstance(gpus, (list, ListConfig)):
        raise ConfigError("gpus", gpus, "with launcher.rdzv=c10d nodes get their rank as they "
                          "join: give each node its own count (gpus=2 on one, gpus=1 on another)")
    needs_cuda_probe = gpus == "auto" or cfg.get("backend") in ("auto", "nccl")
    cuda_devices = _cuda_device_count() if needs_cuda_probe else 0
    rank_allocation = allocation if role == "rank" else None  # each Slurm task is one rank
    if rank_allocation is not None and gpus == "auto":
        procs = rank_allocation.tasks_per_node
    else:
        procs = _procs_per_node(gpus, nodes, cuda_devices)
    backend = _backend(cfg.get("backend"), procs[node_rank], cuda_devices,
                       os.environ.get("CUDA_VISIBLE_DEVICES"),
                       rank_allocation.local_rank if rank_allocation is not None else None)
    slurm_rank = (_slurm_rank(rank_allocation, procs, gpus, backend == "nccl", mode)
                  if rank_allocation is not None else None)
    _check_training_options(cfg, "cuda" if backend == "nccl" else "cpu")
    dry_run = cfg.get("dry_run")
    master_addr = str(_from_allocation("master_addr", cfg.get("master_addr"), "127.0.0.1", allocation))
    target = _target(cfg, run_dir)
    if mode.local_rank_arg and target.name == TRAINER_MODULE:
        raise ConfigError("launcher.local_rank_arg", True, "is for scripts that read --local_rank "
                          "(torch.distributed.launch style); the built-in trainer reads LOCAL_RANK")
    resume = cfg.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).is_file():
        raise ConfigError("resume", resume, "allowed: null, auto, or the path of an existing checkpoint")
    if target.is_trainer:  # a script reads its own
        _check_checkpoint_files(cfg, run_dir)
    check_run_dir(cfg, run_dir, shared=allocation is not None or nodes > 1)
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
        if cfg.get("master_addr") == "auto" and allocation is None and nodes > 1:
            # Every machine would be node 0's address, 127.0.0.1, and wait there until init_timeout.
            raise ConfigError("master_addr", "auto", f"with nodes={nodes} outside Slurm give node 0's "
                              "address, the same on every machine (master_addr=127.0.0.1 when "
                              "every node runs on this machine)")
        rdzv_host, rdzv_port, rdzv_key = master_addr, master_port, "master_addr"
    else:
        endpoint = split_endpoint(mode.rdzv_endpoint)
        assert endpoint is not None  # launcher.validation allows HOST:PORT only
        rdzv_host, rdzv_port = endpoint
        master_port, rdzv_key = rdzv_port, "launcher.rdzv_endpoint"
    local_addr = _local_addr(cfg.get("local_addr"), rdzv_host, rdzv_key)
    if (cfg.get("local_addr") == "auto" and allocation is not None and nodes > 1
            and ipaddress.ip_address(local_addr).is_loopback):
        local_addr = _address_peers_reach(local_addr, allocation)
    return JobConfig(
        nodes=nodes,
        procs_per_node=procs,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        backend=backend,
        init_timeout_s=float(cfg.get("init_timeout")),
        collective_timeout_s=float(cfg.get("collective_timeout")),
        seed=cfg.get("seed"),
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
        console_ranks=_console_ranks(cfg.get("console_ranks", "all")),
        console_local_ranks=_console_ranks(cfg.get("console_local_ranks", "all")),
        cuda_devices=cuda_devices,
    )


def resolved_config(cfg: DictConfig, job: JobConfig) -> dict[str, Any]:
    """The config every rank reads: resolved once here (``${now:}`` included), autos filled in."""
    container = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))
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
