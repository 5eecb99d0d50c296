"""dry_run=true: each rank's place and the exact command, and nothing started or written."""

import re

from tests.conftest import wait_for_no_leftovers


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


def test_dry_run_mp_spawn_second_node_of_heterogeneous_job(launcher):
    launch = launcher.run("dry_run=true", "launcher=mp_spawn", "nodes=2", "gpus=[2,1]",
                          "node_rank=1", "master_port=29555", "master_addr=10.0.0.1")
    assert launch.returncode == 0, launch.stderr
    lines = rank_lines(launch.stdout)
    assert len(lines) == 1
    assert "node_rank=1 local_rank=0 rank=2 world_size=3 master=10.0.0.1:29555" in lines[0]
    assert "start_processes" in launch.stdout and "nprocs=1" in launch.stdout
    assert not launch.run_dir.exists()
