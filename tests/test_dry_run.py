"""dry_run=true: each rank's place and the exact command, and nothing started or written."""

import re
import sys

import pytest

from tests.conftest import wait_for_no_leftovers

# A launcher process each (about 1-6 s); tests/test_golden.py checks the same texts in-process.
pytestmark = pytest.mark.slow


def rank_lines(stdout):
    return [line for line in stdout.splitlines() if line.strip().startswith("node_rank=")]


def test_dry_run_torchrun_prints_each_rank_and_the_command(launcher):
    launch = launcher.run("dry_run=true", "gpus=3")
    assert launch.returncode == 0, launch.stderr
    lines = rank_lines(launch.stdout)
    assert len(lines) == 3
    for local, line in enumerate(lines):
        assert f"local_rank={local} rank={local} world_size=3" in line
        assert "device=cpu" in line and re.search(r"master=127\.0\.0\.1:\d+", line)
    assert "torch.distributed.run" in launch.stdout and "--nproc-per-node=3" in launch.stdout
    assert not launch.run_dir.exists()
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=1)


@pytest.mark.parametrize("mode", ["torchrun", "mp_spawn"])
def test_a_dry_run_does_not_import_torch(launcher, mode):
    """Shown, not started: the torchrun line is built from plain values, not torch's LaunchConfig
    (whose import took a dry run from 0.7 s to 2.7 s here)."""
    launch = launcher.run("dry_run=true", f"launcher={mode}",
                          entry=(sys.executable, "-X", "importtime", "-m", "launcher"))
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "node_rank=0" in launch.stdout
    imported = re.findall(r"^import time:.*\|\s*(\S+)$", launch.stderr, re.MULTILINE)
    assert "hydra" in imported, "-X importtime listed the imports"
    assert not [name for name in imported if name == "torch" or name.startswith("torch.")], "a dry run imported torch"


def test_dry_run_mp_spawn_second_node_of_heterogeneous_job(launcher):
    launch = launcher.run("dry_run=true", "launcher=mp_spawn", "nodes=2", "gpus=[2,1]",
                          "node_rank=1", "master_port=29555", "master_addr=10.0.0.1")
    assert launch.returncode == 0, launch.stderr
    lines = rank_lines(launch.stdout)
    assert len(lines) == 1
    assert "node_rank=1 local_rank=0 rank=2 world_size=3 master=10.0.0.1:29555" in lines[0]
    assert "start_processes" in launch.stdout and "nprocs=1" in launch.stdout
    assert not launch.run_dir.exists()


def test_dry_run_on_each_node_prints_that_nodes_part(launcher):
    common = ["dry_run=true", "nodes=2", "gpus=2", "master_addr=127.0.0.1", "master_port=29555"]
    plans = {node: launcher.run(*common, f"node_rank={node}") for node in (0, 1)}
    for node, launch in plans.items():
        assert launch.returncode == 0, launch.stderr
        ranks = [int(re.search(r" rank=(\d+)", line).group(1)) for line in rank_lines(launch.stdout)]
        assert ranks == [2 * node, 2 * node + 1]
        assert f"--node-rank={node}" in launch.stdout
        assert "network: local_addr=127.0.0.1 socket_ifname=lo" in launch.stdout


def test_dry_run_c10d_leaves_node_and_global_ranks_to_the_rendezvous(launcher):
    launch = launcher.run("dry_run=true", "nodes=2", "gpus=2", "launcher.rdzv=c10d",
                          "launcher.rdzv_endpoint=127.0.0.1:29400", "launcher.rdzv_id=job7")
    assert launch.returncode == 0, launch.stderr
    assert "assigned by the c10d rendezvous at 127.0.0.1:29400, job id job7" in launch.stdout
    assert not rank_lines(launch.stdout), "global ranks are not known before the rendezvous"
    assert "--rdzv-backend=c10d" in launch.stdout and "--node-rank" not in launch.stdout
    assert "join_timeout=120" in launch.stdout
