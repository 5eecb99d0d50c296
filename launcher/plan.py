"""What a launch will do, per rank: printed by ``dry_run=true`` before anything starts."""

from __future__ import annotations

import os

from launcher.config import JobConfig
from launcher.devices import cuda_device_index, physical_device
from launcher.ranks import node_ranks


def _device(job: JobConfig, local_rank: int) -> str:
    """The device the rank will use, by the trainer's rule (``launcher.devices``)."""
    if job.device_type == "cpu":
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    sharing = 1 if job.slurm_rank is not None else job.local_world_size
    index = cuda_device_index(job.cuda_devices, visible, sharing, local_rank)
    physical = physical_device(visible, index)
    return f"cuda:{index}" + (f" (CUDA_VISIBLE_DEVICES entry {physical})" if physical is not None else "")


def node_place(job: JobConfig) -> str:
    """Where this node stands in the job, as far as it is known before the rendezvous."""
    if job.slurm_rank is not None:
        return (f"Slurm task = rank {job.slurm_rank.rank} of {job.world_size} (node {job.node_rank}"
                f", local rank {job.slurm_rank.local_rank}); nothing is spawned")
    if job.ranks_from_rendezvous:
        return (f"a node of {job.nodes} (node rank and global ranks assigned by the c10d "
                f"rendezvous at {job.rdzv_endpoint}, job id {job.rdzv_id})")
    return f"node {job.node_rank} of {job.nodes} (world size {job.world_size})"


def describe(job: JobConfig, command: str) -> str:
    """Each rank's place and device, then ``command``: how the launch starts them."""
    gpus = job.local_world_size if job.ranks_from_rendezvous else list(job.procs_per_node)
    interface = job.socket_ifname or "as in the environment"
    lines = [
        f"dry run: launcher={job.mode.name} rdzv={job.mode.rdzv} nodes={job.nodes} gpus={gpus} "
        f"backend={job.backend} run_dir={job.run_dir}",
        f"  this node: {node_place(job)}",
        f"  network: local_addr={job.local_addr} socket_ifname={interface}",
    ]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        seen = f" ({job.cuda_devices} CUDA device(s) visible here)" if job.device_type == "cuda" else ""
        lines.append(f"  devices: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}{seen}")
    ranks = [job.slurm_rank] if job.slurm_rank else node_ranks(job.procs_per_node, job.node_rank)
    for info in ranks:
        if job.ranks_from_rendezvous:  # MASTER_ADDR/PORT too: the agent picks them at rendezvous
            place = f"local_rank={info.local_rank}"
        else:
            place = (f"node_rank={info.node_rank} local_rank={info.local_rank} rank={info.rank} "
                     f"world_size={info.world_size} master={job.master_addr}:{job.master_port}")
        lines.append(f"  {place} device={_device(job, info.local_rank)}")
    if job.plugins is not None:
        lines.append(f"  trainer: {job.plugins}")
    lines.append(f"  command: {command}")
    lines.append("nothing was started")
    return "\n".join(lines)
