"""Cluster environments: detection order, Slurm parsing, and the cross-check between launchers."""

import pytest

from launcher.environments import (
    EnvironmentMismatch,
    LocalEnvironment,
    SlurmEnvironment,
    TorchElasticEnvironment,
    detect,
)
from launcher.slurm.hostlist import expand_hostlist, expand_tasks_per_node, port_from_job_id

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"}
SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
              "SLURM_NTASKS": "4", "SLURM_NODEID": "1", "SLURM_TASKS_PER_NODE": "2(x2)",
              "SLURM_JOB_NODELIST": "n[1-2]"}


def answers(env):
    return (env.world_size(), env.global_rank(), env.local_rank(), env.local_world_size(),
            env.node_rank(), env.main_address(), env.main_port())


def test_plain_shell_is_local():
    assert isinstance(detect({"HOME": "/root"}), LocalEnvironment)


def test_torchrun_variables():
    env = detect(TORCHRUN)
    assert isinstance(env, TorchElasticEnvironment)
    assert answers(env) == (4, 3, 1, 2, 1, "n1", 29500)


def test_slurm_step():
    env = detect(SLURM_STEP)
    assert isinstance(env, SlurmEnvironment)
    assert answers(env) == (4, 3, 1, 2, 1, "n1", port_from_job_id(4242))


def test_slurm_uneven_tasks_per_node():
    env = detect({**SLURM_STEP, "SLURM_TASKS_PER_NODE": "3,1", "SLURM_PROCID": "3",
                  "SLURM_LOCALID": "0", "SLURM_NODEID": "1"})
    assert (env.local_world_size(), env.node_rank(), env.global_rank()) == (1, 1, 3)


def test_slurm_batch_shell_without_step_is_not_a_rank():
    batch_shell = {key: value for key, value in SLURM_STEP.items() if key != "SLURM_STEP_ID"}
    assert isinstance(detect(batch_shell), LocalEnvironment)


def test_explicit_master_variables_win_over_slurm_derivation():
    env = SlurmEnvironment({**SLURM_STEP, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})
    assert (env.main_address(), env.main_port()) == ("head", 1234)


def test_torchrun_and_slurm_agreeing_prefers_torchrun():
    assert isinstance(detect({**SLURM_STEP, **TORCHRUN}), TorchElasticEnvironment)


def test_torchrun_and_slurm_disagreeing_names_both_variables():
    with pytest.raises(EnvironmentMismatch) as error:
        detect({**SLURM_STEP, **TORCHRUN, "RANK": "2"})
    assert "RANK=2" in str(error.value) and "SLURM_PROCID=3" in str(error.value)


def test_torchrun_per_node_inside_slurm_is_not_compared_rank_by_rank():
    # One Slurm task per node (2 tasks) running torchrun with 2 workers each: different layers.
    one_task_per_node = {**SLURM_STEP, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
                         "SLURM_TASKS_PER_NODE": "1(x2)"}
    assert isinstance(detect({**one_task_per_node, **TORCHRUN}), TorchElasticEnvironment)


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("n1", ["n1"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("gpu[01-02,05]", ["gpu01", "gpu02", "gpu05"]),
        ("a[1-2],b3", ["a1", "a2", "b3"]),
        ("node-[8-9]-ib", ["node-8-ib", "node-9-ib"]),
        ("x,y", ["x", "y"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize(
    ("spec", "counts"),
    [("4", [4]), ("2(x2)", [2, 2]), ("3,1", [3, 1]), ("2(x3),1", [2, 2, 2, 1])],
)
def test_expand_tasks_per_node(spec, counts):
    assert expand_tasks_per_node(spec) == counts


def test_port_from_job_id_is_a_valid_unprivileged_port():
    ports = {port_from_job_id(job) for job in (0, 1, 19999, 20000, 10**9)}
    assert all(1024 < port < 65536 for port in ports)
    assert port_from_job_id(7) == port_from_job_id(7)
