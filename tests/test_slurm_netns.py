"""Slurm jobs on a cluster whose two nodes are separate hosts (``tests/slurm_netns.py``):
``rack1-node01`` at 10.231.0.1 and ``rack1-node02`` at 10.231.0.2, each in its own network
namespace with its own hostname, so that a job's host list (``rack1-node[01-02]``), master address,
socket interface and rendezvous are those of a real cluster, not 127.0.0.1 everywhere.

Needs root, network namespaces and the Slurm daemons; elsewhere the tests skip with the reason, and
where LAUNCHER_REQUIRE_NETNS=1 or LAUNCHER_REQUIRE_SLURM=1 (CI) they fail instead. The cluster is
started once for the module; the module shares the xdist group of the other Slurm tests
(``tests/conftest.py``), so its jobs never compete with theirs for the machine's two cores.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, START_SLACK_S, TINY, wait_for, wait_for_no_leftovers
from tests.netns import sweep_stale_namespaces
from tests.slurm_netns import (
    NODELIST,
    NODES,
    NetnsSlurmCluster,
    slurm_unavailable_reason,
    sweep_stale,
)
from tests.test_slurm import (
    CPU_ONLY,
    JOB_TIMEOUT_S,
    TERMINAL,
    SlurmRunner,
    summaries,
)

pytestmark = pytest.mark.slow  # real jobs: several processes each

CHECK = (sys.executable, "-m", "launcher.check")
ROW_PREFIX = "[rank 0] "  # rank 0's console lines under srun
# The nodes as every rank must see them: (hostname, address, interface).
PLACES = [(name, NetnsSlurmCluster.address(node), "lan0") for node, name in enumerate(NODES)]


@pytest.fixture(scope="module")
def netns_slurm_cluster() -> Iterator[NetnsSlurmCluster]:
    reason = slurm_unavailable_reason()
    if reason is not None:
        required = [name for name in ("LAUNCHER_REQUIRE_NETNS", "LAUNCHER_REQUIRE_SLURM")
                    if os.environ.get(name) == "1"]
        if required:
            pytest.fail(f"the namespace Slurm cluster is required here ({', '.join(required)}=1) "
                        f"but cannot run: {reason}")
        pytest.skip(reason)
    sweep_stale_namespaces()
    sweep_stale()
    cluster = NetnsSlurmCluster().start()  # stops what it started if it fails
    try:
        yield cluster
    finally:
        cluster.stop()


class NetnsSlurmRunner(SlurmRunner):
    """test_slurm's runner, pointed at the namespace cluster (SLURM_CONF; no sacct there)."""

    def __init__(self, workdir: Path, cluster: NetnsSlurmCluster) -> None:
        super().__init__(workdir)
        self.cluster = cluster

    def env(self) -> dict[str, str]:
        return self.cluster.env(super().env())

    def state(self, job_id: str) -> str:  # scontrol: this cluster has no sacct
        return self.cluster.job_state(job_id)

    def ended(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
        """The job's final state; on timeout, fail with its state and output so far."""
        try:
            wait_for(lambda: self.state(job_id) in TERMINAL, timeout_s, f"Slurm job {job_id} to end")
        except AssertionError as late:
            raise AssertionError(f"{late} (state {self.state(job_id)}); its output:\n"
                                 f"{self.output(job_id)[-4000:]}") from None
        return self.state(job_id)


@pytest.fixture
def netns_slurm(netns_slurm_cluster, tmp_path) -> Iterator[NetnsSlurmRunner]:
    runner = NetnsSlurmRunner(tmp_path, netns_slurm_cluster)
    yield runner
    for job_id in runner.jobs:
        netns_slurm_cluster.client("scancel", job_id)
    wait_for(lambda: all(runner.state(job) in TERMINAL for job in runner.jobs), 30,
             "the test's Slurm jobs to end")
    wait_for_no_leftovers(runner.job_marker, timeout_s=30)


@pytest.fixture
def reference_sha256(local_weights) -> str:
    """weights_sha256 of the TINY run on this machine with 4 ranks: what a 2 x 2 job must reach."""
    return local_weights("gpus=4", *TINY)


def rank_hosts(run_dir: Path) -> dict[int, str]:
    """The host each rank ran on, from the first line its log starts with."""
    hosts = {}
    for log in (run_dir / "logs").glob("rank_*.log"):
        first = log.read_text().splitlines()[0]  # ==== attempt 0: rank R (local rank L) on HOST, pid ...
        hosts[int(log.stem.split("_")[1])] = first.split(" on ", 1)[1].split(",")[0]
    return hosts


@pytest.mark.parametrize(("template", "layout"), [("train.sbatch", ["--ntasks-per-node=2"]),
                                                  ("train_torchrun.sbatch", [])])
def test_template_trains_across_the_two_hosts_to_the_local_weights(netns_slurm, reference_sha256,
                                                                     template, layout):
    gpus = [] if template == "train.sbatch" else ["gpus=2"]
    job = netns_slurm.sbatch("-N", "2", *layout, str(REPO / "slurm" / template), *gpus, *TINY)
    state = netns_slurm.ended(job)
    out = netns_slurm.output(job)
    assert state == "COMPLETED", f"{state}\n{out[-4000:]}"
    run_dir = netns_slurm.run_dir(job)
    (summary,) = summaries(run_dir)
    assert summary["world_size"] == 4 and summary["nodes"] == 2 and summary["gpus_per_node"] == [2, 2]
    assert rank_hosts(run_dir) == {0: NODES[0], 1: NODES[0], 2: NODES[1], 3: NODES[1]}
    config = (run_dir / "config.yaml").read_text()
    assert f"master_addr: {NODES[0]}\n" in config, config  # the first host of rack1-node[01-02]
    if template == "train_torchrun.sbatch":  # each node's agent says where its ranks talk
        for _, address, interface in PLACES:
            assert f"local_addr {address}, interface {interface}" in out, out[-4000:]
    assert summary["weights_sha256"] == reference_sha256


def test_launcher_slurm_trains_across_the_two_hosts_to_the_local_weights(netns_slurm, reference_sha256):
    """launcher=slurm (submitit): 2 nodes x 2 ranks, waited for through squeue/scontrol."""
    done = netns_slurm.launcher("nodes=2", "gpus=2", "slurm.wait=true", "slurm.time=10", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(netns_slurm.jobs) == 1, done.stdout
    (summary_file,) = (netns_slurm.workdir / "outputs").rglob("summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["world_size"] == 4 and summary["nodes"] == 2 and summary["gpus_per_node"] == [2, 2]
    assert rank_hosts(summary_file.parent) == {0: NODES[0], 1: NODES[0], 2: NODES[1], 3: NODES[1]}
    assert summary["weights_sha256"] == reference_sha256


def test_every_task_plans_its_own_address_and_the_master_on_node_0(netns_slurm):
    """The dry run of the one-task-per-rank template, in the allocation: each task expands the host
    list, takes rack1-node01 as the master and advertises its own node's address and interface."""
    job = netns_slurm.sbatch("-N", "2", "--ntasks-per-node=2", str(REPO / "slurm" / "train.sbatch"),
                             "dry_run=true", CPU_ONLY)
    state = netns_slurm.ended(job)
    out = netns_slurm.output(job)
    assert state == "COMPLETED", f"{state}\n{out[-4000:]}"
    for node, (_, address, interface) in enumerate(PLACES):
        assert out.count(f"network: local_addr={address} socket_ifname={interface}\n") == 2, out
        for local_rank in (0, 1):
            rank = 2 * node + local_rank
            assert (f"this node: Slurm task = rank {rank} of 4 (node {node}, local rank {local_rank})"
                    in out), out
    masters = [line.split("master=")[1].split()[0] for line in out.splitlines() if "master=" in line]
    assert len(masters) == 4 and {master.split(":")[0] for master in masters} == {NODES[0]}, out
    assert "127.0." not in out, out


def check_rows(output: str, prefix: str = "") -> list[list[str]]:
    """The rank rows of launcher.check's table (cells split on whitespace)."""
    lines = [line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix)]
    return [line.split() for line in lines if line[:1].isdigit()]


def assert_both_nodes_seen(rows: list[list[str]], report: dict) -> None:
    """One rank per node: rank, node, local rank, host, address, interface of each row, and the
    same in check.json, with a correct sum on both."""
    expected = [[str(node), str(node), "0", *place] for node, place in enumerate(PLACES)]
    assert [row[:6] for row in rows] == expected, rows
    assert report["verdict"] == "OK" and report["nodes"] == 2 and report["world_size"] == 2, report
    seen = [(rank["host"], rank["address"], rank["interface"]) for rank in report["ranks"]]
    assert seen == PLACES and all(rank["sum_ok"] for rank in report["ranks"]), report


def test_check_through_launcher_slurm_names_both_hosts_and_says_ok(netns_slurm):
    """launcher=slurm submits through submitit and, with no sacct on this cluster, follows the job
    through squeue/scontrol; it then prints the table rank 0 wrote."""
    done = netns_slurm.launcher("nodes=2", "gpus=1", "slurm.time=5", share_nodes=False,
                                module="launcher.check")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "verdict: OK", done.stdout
    (report,) = (netns_slurm.workdir / "outputs").rglob("check.json")
    assert_both_nodes_seen(check_rows(done.stdout), json.loads(report.read_text()))


def test_check_under_srun_in_a_batch_job_names_both_hosts_and_says_ok(netns_slurm):
    job = netns_slurm.sbatch("-N", "2", "--ntasks-per-node=1",
                             f"--wrap=srun --kill-on-bad-exit=1 {shlex.join(CHECK)}")
    state = netns_slurm.ended(job)
    out = netns_slurm.output(job)
    assert state == "COMPLETED", f"{state}\n{out[-4000:]}"
    assert f"{ROW_PREFIX}verdict: OK" in out, out
    report = json.loads((netns_slurm.run_dir(job) / "check.json").read_text())
    assert_both_nodes_seen(check_rows(out, ROW_PREFIX), report)
    assert f" NodeList={NODELIST}\n" in netns_slurm.cluster.client("scontrol", "show", "job", job).stdout


def test_check_with_node_1_cut_off_fails_within_init_timeout_naming_it(netns_slurm):
    """Node 1's task starts, its cable is pulled, then its check starts: rank 0 (node 0, which
    holds the store) gives up within init_timeout (plus start-up), and the check names node 1."""
    init_timeout = 5
    ready, go = netns_slurm.workdir / "node1-started", netns_slurm.workdir / "node1-go"
    hold_node_1 = (f'if [ "$SLURM_NODEID" = 1 ]; then touch {shlex.quote(str(ready))}; '
                   f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.1; done; fi; "
                   'exec "$@"')
    step = ["srun", "--kill-on-bad-exit=1", "sh", "-c", hold_node_1, "check",
            *CHECK, f"init_timeout={init_timeout}"]
    job = netns_slurm.sbatch("-N", "2", "--ntasks-per-node=1", f"--wrap={shlex.join(step)}")
    rank_0_failed = netns_slurm.run_dir(job) / "failures" / "rank_0.attempt_0.json"
    net = netns_slurm.cluster.net
    wait_for(ready.exists, 60, "node 1's task to start")
    try:
        net.set_link(1, up=False)
        cut_at = time.monotonic()
        go.touch()
        wait_for(rank_0_failed.exists, init_timeout + START_SLACK_S,
                 f"rank 0 to give up after node 1 was cut off (init_timeout={init_timeout})")
        took = time.monotonic() - cut_at
    finally:
        net.set_link(1, up=True)
    failure = json.loads(rank_0_failed.read_text())
    assert "1/2 clients joined" in failure["error"], failure
    assert netns_slurm.ended(job) == "FAILED"
    out = netns_slurm.output(job)
    verdicts = [line for line in out.splitlines() if "check: FAIL" in line]
    assert any(f"node 1 ({NODES[1]}) did not join within init_timeout={init_timeout}s" in line
               for line in verdicts), f"rank 0 gave up {took:.1f}s after the cut; output:\n{out[-4000:]}"
    assert f"rank 0 on host {NODES[0]} failed: DistStoreError" in out, out[-4000:]
