"""``launcher=torchrun``: PyTorch's elastic agent, driven through its Python API in this process.

Running the agent in-process (rather than ``python -m torch.distributed.run`` as a child) saves an
interpreter start and a second ``import torch``; the agent, its rendezvous and its restart logic are
torch's own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from launcher import warm
from launcher.child import ERROR_DIR_ENV, agent_can_see_os_exit, run_agent_rank
from launcher.config import JobConfig
from launcher.errors import StartFailed
from launcher.failures import JOINED
from launcher.local_store import AGENT_BACKEND, FILE_STORE_ENV, register_agent_backend
from launcher.supervise import AGENT_THREAD_NAME, Interrupted, fork_server_pid, job_processes

if TYPE_CHECKING:
    from torch.distributed.launcher.api import LaunchConfig

CHILD_MODULE = "launcher.child"


# Python 3.11+: -P keeps the working directory off sys.path, so a user's launcher.py there cannot
# replace the worker's entry point (launcher.child then puts the directory back, last).
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []


def worker_args(job: JobConfig) -> list[str]:
    return ["-u", *_SAFE_PATH, "-m", CHILD_MODULE, job.target.kind, job.target.name, *job.target.args]


def _forks_warm(job: JobConfig) -> bool:
    """Whether the agent forks this job's ranks from its fork server (``launcher.warm``): a
    script only where the agent can learn that it ended with ``os._exit(0)``."""
    own_code = job.target.kind == "function" or job.target.is_trainer
    return warm.starts_warm(job) and fork_server_pid() is not None and (own_code or agent_can_see_os_exit())


def _entrypoint(job: JobConfig) -> tuple[Callable[..., None] | str, tuple[object, ...]]:
    """Warm (forked from the job's fork server) or a fresh interpreter."""
    if _forks_warm(job):
        return run_agent_rank, (job.target.kind, job.target.name, list(job.target.args), fork_server_pid())
    return sys.executable, tuple(worker_args(job))


def _rdzv_configs(job: JobConfig) -> dict[str, object]:
    """Every rendezvous wait bounded by ``init_timeout`` (torch's defaults are ten minutes each)."""
    if job.ranks_from_rendezvous:
        # A node that cannot reach the store waits two store reads before giving up.
        read_timeout = max(1, int(job.init_timeout_s / 2))
        return {"join_timeout": int(job.init_timeout_s), "read_timeout": read_timeout,
                "close_timeout": read_timeout}
    return {"rank": job.node_rank}


def _agent_settings(job: JobConfig) -> dict[str, Any]:
    """``LaunchConfig``'s keywords for this job, as plain values: what the agent is given, and
    what the dry run's torchrun line shows, without importing torch (2 s) for a dry run.
    ``rdzv_configs`` carries ``timeout`` as ``LaunchConfig`` itself sets it from ``rdzv_timeout``
    (torchrun's command line has no other way to give it)."""
    backend, configs = job.mode.rdzv, _rdzv_configs(job)
    if job.uses_file_store:
        backend = AGENT_BACKEND
        configs = {"path": os.environ.get(FILE_STORE_ENV, "TMPDIR/store") + ".agent"}
    return {
        "min_nodes": job.nodes,
        "max_nodes": job.nodes,
        "nproc_per_node": job.local_world_size,
        "run_id": job.rdzv_id,
        "rdzv_backend": backend,
        "rdzv_endpoint": job.rdzv_endpoint,
        "rdzv_configs": {**configs, "timeout": int(job.init_timeout_s)},
        "rdzv_timeout": int(job.init_timeout_s),
        "max_restarts": job.mode.max_restarts,
        "monitor_interval": job.mode.monitor_interval_s,
        "start_method": warm.WARM if _forks_warm(job) else "spawn",
        "local_addr": job.local_addr,
        "shutdown_timeout": int(job.mode.shutdown_grace_s),
    }


def launch_config(job: JobConfig) -> LaunchConfig:
    """The agent's settings; what it writes for itself (each worker's error file) goes to the
    job's temporary directory, removed at the end, not to a new ``/tmp/torchelastic_*`` per run."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    if job.uses_file_store:
        register_agent_backend()
    logs = DefaultLogsSpecs(log_dir=os.path.join(os.environ[ERROR_DIR_ENV], "agent"))
    return LaunchConfig(**_agent_settings(job), logs_specs=logs)


def command_line(job: JobConfig) -> str:
    """The ``torchrun`` command this mode is equivalent to (it runs the agent in-process)."""
    settings = _agent_settings(job)
    rdzv_conf = ",".join(f"{key}={value}" for key, value in settings["rdzv_configs"].items() if key != "rank")
    options = {
        "nnodes": job.nodes,
        "nproc-per-node": settings["nproc_per_node"],
        "rdzv-backend": settings["rdzv_backend"],
        "rdzv-endpoint": settings["rdzv_endpoint"],
        "rdzv-id": settings["run_id"],
        "rdzv-conf": rdzv_conf,
        "local-addr": settings["local_addr"],
        "max-restarts": settings["max_restarts"],
        "monitor-interval": settings["monitor_interval"],
    }
    if not job.ranks_from_rendezvous:
        options["node-rank"] = job.node_rank
    flags = [f"--{key}={value}" for key, value in options.items()]
    return shlex.join([sys.executable, "-m", "torch.distributed.run", *flags, "--no-python",
                       sys.executable, *worker_args(job)])


def _rendezvous_failure(job: JobConfig, error: Exception) -> str:
    from torch.distributed import DistNetworkError
    from torch.distributed.elastic.rendezvous import (
        RendezvousConnectionError,
        RendezvousTimeoutError,
    )

    where = job.rdzv_endpoint
    within = f"within init_timeout={job.init_timeout_s:g}s"
    joined = JOINED.search(str(error))
    if joined:
        return f"only {joined.group(1)} of {joined.group(2)} nodes joined the rendezvous at {where} {within}"
    if isinstance(error, RendezvousTimeoutError):
        return (f"fewer than {job.nodes} nodes joined the c10d rendezvous at {where} (job id "
                f"{job.rdzv_id}) {within}: start every node with the same rdzv_endpoint and rdzv_id")
    node = "this node" if job.ranks_from_rendezvous else f"node {job.node_rank}"
    if isinstance(error, (DistNetworkError, RendezvousConnectionError)):
        cause = error.__cause__ or error
        return (f"{node} could not reach the rendezvous store at {where} {within} (is node 0 "
                f"running, and are master_addr/master_port right?): {type(cause).__name__}: {cause}")
    return f"{node} could not rendezvous at {where} {within}: {type(error).__name__}: {error}"


# How often the main thread looks at the agent; signals are handled between looks.
_POLL_S = 0.1
# The rendezvous may take init_timeout; torch's store client retries a failed connection once more,
# which would double it. Past this slack the launcher gives up itself.
RENDEZVOUS_SLACK_S = 1.0


_CPP_LOG_FATAL = 3  # TORCH_CPP_LOG_LEVEL=FATAL


def _silence_cpp_retry_warnings() -> None:
    """torch's store client logs every connection retry from C++ (20 lines for one unreachable
    master); the launcher reports the outcome in one line. Raised for this process only, after
    its fork server was forked (``launcher.warm``): the ranks keep the user's own level."""
    if "TORCH_CPP_LOG_LEVEL" in os.environ:
        return
    import torch

    try:  # c10's level, read for every message (a build without the symbol keeps its warnings)
        level = ctypes.c_int.in_dll(ctypes.CDLL(os.path.join(torch.__path__[0], "lib", "libc10.so")),
                                    "FLAGS_caffe2_log_level")
    except (OSError, ValueError):
        return
    level.value = _CPP_LOG_FATAL


