"""``launcher=torchrun``: PyTorch's elastic agent, driven through its Python API in this process.

Running the agent in-process (rather than ``python -m torch.distributed.run`` as a child) saves an
interpreter start and a second ``import torch``; the agent, its rendezvous and its restart logic are
torch's own.
"""

from __future__ import annotations

import logging
import shlex
import sys
from typing import TYPE_CHECKING

from launcher.config import JobConfig
from launcher.errors import StartFailed
from launcher.failures import JOINED
from launcher.supervise import Interrupted

if TYPE_CHECKING:
    from torch.distributed.launcher.api import LaunchConfig

CHILD_MODULE = "launcher.child"


# Python 3.11+: -P keeps the working directory off sys.path, so a user's launcher.py there cannot
# replace the worker's entry point (launcher.child then puts the directory back, last).
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []


def worker_args(job: JobConfig) -> list[str]:
    return ["-u", *_SAFE_PATH, "-m", CHILD_MODULE, job.target.kind, job.target.name, *job.target.args]


def _rdzv_configs(job: JobConfig) -> dict[str, object]:
    """Every rendezvous wait bounded by ``init_timeout`` (torch's defaults are ten minutes each)."""
    if job.ranks_from_rendezvous:
        # A node that cannot reach the store waits two store reads before giving up.
        read_timeout = max(1, int(job.init_timeout_s / 2))
        return {"join_timeout": int(job.init_timeout_s), "read_timeout": read_timeout,
                "close_timeout": read_timeout}
    return {"rank": job.node_rank}


def launch_config(job: JobConfig) -> LaunchConfig:
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=job.nodes,
        max_nodes=job.nodes,
        nproc_per_node=job.local_world_size,
        run_id=job.rdzv_id,
        rdzv_backend=job.mode.rdzv,
        rdzv_endpoint=job.rdzv_endpoint,
        rdzv_configs=_rdzv_configs(job),
        rdzv_timeout=int(job.init_timeout_s),
        max_restarts=job.mode.max_restarts,
        monitor_interval=job.mode.monitor_interval_s,
        start_method="spawn",
        local_addr=job.local_addr,
        shutdown_timeout=int(job.mode.shutdown_grace_s),
    )


def command_line(job: JobConfig) -> str:
    """The ``torchrun`` command this mode is equivalent to (it runs the agent in-process)."""
    config = launch_config(job)
    rdzv_conf = ",".join(f"{key}={value}" for key, value in config.rdzv_configs.items() if key != "rank")
    options = {
        "nnodes": job.nodes,
        "nproc-per-node": config.nproc_per_node,
        "rdzv-backend": config.rdzv_backend,
        "rdzv-endpoint": config.rdzv_endpoint,
        "rdzv-id": config.run_id,
        "rdzv-conf": rdzv_conf,
        "local-addr": config.local_addr,
        "max-restarts": config.max_restarts,
        "monitor-interval": config.monitor_interval,
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


def run(job: JobConfig) -> dict[int, tuple[int, float]]:
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    # The agent narrates every step and logs each worker failure; the launcher reports the root
    # cause itself (first failing rank, host, traceback), so keep the agent to critical messages.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(launch_config(job), sys.executable)(*worker_args(job))
    except (DistError, RendezvousError) as no_rendezvous:
        raise StartFailed(_rendezvous_failure(job, no_rendezvous)) from None
    except ChildFailedError as failed:
        return {rank: (failure.exitcode, failure.timestamp) for rank, failure in failed.failures.items()}
    except SignalException as signalled:
        raise Interrupted(int(signalled.sigval)) from None
    return {}
