"""Every key a user can set is checked before anything starts: in-process, one rejection per key.

Each case composes the config as ``python -m launcher`` does (Hydra's compose API, as
``launcher.api`` does) and calls the one entry point of validation, ``launcher.app.load_checked``.
``test_every_key_has_a_rejection_case`` enumerates the leaf keys of every group option in conf/,
so a new key without a check (and a case here) fails it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from launcher import app
from launcher.__main__ import CONFIG_DIR
from launcher.cli import override_key
from launcher.errors import ConfigError, UncheckedConfig
from launcher.hydra_callbacks import ends_the_run_on_error
from launcher.network import free_port
from tests.composing import composed

VISION = ["model=resnet18", "data=cifar10"]  # the MLP takes the synthetic data's feature count
FOLDERS = ["model=resnet18", "data=image_folder", "data.num_classes=37"]

# (overrides, the key the error names, what the message says after "invalid config: ").
# The last override is the key under test: test_every_key_has_a_rejection_case counts it.
REJECTED: list[tuple[list[str], str, str]] = [
    # --- where and how many
    (["nodes=0"], "nodes", "nodes=0"),
    (["gpus=0"], "gpus", "gpus=0"),
    (["gpus=[2,1]"], "gpus", "gpus=[2, 1]: a per-node list needs one entry per node"),
    (["node_rank=-1"], "node_rank", "node_rank=-1"),
    (["nodes=2", "master_port=29500", "node_rank=2"], "node_rank", "node_rank=2"),
    (["nodes=2", "master_port=29500", "node_rank=auto"], "node_rank",
     "node_rank='auto': with nodes=2 outside Slurm each machine needs its own index"),
    (["master_addr=''"], "master_addr", "master_addr='': allowed: auto or a host name or address"),
    (["nodes=2", "master_port=29500", "node_rank=0", "master_addr=10.254.254.254"], "master_addr",
     "master_addr='10.254.254.254': node_rank 0 hosts the rendezvous there"),
    (["master_port=70000"], "master_port", "master_port=70000"),
    (["master_port=0"], "master_port", "master_port=0"),
    (["nodes=2", "node_rank=0", "master_port=auto"], "master_port", "master_port='auto'"),
    (["slurm_task=job"], "slurm_task", "slurm_task='job': allowed: rank, node"),
    (["local_addr=10.254.254.254"], "local_addr", "local_addr='10.254.254.254': is not an address of this machine"),
    (["socket_ifname=nosuch0"], "socket_ifname", "socket_ifname='nosuch0': no interface nosuch0"),
    (["backend=nccl"], "backend", "backend='nccl'"),
    (["backend=mpi"], "backend", "backend='mpi': allowed: auto, nccl, gloo"),
    (["init_timeout=0"], "init_timeout", "init_timeout=0"),
    (["init_timeout=0.5"], "init_timeout", "init_timeout=0.5: allowed: whole seconds, an integer >= 1"),
    (["init_timeout=nan"], "init_timeout", "init_timeout=nan"),
    (["init_timeout=inf"], "init_timeout", "init_timeout=inf"),
    (["collective_timeout=-5"], "collective_timeout", "collective_timeout=-5"),
    (["collective_timeout=0.5"], "collective_timeout", "collective_timeout=0.5: allowed: seconds, a number >= 1"),
    (["collective_timeout=nan"], "collective_timeout", "collective_timeout=nan"),
    (["collective_timeout=inf"], "collective_timeout", "collective_timeout=inf"),
    (["seed=-1"], "seed", "seed=-1"),
    (["deterministic=yes"], "deterministic", "deterministic='yes': allowed: true, false"),
    (["cudnn_benchmark=1"], "cudnn_benchmark", "cudnn_benchmark=1: allowed: true, false"),
    (["deterministic=true", "cudnn_benchmark=true"], "cudnn_benchmark", "cudnn_benchmark=True"),
    (["dry_run=maybe"], "dry_run", "dry_run='maybe'"),
    # --- what runs
    (["script=/no/such/train.py"], "script", "script='/no/such/train.py'"),
    (["script_args=[[a]]"], "script_args", "script_args=[['a']]"),
    (["script_module=yes"], "script_module", "script_module='yes'"),
    (["no_python=1"], "no_python", "no_python=1"),
    (["console_ranks=-1"], "console_ranks", "console_ranks=-1"),
    (["console_local_ranks=[a]"], "console_local_ranks", "console_local_ranks=['a']"),
    (["resume=/no/such/last.pt"], "resume", "resume='/no/such/last.pt'"),
    (["overwrite=maybe"], "overwrite", "overwrite='maybe'"),
    (["checkpoint=/no/such/last.pt"], "checkpoint", "checkpoint='/no/such/last.pt': is read by trainer.mode=eval only"),
    (["hydra.run.dir=''"], "hydra.run.dir", "hydra.run.dir='': must name a directory"),
    # --- launcher=...
    (["launcher.name=nope"], "launcher.name", "launcher.name='nope': allowed: torchrun, mp_spawn, slurm"),
    (["launcher.rdzv=etcd"], "launcher.rdzv", "launcher.rdzv='etcd'"),
    (["launcher=mp_spawn", "+launcher.rdzv=c10d"], "launcher.rdzv", "launcher.rdzv='c10d'"),
    (["launcher.rdzv=c10d", "nodes=2", "gpus=[2,1]"], "gpus", "gpus=[2, 1]"),
    (["launcher.rdzv=c10d", "nodes=2", "launcher.rdzv_endpoint=nohostport"], "launcher.rdzv_endpoint",
     "launcher.rdzv_endpoint='nohostport'"),
    (["launcher.rdzv=c10d", "launcher.rdzv_endpoint=123"], "launcher.rdzv_endpoint",
     "launcher.rdzv_endpoint=123: allowed: null or HOST:PORT"),
    (["launcher.rdzv_id=''"], "launcher.rdzv_id", "launcher.rdzv_id=''"),
    (["launcher.max_restarts=-1"], "launcher.max_restarts", "launcher.max_restarts=-1"),
    (["launcher.monitor_interval_s=0"], "launcher.monitor_interval_s", "launcher.monitor_interval_s=0"),
    (["launcher.start_method=x"], "launcher.start_method", "launcher.start_method='x': allowed: forkserver, spawn"),
    (["launcher.shutdown_grace_s=-1"], "launcher.shutdown_grace_s", "launcher.shutdown_grace_s=-1"),
    (["launcher.shutdown_grace_s=abc"], "launcher.shutdown_grace_s", "launcher.shutdown_grace_s='abc'"),
    (["launcher.local_rank_arg=yes"], "launcher.local_rank_arg", "launcher.local_rank_arg='yes'"),
    (["launcher=mp_spawn", "launcher.start_method=fork"], "launcher.start_method",
     "launcher.start_method='fork'"),
    # --- trainer.*
    (["trainer=3"], "trainer", "trainer=3: allowed: a mapping of trainer's keys"),
    (["trainer.mode=predict"], "trainer.mode", "trainer.mode='predict'"),
    (["trainer.mode=eval"], "checkpoint", "checkpoint=None: trainer.mode=eval needs the path of an existing checkpoint"),
    (["trainer.epochs=0"], "trainer.epochs", "trainer.epochs=0"),
    (["trainer.epochs=${nosuch}"], "trainer.epochs", "trainer.epochs='${nosuch}': cannot be resolved"),
    (["~trainer.epochs"], "trainer.epochs", "trainer.epochs=<missing>"),
    (["trainer.log_every_steps=abc"], "trainer.log_every_steps", "trainer.log_every_steps='abc'"),
    (["trainer.stop_check_steps=0"], "trainer.stop_check_steps", "trainer.stop_check_steps=0"),
    (["trainer.precision=fp16"], "trainer.precision", "trainer.precision='fp16': needs CUDA"),
    (["trainer.precision=16"], "trainer.precision", "trainer.precision=16: allowed: 32, bf16, fp16"),
    (["trainer.matmul_precision=low"], "trainer.matmul_precision", "trainer.matmul_precision='low'"),
    (["trainer.accumulate=0"], "trainer.accumulate", "trainer.accumulate=0"),
    (["trainer.clip_grad_norm=-1"], "trainer.clip_grad_norm", "trainer.clip_grad_norm=-1"),
    (["trainer.channels_last=maybe"], "trainer.channels_last", "trainer.channels_last='maybe'"),
    (["trainer.compile=yes"], "trainer.compile", "trainer.compile='yes'"),
    (["trainer.progress_bar=sometimes"], "trainer.progress_bar", "trainer.progress_bar='sometimes'"),
    (["trainer.progress_bar=1"], "trainer.progress_bar", "trainer.progress_bar=1: allowed: auto, true, false"),
    (["trainer.tensorboard=maybe"], "trainer.tensorboard", "trainer.tensorboard='maybe'"),
    (["trainer.curves=often"], "trainer.curves", "trainer.curves='often'"),
    (["trainer.tensorboard_every_steps=0"], "trainer.tensorboard_every_steps", "trainer.tensorboard_every_steps=0"),
    # --- save.*, slurm.*
    (["save.every_epochs=-1"], "save.every_epochs", "save.every_epochs=-1"),
    (["save.every_steps=-1"], "save.every_steps", "save.every_steps=-1"),
    (["save.keep_last=0"], "save.keep_last", "save.keep_last=0: allowed: an integer >= 1"),
    (["save.best.monitor=acc"], "save.best.monitor", "save.best.monitor='acc': allowed: null or a "
     "validation metric"),
    (["save.best.monitor=val_f1"], "save.best.monitor", "save.best.monitor='val_f1': allowed: null or "
     "one of this run's metrics: val_loss, val_acc"),
    (["save.best.mode=lowest"], "save.best.mode", "save.best.mode='lowest': allowed: auto, min, max"),
    (["trainer.early_stop.monitor=val_acc", "metrics=[]"], "trainer.early_stop.monitor",
     "trainer.early_stop.monitor='val_acc': allowed: null or one of this run's metrics: val_loss"),
    (["trainer.early_stop.monitor=loss"], "trainer.early_stop.monitor", "allowed: null or a validation metric"),
    (["trainer.early_stop.mode=up"], "trainer.early_stop.mode", "trainer.early_stop.mode='up'"),
    (["trainer.early_stop.patience=0"], "trainer.early_stop.patience", "trainer.early_stop.patience=0"),
    (["trainer.early_stop.min_delta=-0.1"], "trainer.early_stop.min_delta", "trainer.early_stop.min_delta=-0.1"),
    (["+model.freeze=conv1"], "model.freeze", "model.freeze='conv1': allowed: a list of submodule names"),
    (["slurm.partition=''"], "slurm.partition", "slurm.partition=''"),
    (["slurm.time=0"], "slurm.time", "slurm.time=0"),
    (["slurm.account=''"], "slurm.account", "slurm.account=''"),
    (["slurm.qos=3"], "slurm.qos", "slurm.qos=3"),
    (["slurm.constraint=''"], "slurm.constraint", "slurm.constraint=''"),
    (["slurm.cpus_per_task=0"], "slurm.cpus_per_task", "slurm.cpus_per_task=0"),
    (["slurm.cpus_per_task=all"], "slurm.cpus_per_task",
     "slurm.cpus_per_task='all': allowed: auto or an integer >= 1"),
    (["slurm.mem_gb=0"], "slurm.mem_gb", "slurm.mem_gb=0"),
    (["slurm.gpus_per_node=-1"], "slurm.gpus_per_node", "slurm.gpus_per_node=-1"),
    (["slurm.job_name=''"], "slurm.job_name", "slurm.job_name=''"),
    (["slurm.signal=TERM"], "slurm.signal", "slurm.signal='TERM'"),
    (["slurm.extra=3"], "slurm.extra", "slurm.extra=3"),
    (["slurm.setup=3"], "slurm.setup", "slurm.setup=3"),
    (["slurm.wait=maybe"], "slurm.wait", "slurm.wait='maybe'"),
    (["slurm.max_requeues=-1"], "slurm.max_requeues", "slurm.max_requeues=-1"),
    (["launcher=slurm", "gpus=1", "data.batch_size=0"], "data.batch_size", "data.batch_size=0"),
    # --- model=...
    (["model._target_=1"], "model._target_", "model._target_=1: allowed: a dotted Python name"),
    (["model._target_=trainer.models.MLPP"], "model._target_",
     "model._target_='trainer.models.MLPP': cannot be imported: trainer.models has no 'MLPP'"),
    (["model=nosuchpkg.Net"], "model._target_",
     "model._target_='nosuchpkg.Net': cannot be imported: no module named 'nosuchpkg'"),
    (["+model.widht=64"], "model.widht", "model.widht=64: trainer.models.MLP takes no argument 'widht' "
     "(it takes: in_features, num_classes, hidden, depth)"),
    (["loss._target_=1"], "loss._target_", "loss._target_=1: allowed: a dotted Python name"),
    (["loss=torch.nn.MSELosss"], "loss._target_", "loss._target_='torch.nn.MSELosss': cannot be "
     "imported: torch.nn has no 'MSELosss'"),
    (["loss=torch.nn.MSELoss", "+loss.reduce_mean=true"], "loss.reduce_mean",
     "loss.reduce_mean=True: torch.nn.MSELoss takes no argument 'reduce_mean'"),
    (["task=step"], "task", "task='step': allowed: null or a module and a name in it"),
    (["task=trainer.tasks.no_such_step"], "task", "task='trainer.tasks.no_such_step': cannot be imported"),
    (["task=trainer.tasks.Step"], "task", "task='trainer.tasks.Step': must take (model, batch)"),
    (["metrics=[precision]"], "metrics", "metrics=['precision']: allowed: auto or a list of metrics"),
    (["metrics=accuracy"], "metrics", "metrics='accuracy': allowed: auto or a list of metrics"),
    (["metrics=[trainer.tasks.no_such_metric]"], "metrics.0", "cannot be imported"),
    (["task=trainer.tasks.model_loss", "metrics=[accuracy]"], "metrics",
     "metrics=['accuracy']: a task (task=trainer.tasks.model_loss) returns its metric sums itself"),
    (["model.in_features=0"], "model.in_features", "model.in_features=0"),
    (["model.num_classes=0"], "model.num_classes", "model.num_classes=0"),
    (["model.hidden=0"], "model.hidden", "model.hidden=0"),
    (["model.depth=-1"], "model.depth", "model.depth=-1"),
    (["model=resnet18", "model.name='res net'"], "model.name", "model.name='res net'"),
    (["model=resnet18", "model.weights=/no/such.pt"], "model.weights", "model.weights='/no/such.pt'"),
    # --- data=...
    (["data.dataset._target_=1"], "data.dataset", "allowed: a mapping with a _target_"),
    (["data.dataset.root=''"], "data.dataset.root", "data.dataset.root=''"),
    (["data.dataset.num_samples=1"], "data.dataset.num_samples", "data.dataset.num_samples=1"),
    (["data.dataset.num_features=0"], "data.dataset.num_features", "data.dataset.num_features=0"),
    (["data.dataset.num_classes=0"], "data.dataset.num_classes", "data.dataset.num_classes=0"),
    (["data.dataset.noise=-1"], "data.dataset.noise", "data.dataset.noise=-1"),
    (["data.dataset.val_fraction=1"], "data.dataset.val_fraction", "data.dataset.val_fraction=1"),
    (["data.dataset.seed=-1"], "data.dataset.seed", "data.dataset.seed=-1"),
    (["data.num_classes=0"], "data.num_classes", "data.num_classes=0"),
    (["data.root=''"], "data.root", "data.root=''"),
    (["data.cache_scope=x"], "data.cache_scope", "data.cache_scope='x': allowed: global, node"),
    (["data.prepare_timeout=0"], "data.prepare_timeout", "data.prepare_timeout=0"),
    (["data.batch_size=0"], "data.batch_size", "data.batch_size=0"),
    (["data.num_workers=-1"], "data.num_workers", "data.num_workers=-1"),
    (["data.worker_start_method=x"], "data.worker_start_method",
     "data.worker_start_method='x': allowed: fork, forkserver, spawn"),
    (["data.shuffle=maybe"], "data.shuffle", "data.shuffle='maybe'"),
    (["data.drop_last=maybe"], "data.drop_last", "data.drop_last='maybe'"),
    ([*VISION, "data.dataset._convert_=x"], "data.dataset._convert_", "data.dataset._convert_='x'"),
    ([*VISION, "data.dataset.download=maybe"], "data.dataset.download", "data.dataset.download='maybe'"),
    ([*VISION, "data.dataset.train_transform._target_=1"], "data.dataset.train_transform",
     "data.dataset.train_transform="),
    ([*VISION, "data.dataset.val_transform._target_=''"], "data.dataset.val_transform",
     "data.dataset.val_transform="),
    ([*VISION, "data.image_size=0"], "data.image_size", "data.image_size=0"),
    ([*VISION, "data.mean=[]"], "data.mean", "data.mean=[]"),
    ([*VISION, "data.std=[0,1,1]"], "data.std", "data.std=[0, 1, 1]"),
    ([*VISION, "data.download=maybe"], "data.download", "data.download='maybe'"),
    ([*FOLDERS, "data.dataset.train_dir=''"], "data.dataset.train_dir", "data.dataset.train_dir=''"),
    ([*FOLDERS, "data.dataset.val_dir=''"], "data.dataset.val_dir", "data.dataset.val_dir=''"),
    ([*FOLDERS, "data.resize_size=0"], "data.resize_size", "data.resize_size=0"),
    (["model=resnet18", "data=image_folder"], "data.dataset.num_classes",
     "data.dataset.num_classes=None: allowed: the number of class folders in train_dir, an integer >= 1 "
     "(it is ${data.num_classes})"),
    # --- optim=..., sched=...
    (["optim._target_=1"], "optim._target_", "optim._target_=1"),
    (["optim.lr=-1"], "optim.lr", "optim.lr=-1: allowed: a number >= 0"),
    (["optim.momentum=-1"], "optim.momentum", "optim.momentum=-1"),
    (["optim.weight_decay=-1"], "optim.weight_decay", "optim.weight_decay=-1"),
    (["optim=adamw", "optim.weight_decay=nan"], "optim.weight_decay", "optim.weight_decay=nan"),
    (["optim.scale_lr=cubic"], "optim.scale_lr", "optim.scale_lr='cubic'"),
    (["sched.interval=batch"], "sched.interval", "sched.interval='batch'"),
    (["sched.scheduler._target_=1"], "sched.scheduler", "allowed: null or a mapping with a _target_"),
    (["sched.scheduler.total=0"], "sched.scheduler.total", "sched.scheduler.total=0"),
    (["sched.scheduler.warmup=-1"], "sched.scheduler.warmup", "sched.scheduler.warmup=-1"),
    # 8192 samples, 20 % held out: 6554 / 2 ranks / 64 per batch = 52 steps per epoch, x 6 epochs.
    (["sched.scheduler.warmup=313"], "sched.scheduler.warmup", "sched.scheduler.warmup=313: allowed: 0-312"),
    (["sched.interval=epoch", "sched.scheduler.warmup=7"], "sched.scheduler.warmup",
     "sched.scheduler.warmup=7: allowed: 0-6, the run's epochs"),
    (["sched.scheduler.total=10", "sched.scheduler.warmup=11"], "sched.scheduler.warmup", "allowed: 0-10"),
    (["sched.scheduler.warmup_start_factor=2"], "sched.scheduler.warmup_start_factor",
     "sched.scheduler.warmup_start_factor=2"),
    (["sched.scheduler.min_lr_ratio=-1"], "sched.scheduler.min_lr_ratio", "sched.scheduler.min_lr_ratio=-1"),
    (["sched=multistep", "sched.scheduler.milestones=[0]"], "sched.scheduler.milestones",
     "sched.scheduler.milestones=[0]"),
    (["sched=multistep", "sched.scheduler.gamma=0"], "sched.scheduler.gamma", "sched.scheduler.gamma=0"),
    (["sched=step", "sched.scheduler.step_size=0"], "sched.scheduler.step_size", "sched.scheduler.step_size=0"),
    (["sched=none", "sched.scheduler=3"], "sched.scheduler", "sched.scheduler=3"),
]

# Keys that take any value: the list of torchvision transforms, each instantiated by Hydra with
# torchvision's own arguments (the transform node itself must name a _target_: checked).
ANY_VALUE = ("data.dataset.train_transform.transforms", "data.dataset.val_transform.transforms")

# Every group option's defaults must pass as they are (with what they need to fit together).
ACCEPTED = [[], ["launcher=mp_spawn"], ["launcher=slurm", "gpus=1"], [*VISION], ["model=resnet18", "data=mnist"],
            [*FOLDERS], ["optim=adamw"], ["sched=multistep"], ["sched=step"], ["sched=none"],
            ["sched.scheduler.warmup=312"],
            ["dry_run=true", "nodes=2", "launcher.rdzv=c10d", "launcher.rdzv_endpoint=127.0.0.1:29400"]]


@pytest.fixture
def checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``checked(*overrides)``: the job ``load_checked`` makes of the composed config, in a fresh
    run directory, on a plain machine; Hydra's global state is left as it was found."""
    for name in [name for name in os.environ if name.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(name)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)

    def check(*overrides: str):
        cfg = composed(f"hydra.run.dir={tmp_path / 'run'}", *overrides)
        HydraConfig.instance().set_config(cfg)  # for ${hydra:...}, as Hydra sets it before callbacks
        return app.load_checked(cfg, tmp_path / "run")

    yield check
    HydraConfig.instance().cfg = None
    assert not GlobalHydra.instance().is_initialized()
    assert not (tmp_path / "run").exists(), "validation created the run directory"


