"""Bad configuration: one line naming the key, exit code 2, nothing started, nothing written."""

import socket

import pytest

from launcher.config import _backend
from launcher.errors import ConfigError
from tests.conftest import assert_ok

BAD = [
    (["nodes=0"], "nodes=0"),
    (["gpus=0"], "gpus=0"),
    (["gpus=[2,1]"], "gpus=[2, 1]"),
    (["nodes=2", "node_rank=2", "master_port=29500"], "node_rank=2"),
    (["node_rank=-1"], "node_rank=-1"),
    (["backend=nccl"], "backend='nccl'"),
    (["backend=mpi"], "backend='mpi'"),
    (["master_port=70000"], "master_port=70000"),
    (["master_port=0"], "master_port=0"),
    (["nodes=2", "master_port=auto"], "master_port='auto'"),
    (["init_timeout=0"], "init_timeout=0"),
    (["collective_timeout=-5"], "collective_timeout=-5"),
    (["script=/no/such/train.py"], "script='/no/such/train.py'"),
    (["resume=/no/such/last.pt"], "resume='/no/such/last.pt'"),
    (["launcher.max_restarts=-1"], "launcher.max_restarts=-1"),
    (["trainer.precision=fp16"], "trainer.precision='fp16': needs CUDA"),
    (["trainer.precision=16"], "trainer.precision=16"),
    (["trainer.accumulate=0"], "trainer.accumulate=0"),
    (["trainer.clip_grad_norm=-1"], "trainer.clip_grad_norm=-1"),
    (["trainer.mode=eval"], "checkpoint=None: trainer.mode=eval needs the path of an existing checkpoint"),
    (["trainer.mode=predict"], "trainer.mode='predict'"),
    (["checkpoint=/no/such/last.pt"], "checkpoint='/no/such/last.pt': is read by trainer.mode=eval only"),
    (["deterministic=true", "cudnn_benchmark=true"], "cudnn_benchmark=True"),
    (["optim.scale_lr=cubic"], "optim.scale_lr='cubic'"),
    (["sched.interval=batch"], "sched.interval='batch'"),
    (["trainer.progress_bar=sometimes"], "trainer.progress_bar='sometimes'"),
    (["trainer.compile=yes"], "trainer.compile='yes'"),
    (["trainer.tensorboard_every_steps=0"], "trainer.tensorboard_every_steps=0"),
    (["local_addr=10.254.254.254"], "local_addr='10.254.254.254': is not an address of this machine"),
    (["socket_ifname=nosuch0"], "socket_ifname='nosuch0': no interface nosuch0"),
    (["launcher.rdzv=etcd"], "launcher.rdzv='etcd'"),
    (["launcher=mp_spawn", "+launcher.rdzv=c10d"], "launcher.rdzv='c10d'"),
    (["launcher.rdzv=c10d", "nodes=2", "gpus=[2,1]", "master_port=29500"], "gpus=[2, 1]"),
    (["launcher.rdzv=c10d", "nodes=2", "launcher.rdzv_endpoint=nohostport"], "launcher.rdzv_endpoint="),
    (["nodes=2", "master_port=29500", "master_addr=10.254.254.254"],
     "master_addr='10.254.254.254': node_rank 0 hosts the rendezvous there"),
]


def assert_rejected(launch, key_text):
    assert launch.returncode == 2, launch.stderr
    lines = launch.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{launch.stderr}"
    assert lines[0].startswith("error: invalid config: ") and key_text in lines[0], lines[0]
    assert "Traceback" not in launch.stderr


@pytest.mark.parametrize(("overrides", "key_text"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_rejected_before_anything_starts(launcher, overrides, key_text):
    launch = launcher.run(*overrides)
    assert_rejected(launch, key_text)
    assert not launch.run_dir.exists(), "a rejected run created its run directory"


def test_port_in_use_is_named(launcher):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        launch = launcher.run(f"master_port={port}")
    assert_rejected(launch, f"port {port} is already in use on 127.0.0.1")


def test_unwritable_run_dir(launcher, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    launch = launcher.run(run_dir=blocker / "run")
    assert_rejected(launch, "hydra.run.dir=")
    assert "is not a directory" in launch.stderr


def test_rejected_run_leaves_existing_run_dir_untouched(launcher, tmp_path):
    run_dir = tmp_path / "existing"
    assert_ok(launcher.run("trainer.epochs=1", "data.dataset.num_samples=256", run_dir=run_dir))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes())
              for path in run_dir.rglob("*") if path.is_file()}
    assert (run_dir / "checkpoints" / "last.pt") in before
    launch = launcher.run("nodes=0", run_dir=run_dir)
    assert launch.returncode == 2
    after = {path: (path.stat().st_mtime_ns, path.read_bytes())
             for path in run_dir.rglob("*") if path.is_file()}
    assert after == before


def test_nccl_with_fewer_devices_than_processes_names_both_counts():
    # The GPU count cannot be changed on this machine: the pure check gets it as an argument.
    with pytest.raises(ConfigError) as error:
        _backend("nccl", local_procs=4, cuda_devices=2)
    assert "4 processes" in str(error.value) and "2 visible devices" in str(error.value)
