"""``launcher=mp_spawn``: this node's ranks as ``torch.multiprocessing`` children of the launcher."""

from __future__ import annotations

import logging
import time

from launcher import warm
from launcher.child import run_spawned_rank
from launcher.config import JobConfig
from launcher.ranks import rank_info
from launcher.supervise import fork_server_pid


def _spawn_args(job: JobConfig) -> tuple[object, ...]:
    return (
        list(job.procs_per_node),
        job.node_rank,
        job.master_addr,
        job.master_port,
        job.target.kind,
        job.target.name,
        list(job.target.args),
        fork_server_pid() if warm.starts_warm(job) else None,
    )


def command_line(job: JobConfig) -> str:
    return (
        f"torch.multiprocessing.start_processes(launcher.child.run_spawned_rank, "
        f"args={_spawn_args(job)!r}, nprocs={job.local_world_size}, "
        f"start_method={job.mode.start_method!r})"
    )


def run(job: JobConfig) -> dict[int, tuple[int, float]]:
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    # spawn warns for every rank it stops after a failure; the launcher reports the root cause.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)

    context = mp.start_processes(
        run_spawned_rank,
        args=_spawn_args(job),
        nprocs=job.local_world_size,
        join=False,
        start_method=warm.WARM if fork_server_pid() is not None else "spawn",  # see warm.warm_start
    )
    try:
        while not context.join(timeout=1.0, grace_period=job.mode.shutdown_grace_s):
            pass
    except ProcessException as failed:
        # Only the rank spawn saw fail: the others were terminated by spawn itself afterwards.
        code = context.processes[failed.error_index].exitcode
        rank = rank_info(job.procs_per_node, job.node_rank, failed.error_index).rank
        return {rank: (code if code is not None else 1, time.time())}
    return {}
