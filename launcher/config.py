"""The launcher's typed configuration, built once from Hydra's config and validated up front.

Every check here runs before anything is started or written, so a bad value costs the user one
line on stderr (exit code 2) and never a half-started job or an overwritten run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.errors import ConfigError
from launcher.network import PortUnavailable, check_port_free, free_port

MODES = ("torchrun", "mp_spawn")
BACKENDS = ("auto", "nccl", "gloo")
CPU_PROCESSES_WITHOUT_GPU = 2
TRAINER_MODULE = "trainer"


@dataclass(frozen=True)
class Target:
    """What every rank runs: our trainer module, or a user's torchrun-compatible script."""

    kind: str  # "module" | "script"
    name: str
    args: tuple[str, ...] = ()

    def python_args(self) -> list[str]:
        """Arguments after ``python`` that run the target (as torchrun would)."""
        head = ["-m", self.name] if self.kind == "module" else [self.name]
        return [*head, *self.args]


@dataclass(frozen=True)
class ModeConfig:
    name: str
    max_restarts: int = 0
    monitor_interval_s: float = 0.1
    shutdown_grace_s: float = 10.0
    start_method: str = "spawn"


@dataclass(frozen=True)
class JobConfig:
    nodes: int
    procs_per_node: tuple[int, ...]
    node_rank: int
    master_addr: str
    master_port: int
    backend: str  # resolved: "nccl" or "gloo"
    init_timeout_s: float
    seed: int
    dry_run: bool
    mode: ModeConfig
    target: Target
    run_dir: Path

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


def _cuda_device_count() -> int:
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


def _master_port(value: Any, nodes: int, master_addr: str) -> int:
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
    if nodes == 1:
        try:
            check_port_free(master_addr, value)
        except PortUnavailable as why:
            raise ConfigError("master_port", value, f"{why}; pick another port or use master_port=auto") from why
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


def _target(cfg: DictConfig, run_dir: Path) -> Target:
    script = cfg.get("script")
    script_args = [str(arg) for arg in (cfg.get("script_args") or [])]
    if script is None:
        if script_args:
            raise ConfigError("script_args", script_args, "only used together with script=path/to/train.py")
        return Target("module", TRAINER_MODULE, (str(run_dir / "config.yaml"),))
    path = Path(str(script)).expanduser()
    if not path.is_file():
        raise ConfigError("script", str(script), "no such file; give the path of a Python script")
    return Target("script", str(path.resolve()), tuple(script_args))


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
    return mode


def load_job_config(cfg: DictConfig, run_dir: Path) -> JobConfig:
    """Validate the user's config and resolve every ``auto`` into a concrete value."""
    nodes = _positive_int("nodes", cfg.get("nodes"))
    node_rank = cfg.get("node_rank")
    if not _is_int(node_rank) or not 0 <= node_rank < nodes:
        raise ConfigError("node_rank", node_rank, f"allowed: an integer in [0, {nodes}) for nodes={nodes}")
    mode = _mode(cfg.get("launcher"))
    needs_cuda_probe = cfg.get("gpus") == "auto" or cfg.get("backend") in ("auto", "nccl")
    cuda_devices = _cuda_device_count() if needs_cuda_probe else 0
    procs = _procs_per_node(cfg.get("gpus"), nodes, cuda_devices)
    backend = _backend(cfg.get("backend"), procs[node_rank], cuda_devices)
    init_timeout = _seconds("init_timeout", cfg.get("init_timeout"))
    _seconds("collective_timeout", cfg.get("collective_timeout"))
    seed = cfg.get("seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError("seed", seed, "must be an integer >= 0")
    dry_run = cfg.get("dry_run")
    if not isinstance(dry_run, bool):
        raise ConfigError("dry_run", dry_run, "allowed: true, false")
    master_addr = str(cfg.get("master_addr"))
    target = _target(cfg, run_dir)
    resume = cfg.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).is_file():
        raise ConfigError("resume", resume, "allowed: null, auto, or the path of an existing checkpoint")
    if not dry_run:
        _check_writable_dir("hydra.run.dir", run_dir)
    master_port = _master_port(cfg.get("master_port"), nodes, master_addr)
    return JobConfig(
        nodes=nodes,
        procs_per_node=procs,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        backend=backend,
        init_timeout_s=init_timeout,
        seed=seed,
        dry_run=dry_run,
        mode=mode,
        target=target,
        run_dir=run_dir,
    )


def resolved_config(cfg: DictConfig, job: JobConfig) -> dict[str, Any]:
    """The config every rank reads: resolved once here (``${now:}`` included), autos filled in."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    container.update(
        gpus=list(job.procs_per_node),
        master_port=job.master_port,
        backend=job.backend,
        run_dir=str(job.run_dir),
    )
    return container
