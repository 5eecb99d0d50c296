"""Inside a Slurm job step: what the allocation already decided, and the ``#SBATCH`` lines that
would fit a configuration that disagrees with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from launcher.environments import SlurmEnvironment

SLURM_TASK_ROLES = ("rank", "node")


@dataclass(frozen=True)
class Allocation:
    """The facts of this Slurm step task, read once from Slurm's variables."""

    nodes: int
    node_rank: int
    tasks_per_node: tuple[int, ...]
    tasks_spec: str  # SLURM_TASKS_PER_NODE as Slurm wrote it, for messages
    global_rank: int
    local_rank: int
    master_addr: str  # first host of the node list, unless MASTER_ADDR is exported
    master_port: int  # derived from the job id (every task agrees), unless MASTER_PORT is exported
    job_id: str
    hosts: tuple[str, ...]  # the step's nodes, in node-rank order

    @classmethod
    def from_slurm(cls, slurm: SlurmEnvironment) -> Allocation:
        return cls(
            nodes=slurm.nodes(),
            node_rank=slurm.node_rank(),
            tasks_per_node=tuple(slurm.tasks_per_node()),
            tasks_spec=slurm.tasks_per_node_spec(),
            global_rank=slurm.global_rank(),
            local_rank=slurm.local_rank(),
            master_addr=slurm.main_address(),
            master_port=slurm.main_port(),
            job_id=slurm.environ.get("SLURM_JOB_ID", "?"),
            hosts=tuple(slurm.hosts()),
        )


def sbatch_hint(nodes: int, procs_per_node: Sequence[int], role: str, cuda: bool) -> str:
    """The submission that fits ``nodes`` x ``procs_per_node`` for a task ``role``."""
    template = "slurm/train.sbatch" if role == "rank" else "slurm/train_torchrun.sbatch"
    uniform = len(set(procs_per_node)) == 1
    lines = [f"HINT: for nodes={nodes} gpus={list(procs_per_node) if not uniform else procs_per_node[0]} "
             f"submit {template} with:", f"  #SBATCH --nodes={nodes}"]
    if role == "node":
        lines.append("  #SBATCH --ntasks-per-node=1")
    elif uniform:
        lines.append(f"  #SBATCH --ntasks-per-node={procs_per_node[0]}")
    else:
        lines.append(f"  #SBATCH --ntasks={sum(procs_per_node)}   # Slurm decides the split: "
                     "check SLURM_TASKS_PER_NODE, or pass gpus=auto")
    if cuda and uniform:
        lines.append(f"  #SBATCH --gpus-per-node={procs_per_node[0]}")
    return "\n".join(lines)
