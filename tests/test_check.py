"""``python -m launcher.check``: the pre-flight check, run as a user would, in every way a job runs
(one node in both modes, two loopback nodes, two network namespaces, inside ``srun``, through
``launcher=slurm``), and the ways it must fail: a missing node, a config error, a script given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from launcher.network import free_port
from launcher.probe import RankReport, verdict
from tests.conftest import START_SLACK_S, Launcher, run_nodes, wait_for_no_leftovers
from tests.test_multinode_netns import MASTER, PORT, cluster, in_namespace, netns_permitted  # noqa: F401 (fixtures)
from tests.test_slurm import JOB_TIMEOUT_S, jobs_named, slurm, slurm_cluster  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # real jobs: several processes each

CHECK = (sys.executable, "-m", "launcher.check")
ROW_PREFIX = "[rank 0] "


class Checker(Launcher):
    """conftest's Launcher, running ``python -m launcher.check`` instead of ``python -m launcher``."""

    def command(self, run_dir: Path, overrides: tuple[str, ...], prefix: Sequence[str] = (),
                entry: Sequence[str] = CHECK) -> list[str]:
        return super().command(run_dir, overrides, prefix, CHECK)


@pytest.fixture
def checker(tmp_path: Path) -> Iterator[Checker]:
    runner = Checker(tmp_path)
    yield runner
    runner.kill_leftovers()


def table_rows(output: str) -> list[list[str]]:
    """The rank rows of rank 0's table (cells split on whitespace)."""
    lines = [line.removeprefix(ROW_PREFIX) for line in output.splitlines() if line.startswith(ROW_PREFIX)]
    return [line.split() for line in lines if line[:1].isdigit()]


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "check.json").read_text())