def _rendezvous_overdue(job: JobConfig) -> str:
    within = f"within init_timeout={job.init_timeout_s:g}s"
    if not job.ranks_from_rendezvous and job.node_rank == 0:  # it hosts the store: peers missing
        return (f"node 0: not all {job.nodes} nodes joined the rendezvous at {job.rdzv_endpoint} "
                f"{within}: start every node with the same nodes, master_addr and master_port")
    node = "this node" if job.ranks_from_rendezvous else f"node {job.node_rank}"
    return (f"{node} could not reach the rendezvous store at {job.rdzv_endpoint} {within} (is node 0 "
            "running, and are master_addr/master_port right?)")


def _run_agent(job: JobConfig, outcome: dict[str, BaseException]) -> None:
    from torch.distributed.launcher.api import elastic_launch

    entrypoint, args = _entrypoint(job)
    try:
        elastic_launch(launch_config(job), entrypoint)(*args)
    except BaseException as error:  # handed to the main thread, which decides
        outcome["error"] = error


def _wait_for_agent(job: JobConfig, agent: threading.Thread) -> None:
    """Wait in Python, not in the agent's C++ store calls, so Ctrl-C, SIGTERM and SIGHUP raise
    ``Interrupted`` at once in every phase; and bound the rendezvous by ``init_timeout``."""
    deadline: float | None = time.monotonic() + job.init_timeout_s + RENDEZVOUS_SLACK_S
    next_look = 0.0
    while agent.is_alive():
        agent.join(timeout=_POLL_S)
        if deadline is None or not agent.is_alive() or time.monotonic() < next_look:
            continue
        next_look = time.monotonic() + 0.5
        if job_processes():  # workers exist: the rendezvous is over
            deadline = None
        elif time.monotonic() > deadline:
            raise StartFailed(_rendezvous_overdue(job))


def run(job: JobConfig) -> dict[int, tuple[int, float]]:
    _silence_cpp_retry_warnings()
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    # The agent narrates every step and logs each worker failure; the launcher reports the root
    # cause itself (first failing rank, host, traceback), so keep the agent to critical messages.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # With forked ranks the agent stops them through torch.multiprocessing, which warns for each.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    outcome: dict[str, BaseException] = {}
    # A daemon thread: after Ctrl-C or a rendezvous timeout it may still be blocked in C++ while
    # the launcher stops the job and exits.
    agent = threading.Thread(target=_run_agent, args=(job, outcome), name=AGENT_THREAD_NAME, daemon=True)
    agent.start()
    _wait_for_agent(job, agent)
    error = outcome.get("error")
    if error is None:
        return {}
    if isinstance(error, (DistError, RendezvousError)):
        raise StartFailed(_rendezvous_failure(job, error)) from None
    if isinstance(error, ChildFailedError):
        return {rank: (failure.exitcode, failure.timestamp) for rank, failure in error.failures.items()}
    if isinstance(error, SignalException):
        raise Interrupted(int(error.sigval)) from None
    raise error
