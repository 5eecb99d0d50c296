"""What a launch will do, per rank: printed by ``dry_run=true`` before anything starts."""

from __future__ import annotations

import os

from launcher.config import JobConfig
from launcher.modes import get_mode
from launcher.ranks import node_ranks


def _device(job: JobConfig, local_rank: int) -> str:
    if job.device_type == "cpu":
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        physical = visible.split(",")[local_rank]
        return f"cuda:{local_rank} (CUDA_VISIBLE_DEVICES entry {physical})"
    return f"cuda:{local_rank}"


def describe(job: JobConfig) -> str:
    lines = [
        f"dry run: launcher={job.mode.name} nodes={job.nodes} gpus={list(job.procs_per_node)} "
        f"backend={job.backend} run_dir={job.run_dir}",
    ]
    for info in node_ranks(job.procs_per_node, job.node_rank):
        lines.append(
            f"  node_rank={info.node_rank} local_rank={info.local_rank} rank={info.rank} "
            f"world_size={info.world_size} master={job.master_addr}:{job.master_port} "
            f"device={_device(job, info.local_rank)}"
        )
    lines.append(f"  command: {get_mode(job.mode.name).command_line(job)}")
    lines.append("nothing was started")
    return "\n".join(lines)
