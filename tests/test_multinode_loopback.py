"""Two launcher processes on 127.0.0.1 acting as two nodes (the same command, another node_rank)."""

import json

import pytest

from launcher.network import free_port
from tests.conftest import (
    DDP_SCRIPT,
    START_SLACK_S,
    TINY,
    assert_ok,
    run_nodes,
    wait_for_no_leftovers,
)

pytestmark = pytest.mark.slow  # real jobs: several processes each

MODES = ["torchrun", "mp_spawn"]


def loopback_nodes(launcher, tmp_path, gpus, *overrides, timeout_s=120):
    """Two nodes on 127.0.0.1: the same command, another node_rank."""
    port = free_port("127.0.0.1")
    common = ["nodes=2", f"gpus={gpus}", "master_addr=127.0.0.1", f"master_port={port}", *overrides]
    results = run_nodes(launcher, tmp_path, [[*common, f"node_rank={node}"] for node in (0, 1)],
                        timeout_s=timeout_s)
    return {node: (r.returncode, r.stderr, r.job_id) for node, r in results.items()}


@pytest.mark.parametrize("mode", MODES)
def test_heterogeneous_two_nodes(launcher, tmp_path, mode):
    results = loopback_nodes(launcher, tmp_path, "[2,1]", f"launcher={mode}", *TINY)
    for node, (code, err, job_id) in results.items():
        assert code == 0, f"node {node} failed:\n{err[-3000:]}"
        wait_for_no_leftovers(job_id)
    summary = json.loads((tmp_path / "node0" / "summary.json").read_text())
    assert summary["world_size"] == 3 and summary["nodes"] == 2
    assert summary["gpus_per_node"] == [2, 1]
    assert not (tmp_path / "node1" / "summary.json").exists(), "only global rank 0 writes results"


def test_two_nodes_train_exactly_like_one_node_of_the_same_world_size(launcher, tmp_path):
    two_nodes = loopback_nodes(launcher, tmp_path, "1", *TINY)
    assert all(code == 0 for code, _, _ in two_nodes.values())
    one_node = launcher.run(*TINY, "gpus=2", run_dir=tmp_path / "single")
    assert_ok(one_node)
    multi = json.loads((tmp_path / "node0" / "summary.json").read_text())
    assert multi["world_size"] == 2
    assert multi["weights_sha256"] == one_node.summary()["weights_sha256"]


@pytest.mark.parametrize("mode", MODES)
def test_rank_crash_on_node_1_fails_both_nodes(launcher, tmp_path, mode):
    results = loopback_nodes(launcher, tmp_path, "[2,1]", f"launcher={mode}", f"script={DDP_SCRIPT}",
                        f"script_args=[{tmp_path / 'out'},--fail-rank,2]", "init_timeout=30",
                        "collective_timeout=10")
    code1, err1, _ = results[1]
    assert code1 == 1 and "rank 2 on host" in err1 and "deliberate failure on rank 2" in err1, err1
    code0, err0, _ = results[0]
    assert code0 != 0, "node 0 must not report success when node 1 failed"
    for _, _, job_id in results.values():
        wait_for_no_leftovers(job_id)


@pytest.mark.parametrize(("mode", "expected"), [("torchrun", "only 1 of 2 nodes joined"),
                                                ("mp_spawn", "only 2 of 4 ranks joined")])
def test_node_that_never_joins_fails_the_others_within_init_timeout(launcher, mode, expected):
    port = free_port("127.0.0.1")
    launch = launcher.run(f"launcher={mode}", "nodes=2", "node_rank=0", "master_addr=127.0.0.1", f"master_port={port}",
                          "init_timeout=5", timeout_s=60)
    assert launch.returncode == 1, launch.stderr
    assert launch.elapsed_s < 5 + START_SLACK_S, f"took {launch.elapsed_s:.0f}s with init_timeout=5"
    assert expected in launch.stderr, launch.stderr[-2000:]
    assert "Error executing job" not in launch.stderr, "the launcher must report it, not crash"
    wait_for_no_leftovers(launcher.job_ids[-1])


def test_c10d_rendezvous_assigns_node_ranks_to_heterogeneous_nodes(launcher, tmp_path):
    port = free_port("127.0.0.1")
    common = ["nodes=2", "launcher.rdzv=c10d", f"launcher.rdzv_endpoint=127.0.0.1:{port}",
              "launcher.rdzv_id=loopback", *TINY]
    results = run_nodes(launcher, tmp_path, [[*common, "gpus=2"], [*common, "gpus=1"]])
    for node, result in results.items():
        assert result.returncode == 0, f"node {node} failed:\n{result.stderr[-3000:]}"
        wait_for_no_leftovers(result.job_id)
    summaries = [json.loads(path.read_text()) for path in tmp_path.glob("node*/summary.json")]
    assert len(summaries) == 1, "exactly one node ran global rank 0"
    assert summaries[0]["world_size"] == 3 and sorted(summaries[0]["gpus_per_node"]) == [1, 2]
