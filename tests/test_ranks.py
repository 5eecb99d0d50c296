"""The one rank function: table-driven, heterogeneous nodes included."""

import itertools

import pytest

from launcher.ranks import RankInfo, node_ranks, rank_info

CASES = [
    # procs per node, node_rank, local_rank -> rank, world_size, local_world_size
    ([1], 0, 0, 0, 1, 1),
    ([2], 0, 1, 1, 2, 2),
    ([4, 4], 0, 3, 3, 8, 4),
    ([4, 4], 1, 0, 4, 8, 4),
    ([4, 4], 1, 2, 6, 8, 4),
    ([2, 1], 0, 1, 1, 3, 2),
    ([2, 1], 1, 0, 2, 3, 1),
    ([4, 2], 1, 1, 5, 6, 2),
    ([1, 3, 2], 1, 2, 3, 6, 3),
    ([1, 3, 2], 2, 1, 5, 6, 2),
]


@pytest.mark.parametrize(("procs", "node", "local", "rank", "world", "local_world"), CASES)
def test_rank_info_table(procs, node, local, rank, world, local_world):
    assert rank_info(procs, node, local) == RankInfo(rank, local, world, local_world, node)


@pytest.mark.parametrize(
    ("procs", "node", "local"),
    [([2], 1, 0), ([2], -1, 0), ([2], 0, 2), ([2, 1], 1, 1), ([], 0, 0), ([2, 0], 0, 0)],
)
def test_rank_info_rejects_impossible_places(procs, node, local):
    with pytest.raises(ValueError):
        rank_info(procs, node, local)


@pytest.mark.parametrize("procs", [[1], [3], [2, 2], [2, 1], [1, 4, 2], [3, 1, 1, 2]])
def test_every_global_rank_exactly_once_and_contiguous_per_node(procs):
    ranks = [[info.rank for info in node_ranks(procs, node)] for node in range(len(procs))]
    flat = list(itertools.chain.from_iterable(ranks))
    assert flat == list(range(sum(procs)))
    for node, node_list in enumerate(ranks):
        assert node_list == list(range(sum(procs[:node]), sum(procs[:node]) + procs[node]))


def test_env_is_torchrun_compatible():
    env = rank_info([2, 1], 1, 0).env()
    assert env == {"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "1",
                   "NODE_RANK": "1", "GROUP_RANK": "1"}
