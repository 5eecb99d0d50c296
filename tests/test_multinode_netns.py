"""Nodes that are separate hosts: each launcher runs in its own network namespace, with its own
address (10.231.0.1, 10.231.0.2) and hostname, joined by a bridge the test can unplug.

These need root (``ip netns add``). Elsewhere they skip with the reason; CI sets
LAUNCHER_REQUIRE_NETNS=1 so that there they fail instead of skipping.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    START_SLACK_S,
    TINY,
    NodeResult,
    run_nodes,
    wait_for,
    wait_for_no_leftovers,
)
from tests.netns import NETNS_ETC, VirtualCluster, netns_unavailable_reason, sweep_stale_namespaces

pytestmark = pytest.mark.slow  # real jobs: several processes each

PORT = 29500  # every cluster has its own network: no port collides with anything outside it
MASTER = VirtualCluster.address(0)
RENDEZVOUS = {
    "torchrun": ["launcher=torchrun"],
    "c10d": ["launcher=torchrun", "launcher.rdzv=c10d", f"launcher.rdzv_endpoint={MASTER}:{PORT}",
             "launcher.rdzv_id=netns-test"],
    "mp_spawn": ["launcher=mp_spawn"],
}


@pytest.fixture(scope="session")
def netns_permitted() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        if os.environ.get("LAUNCHER_REQUIRE_NETNS") == "1":
            pytest.fail(f"network-namespace tests are required here but cannot run: {reason}")
        pytest.skip(reason)
    sweep_stale_namespaces()


@pytest.fixture
def cluster(netns_permitted) -> Iterator[VirtualCluster]:
    made = VirtualCluster(nodes=2)
    try:
        yield made.create()
    finally:
        made.destroy()


def node_overrides(kind: str, *extra: str, nodes: int = 2, gpus: str = "1") -> list[list[str]]:
    """The same command for every node; only node_rank differs (and nothing at all with c10d)."""
    common = [f"nodes={nodes}", f"gpus={gpus}", f"master_addr={MASTER}", f"master_port={PORT}",
              *RENDEZVOUS[kind], *extra]
    return [[*common, f"node_rank={node}"] for node in range(nodes)]


def in_namespace(cluster: VirtualCluster):
    return lambda node: cluster.command(node, [])


def assert_all_ok(results: dict[int, NodeResult]) -> None:
    for node, result in results.items():
        assert result.returncode == 0, f"node {node} failed ({result.returncode}):\n{result.stderr[-4000:]}"


def assert_nothing_left(results: dict[int, NodeResult]) -> None:
    for result in results.values():
        wait_for_no_leftovers(result.job_id)


def written_summary(tmp_path: Path) -> dict:
    """summary.json of the one node that ran global rank 0 (with c10d that can be either)."""
    found = list(tmp_path.glob("node*/summary.json"))
    assert len(found) == 1, f"expected exactly one summary.json, found {found}"
    return json.loads(found[0].read_text())


@pytest.mark.parametrize("kind", ["torchrun", "c10d", "mp_spawn"])
def test_nodes_with_their_own_addresses_train_together(launcher, tmp_path, cluster, kind):
    gpus = {"c10d": ["gpus=2", "gpus=1"]}.get(kind)
    per_node = node_overrides(kind, *TINY, "init_timeout=60", gpus="[2,1]" if gpus is None else "1")
    if gpus is not None:  # c10d: heterogeneous by each node giving its own count
        per_node = [[*overrides, count] for overrides, count in zip(per_node, gpus, strict=True)]
    results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(cluster))
    assert_all_ok(results)
    summary = written_summary(tmp_path)
    assert summary["world_size"] == 3 and summary["nodes"] == 2
    assert sorted(summary["gpus_per_node"]) == [1, 2]
    checkpoints = [path.parent.parent.name for path in tmp_path.glob("node*/checkpoints/last.pt")]
    assert len(checkpoints) == 1, f"only global rank 0 writes checkpoints, found them in {checkpoints}"
    for node, result in results.items():
        assert f"local_addr {cluster.address(node)}, interface lan0" in result.stderr, result.stderr
    assert_nothing_left(results)


def test_each_node_prepares_its_own_data_without_a_shared_filesystem(launcher, tmp_path, cluster):
    per_node = node_overrides("mp_spawn", *TINY, "data.cache_scope=node", "init_timeout=60",
                              "data.dataset._target_=tests.plugins.CountingSynthetic", gpus="[2,1]")
    per_node = [[*overrides, f"data.root={tmp_path / f'cache{node}'}"]
                for node, overrides in enumerate(per_node)]
    results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(cluster))
    assert_all_ok(results)
    for node, first_rank in ((0, 0), (1, 2)):
        lines = (tmp_path / f"cache{node}" / "prepare_calls").read_text().splitlines()
        calls = [(call["rank"], call["local_rank"], call["cached"]) for call in map(json.loads, lines)]
        assert calls == [(first_rank, 0, False)], f"node {node}: {calls}"


@pytest.mark.parametrize("socket_ifname", ["auto", "lan0"])
def test_shared_hostname_mapped_to_loopback_still_works(launcher, tmp_path, netns_permitted,
                                                        socket_ifname):
    """All nodes have the same hostname, which resolves to 127.0.0.1 (common on cloud images):
    gloo would advertise 127.0.0.1 to its peers unless told which interface to use."""
    shared = VirtualCluster(nodes=2, own_hostnames=False)
    try:
        shared.create()
        per_node = node_overrides("torchrun", *TINY, f"socket_ifname={socket_ifname}",
                                  "init_timeout=60")
        results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(shared))
    finally:
        shared.destroy()
    assert_all_ok(results)
    assert written_summary(tmp_path)["world_size"] == 2


def test_without_an_interface_the_shared_hostname_trap_fails(launcher, tmp_path, netns_permitted):
    """The control for the test above: with socket_ifname=null gloo falls into the trap."""
    shared = VirtualCluster(nodes=2, own_hostnames=False)
    try:
        shared.create()
        per_node = node_overrides("mp_spawn", "trainer.epochs=1", "socket_ifname=null",
                                  "init_timeout=5")
        results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(shared), timeout_s=150)
    finally:
        shared.destroy()
    assert any(result.returncode != 0 for result in results.values())
    assert any("127.0.0.1" in result.stderr for result in results.values()), results[0].stderr[-3000:]
    assert_nothing_left(results)


def debian_hosts(cluster: VirtualCluster, resolvable_peers: bool = True) -> None:
    """Each node's /etc/hosts as Debian writes it: its own name on 127.0.1.1, the others' names
    on their addresses (or not at all)."""
    for node, ns in enumerate(cluster.node_ns):
        lines = ["127.0.0.1 localhost", f"127.0.1.1 {cluster.hostname(node)}"]
        lines += [f"{cluster.address(k)} {cluster.hostname(k)}"
                  for k in range(cluster.nodes) if k != node and resolvable_peers]
        (NETNS_ETC / ns / "hosts").write_text("\n".join(lines) + "\n")


def as_slurm_task(cluster: VirtualCluster):
    """Node k's command run as task k of a two-node Slurm step (one task per node), with the
    variables srun sets for it: the master is the first host, node0, by name."""
    def prefix(node: int) -> list[str]:
        step = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(node),
                "SLURM_LOCALID": "0", "SLURM_NODEID": str(node), "SLURM_NTASKS": "2",
                "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_JOB_NODELIST": "node[0-1]"}
        return cluster.command(node, ["env", *(f"{key}={value}" for key, value in step.items())])
    return prefix


def test_slurm_master_named_on_loopback_advertises_the_address_its_peers_reach(launcher, tmp_path, cluster):
    """The master's own name resolves to 127.0.1.1 on it: it must still advertise (and give gloo)
    the address and interface on which the other node reaches it, and the two nodes train."""
    debian_hosts(cluster)
    plan = launcher.run("dry_run=true", "backend=gloo", prefix=as_slurm_task(cluster)(0), timeout_s=60)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"local_addr={cluster.address(0)} socket_ifname=lan0" in plan.stdout, plan.stdout
    results = run_nodes(launcher, tmp_path, [["backend=gloo", *TINY, "init_timeout=30"]] * 2,
                        prefix=as_slurm_task(cluster), timeout_s=150)
    assert_all_ok(results)
    assert written_summary(tmp_path)["world_size"] == 2


def test_slurm_master_named_on_loopback_without_a_route_to_its_peers_is_refused(launcher, tmp_path, cluster):
    debian_hosts(cluster, resolvable_peers=False)
    done = launcher.run("dry_run=true", "backend=gloo", prefix=as_slurm_task(cluster)(0), timeout_s=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "local_addr='auto': this node's route to the master is loopback (127.0." in done.stderr
    assert "socket_ifname=" in done.stderr


@pytest.mark.parametrize(("kind", "expected"), [("torchrun", "only 1 of 2 nodes joined"),
                                                ("c10d", "fewer than 2 nodes joined the c10d rendezvous"),
                                                ("mp_spawn", "only 1 of 2 ranks joined")])
def test_missing_node_fails_within_init_timeout(launcher, tmp_path, cluster, kind, expected):
    results = run_nodes(launcher, tmp_path, node_overrides(kind, "init_timeout=5")[:1],
                        prefix=in_namespace(cluster), timeout_s=60)
    result = results[0]
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.elapsed_s < 5 + START_SLACK_S, f"took {result.elapsed_s:.0f}s with init_timeout=5"
    assert expected in result.stderr, result.stderr[-3000:]
    assert_nothing_left(results)


@pytest.mark.parametrize("kind", ["torchrun", "c10d", "mp_spawn"])
def test_wrong_master_addr_fails_within_init_timeout_naming_it(launcher, tmp_path, cluster, kind):
    """Node 1 is told a master address on its network where no machine answers."""
    wrong = "10.231.0.9"
    overrides = node_overrides(kind, "init_timeout=5")[1]
    overrides = [item.replace(MASTER, wrong) for item in overrides]
    results = run_nodes(launcher, tmp_path, [overrides], prefix=lambda _: cluster.command(1, []),
                        timeout_s=60)
    result = results[0]
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.elapsed_s < 5 + START_SLACK_S, f"took {result.elapsed_s:.0f}s with init_timeout=5"
    named = {"mp_spawn": f"({wrong}, {PORT})"}.get(kind, f"could not reach the rendezvous store at {wrong}:{PORT}")
    assert named in result.stderr, result.stderr[-3000:]
    assert_nothing_left(results)


def test_master_addr_without_a_route_is_a_config_error(launcher, cluster):
    launch = launcher.run("nodes=2", "node_rank=1", "master_addr=192.0.2.1", f"master_port={PORT}",
                          prefix=cluster.command(1, []), timeout_s=60)
    assert launch.returncode == 2, launch.stderr
    assert "master_addr='192.0.2.1': no route from this machine" in launch.stderr


@pytest.mark.parametrize("kind", ["torchrun", "mp_spawn"])
def test_cut_link_fails_every_rank_within_the_collective_timeout(launcher, tmp_path, cluster, kind):
    cut_at = {}

    def cut_once_training(procs) -> None:
        metrics = tmp_path / "node0" / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, 90,
                 "the first epoch to finish on both nodes")
        cluster.set_link(1, up=False)
        cut_at["t"] = time.monotonic()

    per_node = node_overrides(kind, "data.dataset.num_samples=1024", "trainer.epochs=1000",
                              "save.every_epochs=0", "collective_timeout=5", "init_timeout=60")
    results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(cluster),
                        started=cut_once_training, timeout_s=150)
    for node, result in results.items():
        assert result.returncode not in (0, None), f"node {node} survived the cut:\n{result.stderr[-2000:]}"
        exited_after_cut = time.monotonic() - cut_at["t"]
        assert exited_after_cut < 5 + 25, f"node {node} took {exited_after_cut:.0f}s with collective_timeout=5"
        assert "job failed" in result.stderr, result.stderr[-3000:]
    assert_nothing_left(results)


def test_restart_resumes_from_the_checkpoint_and_matches_an_uninterrupted_run(launcher, tmp_path, cluster):
    small = ["data.dataset.num_samples=2048", "trainer.epochs=3", "save.every_steps=4",
             "model._target_=tests.plugins.FaultyMLP", "init_timeout=60", "trainer.curves=false"]
    fault = ["+model.fault_step=20", "+model.rank=1", f"+model.marker={tmp_path / 'faulted'}"]
    per_node = node_overrides("torchrun", *small, *fault, "launcher.max_restarts=1")
    results = run_nodes(launcher, tmp_path, per_node, prefix=in_namespace(cluster), timeout_s=150)
    assert_all_ok(results)
    assert (tmp_path / "faulted").exists(), "the fault never happened"
    assert "recovered by 1 restart(s) from: rank 1 on host node1" in results[1].stderr, results[1].stderr
    restarted = written_summary(tmp_path)
    assert restarted["restarts"] == 1

    reference = launcher.run(*small, "gpus=2", run_dir=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert reference.summary()["restarts"] == 0
    assert restarted["weights_sha256"] == reference.summary()["weights_sha256"]
    assert_nothing_left(results)
