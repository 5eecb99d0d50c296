"""``launcher=torchrun``: PyTorch's elastic agent, driven through its Python API in this process.

Running the agent in-process (rather than ``python -m torch.distributed.run`` as a child) saves an
interpreter start and a second ``import torch``; the agent, its rendezvous and its restart logic are
torch's own.
"""

from __future__ import annotations

import logging
import shlex
import sys

from launcher.config import JobConfig
from launcher.errors import StartFailed
from launcher.failures import JOINED
from launcher.supervise import Interrupted

CHILD_MODULE = "launcher.child"


def worker_args(job: JobConfig) -> list[str]:
    return ["-u", "-m", CHILD_MODULE, job.target.kind, job.target.name, *job.target.args]


def _agent_options(job: JobConfig) -> dict[str, object]:
    return {
        "nnodes": job.nodes,
        "nproc-per-node": job.local_world_size,
        "node-rank": job.node_rank,
        "rdzv-backend": "static",
        "master-addr": job.master_addr,
        "master-port": job.master_port,
        "rdzv-conf": f"timeout={int(job.init_timeout_s)}",
        "max-restarts": job.mode.max_restarts,
        "monitor-interval": job.mode.monitor_interval_s,
    }


def command_line(job: JobConfig) -> str:
    """The ``torchrun`` command this mode is equivalent to (it runs the agent in-process)."""
    options = [f"--{key}={value}" for key, value in _agent_options(job).items()]
    worker = [CHILD_MODULE, job.target.kind, job.target.name, *job.target.args]
    return shlex.join([sys.executable, "-m", "torch.distributed.run", *options, "--module", *worker])


def _rendezvous_failure(job: JobConfig, error: Exception) -> str:
    where = f"{job.master_addr}:{job.master_port}"
    joined = JOINED.search(str(error))
    if joined:
        return (f"only {joined.group(1)} of {joined.group(2)} nodes joined the rendezvous at {where} "
                f"within init_timeout={job.init_timeout_s:g}s")
    return (f"node {job.node_rank} could not rendezvous at {where} within "
            f"init_timeout={job.init_timeout_s:g}s: {type(error).__name__}: {error}")


def run(job: JobConfig) -> dict[int, tuple[int, float]]:
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent narrates every step and logs each worker failure; the launcher reports the root
    # cause itself (first failing rank, host, traceback), so keep the agent to critical messages.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=job.nodes,
        max_nodes=job.nodes,
        nproc_per_node=job.local_world_size,
        # Every node must name the same run: derive it from what they all share.
        run_id=f"launcher-{job.master_addr}-{job.master_port}",
        rdzv_backend="static",
        rdzv_endpoint=f"{job.master_addr}:{job.master_port}",
        rdzv_configs={"rank": job.node_rank, "timeout": int(job.init_timeout_s)},
        max_restarts=job.mode.max_restarts,
        monitor_interval=job.mode.monitor_interval_s,
        start_method="spawn",
        shutdown_timeout=int(job.mode.shutdown_grace_s),
    )
    try:
        elastic_launch(config, sys.executable)(*worker_args(job))
    except (DistError, RendezvousError) as no_rendezvous:
        raise StartFailed(_rendezvous_failure(job, no_rendezvous)) from None
    except ChildFailedError as failed:
        return {rank: (failure.exitcode, failure.timestamp) for rank, failure in failed.failures.items()}
    except SignalException as signalled:
        raise Interrupted(int(signalled.sigval)) from None
    return {}