@pytest.mark.parametrize(("overrides", "key", "says"), REJECTED, ids=[" ".join(o) for o, _, _ in REJECTED])
def test_bad_value_is_rejected(checked, overrides, key, says):
    with pytest.raises(ConfigError) as error:
        checked(*overrides)
    assert not isinstance(error.value, UncheckedConfig), error.value
    assert error.value.key == key, str(error.value)
    assert str(error.value).startswith("invalid config: ") and says in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(o) or "defaults" for o in ACCEPTED])
def test_every_group_option_passes_as_configured(checked, overrides):
    checked(*overrides)


def test_two_nodes_need_an_index_and_an_address(checked):
    """auto would make every machine node 0 at 127.0.0.1, each waiting for the others at its own
    address until init_timeout: several nodes outside Slurm give both (loopback when explicit)."""
    port = free_port("127.0.0.1")
    with pytest.raises(ConfigError, match="master_addr"):
        checked("nodes=2", f"master_port={port}", "node_rank=1")
    job = checked("nodes=2", f"master_port={port}", "node_rank=1", "master_addr=127.0.0.1").job
    assert (job.node_rank, job.master_addr) == (1, "127.0.0.1")


def leaf_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Dotted keys of the values (lists and empty mappings are values), without resolving."""
    for name in node:
        child = node._get_node(name)
        key = f"{prefix}{name}"
        if isinstance(child, DictConfig) and not child._is_none() and len(child):
            yield from leaf_keys(child, key + ".")
        else:
            yield key


def group_options() -> list[list[str]]:
    groups = sorted(path for path in CONFIG_DIR.iterdir() if path.is_dir() and path.name != "hydra")
    return [[]] + [[f"{group.name}={option.stem}"] for group in groups for option in sorted(group.glob("*.yaml"))
                   if not option.stem.startswith("_")]  # data/_loader.yaml: the base the others extend


def test_every_key_has_a_rejection_case():
    """Hydra's own node (hydra.*) is Hydra's to check; the run and sweep directories are checked
    where they are used."""
    keys = set()
    for overrides in group_options():
        cfg = composed(*overrides)
        keys.update(key for key in leaf_keys(cfg) if not key.startswith("hydra."))
    covered = {override_key(overrides[-1]) for overrides, _, _ in REJECTED} | set(ANY_VALUE)
    assert sorted(keys - covered) == []


def test_an_unexpected_exception_is_a_config_error_naming_it(checked, monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("'int' object has no attribute 'rpartition'")

    monkeypatch.setattr(app, "load_job_config", broken)
    with pytest.raises(UncheckedConfig) as error:
        checked()
    assert str(error.value) == ("invalid config: could not be checked (AttributeError: 'int' object "
                                "has no attribute 'rpartition')")


def test_a_callback_that_raises_ends_the_run_with_one_line(capsys):
    @ends_the_run_on_error
    def hook() -> None:
        raise TypeError("expected str, got int\nsecond line")

    with pytest.raises(SystemExit) as stop:
        hook()
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: invalid config: could not be checked (TypeError: expected str, got int)\n"


def test_shipped_targets_are_the_ones_in_conf():
    """The targets not imported before start (``launcher.targets.SHIPPED_TARGETS``) are exactly the
    shipped configs' own: a new config file's class is imported and checked until it is listed."""
    import re

    from launcher.targets import SHIPPED_TARGETS

    in_conf = {match for path in CONFIG_DIR.rglob("*.yaml")
               for match in re.findall(r"_target_:\s*([\w.]+)", path.read_text())}
    in_conf -= {name for name in in_conf if name.startswith(("launcher.", "hydra_plugins."))}  # Hydra's callbacks, our plugin
    assert in_conf == set(SHIPPED_TARGETS)


def trainer_keys() -> set[str]:
    """The keys of the blocks the trainer reads as typed objects (``trainer.train.Options``)."""
    from launcher.rules import schema_rules
    from trainer.options import DataLoaderOptions, SaveOptions, TrainerOptions

    return {key for cls, block in ((TrainerOptions, "trainer"), (SaveOptions, "save"), (DataLoaderOptions, "data"))
            for key in schema_rules(cls, f"{block}.")}


# Refusals that need what only the launcher sees: the machine, another key, the value unresolved.
NEEDS_THE_LAUNCHER = ("needs CUDA", "one of this run's metrics", "cannot be resolved", "<missing>",
                      "trainer.mode=eval needs")
BY_HAND = [(overrides, key) for overrides, key, says in REJECTED
           if key in trainer_keys() and override_key(overrides[-1]) == key
           and not any(reason in says for reason in NEEDS_THE_LAUNCHER)]


@pytest.mark.parametrize(("overrides", "key"), BY_HAND, ids=[" ".join(o) for o, _ in BY_HAND])
def test_the_trainer_by_hand_refuses_what_the_launcher_refuses(overrides, key):
    """``python -m trainer RUN_DIR/config.yaml`` on a file nobody checked (edited by hand, or
    written by a user's own tooling): every value of the trainer's own blocks that the launcher
    refuses by type, range or choice, the trainer refuses too, naming the key, before it starts."""
    from omegaconf import OmegaConf

    from trainer.train import InvalidOptions, Options

    cfg = OmegaConf.create(OmegaConf.to_container(composed(*overrides, hydra=False), resolve=True))
    with pytest.raises(InvalidOptions) as refused:
        Options.from_config(cfg)
    assert str(refused.value).startswith(f"{key}="), str(refused.value)


def test_the_trainer_by_hand_covers_every_range_of_its_schema():
    """Each ranged or patterned key of the trainer's blocks has a case in ``BY_HAND``."""
    from dataclasses import fields, is_dataclass

    from trainer.options import Check, DataLoaderOptions, SaveOptions, TrainerOptions

    def checked_keys(cls: type, prefix: str) -> Iterator[str]:
        for item in fields(cls):  # trainer.options has no postponed annotations: item.type is the class
            if is_dataclass(item.type):
                yield from checked_keys(item.type, f"{prefix}{item.name}.")
            elif isinstance(item.metadata.get("check"), Check):
                yield prefix + item.name

    ranged = {key for cls, block in ((TrainerOptions, "trainer"), (SaveOptions, "save"), (DataLoaderOptions, "data"))
              for key in checked_keys(cls, f"{block}.")}
    assert ranged, "no checked keys found"
    assert sorted(ranged - {key for _, key in BY_HAND}) == []
