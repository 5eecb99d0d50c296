"""Rank arithmetic: the one place where node and process counts become ranks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    """Everything a process needs to know about its place in the job."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int

    def env(self) -> dict[str, str]:
        """The torchrun-compatible variables for this rank (without MASTER_ADDR/MASTER_PORT)."""
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
        }


def rank_info(procs_per_node: Sequence[int], node_rank: int, local_rank: int) -> RankInfo:
    """Place ``local_rank`` of node ``node_rank`` in a job with ``procs_per_node[k]`` ranks on node k.

    Node k's ranks start after the sum of the earlier nodes' counts, so heterogeneous nodes
    (``[4, 2]``) get contiguous global ranks.
    """
    if not procs_per_node or any(count < 1 for count in procs_per_node):
        raise ValueError(f"every node needs at least one process, got {list(procs_per_node)}")
    if not 0 <= node_rank < len(procs_per_node):
        raise ValueError(f"node_rank {node_rank} outside [0, {len(procs_per_node)})")
    local_world_size = procs_per_node[node_rank]
    if not 0 <= local_rank < local_world_size:
        raise ValueError(f"local_rank {local_rank} outside [0, {local_world_size})")
    return RankInfo(
        rank=sum(procs_per_node[:node_rank]) + local_rank,
        local_rank=local_rank,
        world_size=sum(procs_per_node),
        local_world_size=local_world_size,
        node_rank=node_rank,
    )


def node_ranks(procs_per_node: Sequence[int], node_rank: int) -> list[RankInfo]:
    """All ranks that run on one node, in local-rank order."""
    return [rank_info(procs_per_node, node_rank, local) for local in range(procs_per_node[node_rank])]