def assert_healthy(report: dict, world_size: int, nodes: int) -> None:
    assert report["verdict"] == "OK", report
    assert report["world_size"] == world_size and report["nodes"] == nodes
    assert [rank["rank"] for rank in report["ranks"]] == list(range(world_size))
    for rank in report["ranks"]:
        assert rank["sum_ok"] and rank["sum_got"] == world_size * (world_size - 1) // 2, rank
        assert rank["busbw_gbs"] > 0 and rank["barrier_ms"] > 0, rank
        assert rank["device"] == "cpu" and rank["cuda"] is None and rank["nccl"] is None, rank


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_one_node_two_ranks(checker, mode):
    run = checker.run(f"launcher={mode}", "gpus=2", timeout_s=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = table_rows(run.stdout)
    assert [row[:3] for row in rows] == [["0", "0", "0"], ["1", "0", "1"]], run.stdout
    assert all(row[10] == "ok" for row in rows), run.stdout  # the sum column
    assert f"{ROW_PREFIX}verdict: OK" in run.stdout
    report = read_report(run.run_dir)
    assert_healthy(report, world_size=2, nodes=1)
    assert {rank["address"] for rank in report["ranks"]} == {"127.0.0.1"}
    wait_for_no_leftovers(checker.job_ids[-1])


def test_two_loopback_nodes(checker, tmp_path):
    port = free_port("127.0.0.1")
    common = ["nodes=2", "gpus=1", "master_addr=127.0.0.1", f"master_port={port}", "init_timeout=60"]
    results = run_nodes(checker, tmp_path, [[*common, f"node_rank={node}"] for node in (0, 1)])
    for node, result in results.items():
        assert result.returncode == 0, f"node {node} failed:\n{result.stderr[-3000:]}"
        wait_for_no_leftovers(result.job_id)
    report = read_report(tmp_path / "node0")
    assert_healthy(report, world_size=2, nodes=2)
    assert [rank["node_rank"] for rank in report["ranks"]] == [0, 1]
    assert not (tmp_path / "node1" / "check.json").exists(), "only rank 0 writes the report"


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_missing_node_is_named_within_init_timeout(checker, mode):
    port = free_port("127.0.0.1")
    run = checker.run(f"launcher={mode}", "nodes=2", "node_rank=0", "master_addr=127.0.0.1", f"master_port={port}",
                      "init_timeout=5", timeout_s=60)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.elapsed_s < 5 + START_SLACK_S, f"took {run.elapsed_s:.0f}s with init_timeout=5"
    assert "check: FAIL: node 1 did not join within init_timeout=5s" in run.stderr, run.stderr[-3000:]
    assert not (run.run_dir / "check.json").exists()
    wait_for_no_leftovers(checker.job_ids[-1])


def test_two_nodes_in_their_own_network_namespaces(checker, tmp_path, cluster):  # noqa: F811
    common = ["nodes=2", "gpus=1", f"master_addr={MASTER}", f"master_port={PORT}", "init_timeout=60"]
    results = run_nodes(checker, tmp_path, [[*common, f"node_rank={node}"] for node in (0, 1)],
                        prefix=in_namespace(cluster))
    for node, result in results.items():
        assert result.returncode == 0, f"node {node} failed:\n{result.stderr[-3000:]}"
        wait_for_no_leftovers(result.job_id)
    report = read_report(tmp_path / "node0")
    assert_healthy(report, world_size=2, nodes=2)
    seen = [(rank["host"], rank["address"], rank["interface"]) for rank in report["ranks"]]
    assert seen == [(cluster.hostname(node), cluster.address(node), "lan0") for node in (0, 1)]


def test_srun_in_a_slurm_allocation(slurm):  # noqa: F811
    name = f"check-{uuid.uuid4().hex[:12]}"
    try:
        done = subprocess.run(["srun", "-N", "2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                               f"--job-name={name}", f"--chdir={slurm.workdir}", *CHECK],
                              cwd=slurm.workdir, env=slurm.env(), capture_output=True, text=True,
                              timeout=JOB_TIMEOUT_S)
    finally:
        slurm.jobs += jobs_named(name)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"{ROW_PREFIX}verdict: OK" in done.stdout and len(table_rows(done.stdout)) == 2, done.stdout
    (run_dir,) = (slurm.workdir / "outputs").glob("slurm-*")
    report = read_report(run_dir)
    assert_healthy(report, world_size=2, nodes=2)
    assert [rank["node_rank"] for rank in report["ranks"]] == [0, 1]


def test_launcher_slurm_submits_waits_and_shows_rank_0s_table(slurm):  # noqa: F811
    done = slurm.launcher("nodes=2", "gpus=1", "slurm.time=5", share_nodes=False, module="launcher.check")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(slurm.jobs) == 1 and slurm.state(slurm.jobs[0]) == "COMPLETED"
    lines = done.stdout.splitlines()
    assert lines[-1] == "verdict: OK", done.stdout
    assert [line.split()[:2] for line in lines[-3:-1]] == [["0", "0"], ["1", "1"]], done.stdout
    (report,) = (slurm.workdir / "outputs").rglob("check.json")
    assert_healthy(read_report(report.parent), world_size=2, nodes=2)


@pytest.mark.parametrize(("args", "expected"), [
    (["gpus=x"], "error: invalid config: gpus='x'"),
    (["train.py"], "error: launcher.check runs launcher.probe on every rank; it takes no script"),
])
def test_config_errors_exit_2_and_start_nothing(checker, args, expected):
    run = checker.run(*args, timeout_s=60)
    assert run.returncode == 2, run.stderr
    assert expected in run.stderr, run.stderr
    assert not run.run_dir.exists()


def _report(rank: int, node: int, busbw: float = 1.0, barrier: float = 0.2, sum_ok: bool = True) -> RankReport:
    return RankReport(rank=rank, node_rank=node, local_rank=0, host=f"host{node}", address="10.0.0.1",
                      interface="eth0", device="cpu", torch="2", cuda=None, nccl=None, sum_ok=sum_ok,
                      sum_got=0, busbw_gbs=busbw, algbw_gbs=busbw, allreduce_ms=1.0, barrier_ms=barrier)


def test_verdict_names_the_failing_or_slow_node():
    healthy = [_report(rank, rank) for rank in range(3)]
    assert verdict(healthy) == "OK"
    assert verdict([_report(0, 0, busbw=9.0), _report(1, 0, busbw=0.1)]) == "OK", "one node has no others"
    wrong = verdict([*healthy[:2], _report(2, 2, sum_ok=False)])
    assert wrong.startswith("FAIL:") and "node 2 (host2)" in wrong and "rank(s) 2" in wrong, wrong
    slow = verdict([*healthy[:2], _report(2, 2, busbw=0.2)])
    assert slow.startswith("SLOW:") and "node 2 (host2) bus bandwidth 0.20 GB/s" in slow, slow
    lagging = verdict([*healthy[:2], _report(2, 2, barrier=5.0)])
    assert lagging.startswith("SLOW:") and "node 2 (host2) barrier 5.00 ms" in lagging, lagging
