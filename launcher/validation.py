"""Every key a user can set and what it allows, in one table, checked before anything starts.

``check_config`` resolves the composed config once (an interpolation that cannot be resolved is
named by its key), then holds every value against its ``Rule``: a type, a range or a list of
choices. A bad value is a ``ConfigError`` naming the key, the value and what is allowed; the ranks
never see it. Relations between keys and what this machine decides (a node rank below the node
count, a free port, a CUDA device, an existing file) are checked where the job is built
(``launcher.config``); ``check_schedule`` needs the job's world size from there.

The keys of the built-in classes (model, data set, optimizer, schedule) are checked for the class
that ``_target_`` names: a class of the user's own gets its keys as written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from launcher.config import MODULE_NAME, split_endpoint
from launcher.errors import ConfigError
from launcher.slurm.allocation import SLURM_TASK_ROLES
from launcher.slurm.submit import submission_from_config
from launcher.targets import HYDRA_KEYS, TRAINER_KEYS, check_plugins
from launcher.warm import START_METHODS
from trainer.options import (
    BUILTIN_METRICS,
    CACHE_SCOPES,
    IMPROVEMENT_MODES,
    LR_SCALING_RULES,
    MATMUL_PRECISIONS,
    PRECISIONS,
    PROGRESS_BAR,
    SCHEDULE_INTERVALS,
    WORKER_START_METHODS,
    reported_metrics,
)
from trainer.options import MODES as TRAINER_MODES

MODES = ("torchrun", "mp_spawn", "slurm")  # conf/launcher/*.yaml's name
RENDEZVOUS = ("static", "c10d")
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class Rule:
    """What one key allows: ``accepts`` decides, ``allowed`` says it in the error message."""

    allowed: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: Rule) -> Rule:
        return Rule(f"{self.allowed} or {other.allowed}",
                    lambda value: self.accepts(value) or other.accepts(value))

    def check(self, key: str, value: Any, source: str | None = None) -> None:
        """``source``: the interpolation the value came from, named so the key to change is clear."""
        if not self.accepts(value):
            raise ConfigError(key, value, f"allowed: {self.allowed}" + (f" (it is {source})" if source else ""))


class _Missing:
    """A key the config lacks (deleted with ``~key``): shown as ``key=<missing>``."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """Finite: nan and inf are no count of seconds, no rate and no size."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    """A choice as it is typed on the command line."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return str(value)


def integer(low: int | None = None, high: int | None = None, what: str = "an integer") -> Rule:
    bounds = f" in {low}-{high}" if high is not None else f" >= {low}" if low is not None else ""
    return Rule(what + bounds, lambda value: _is_int(value) and (low is None or value >= low)
                and (high is None or value <= high))


def number(low: float, high: float | None = None, *, exclusive: bool = False,
           what: str = "a number") -> Rule:
    """A finite number from ``low`` (to ``high``), both included unless ``exclusive``."""
    if high is None:
        bounds = f"{'>' if exclusive else '>='} {low:g}"
    else:
        bounds = f"in {'(' if exclusive else '['}{low:g}, {high:g}{')' if exclusive else ']'}"

    def accepts(value: Any) -> bool:
        if not _is_number(value):
            return False
        above = value > low if exclusive else value >= low
        below = high is None or (value < high if exclusive else value <= high)
        return above and below

    return Rule(f"{what} {bounds}", accepts)


def choice(*values: Any, normalise: Callable[[Any], Any] | None = None) -> Rule:
    """One of ``values``, of the same type (``1`` is not ``true``); ``normalise`` maps a value
    first (``trainer.precision``: 32 and "32" are one choice)."""
    def accepts(value: Any) -> bool:
        if normalise is not None:
            return not isinstance(value, bool) and normalise(value) in values
        return any(type(value) is type(allowed) and value == allowed for allowed in values)

    return Rule(", ".join(_shown(value) for value in values), accepts)


def listof(item: Rule, items: str) -> Rule:
    """A non-empty list, every item allowed by ``item`` (``items`` names them in the message)."""
    return Rule(f"a list of {items}", lambda value: isinstance(value, list) and bool(value)
                and all(item.accepts(entry) for entry in value))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


NULL = Rule("null", lambda value: value is None)
FINITE = Rule("a number", _is_number)
AUTO = choice("auto")
BOOLEAN = choice(True, False)
TEXT = Rule("a non-empty string", _text)
HOST = Rule("a host name or address", lambda value: _text(value) and not any(c.isspace() for c in value))
DOTTED_NAME = Rule("a dotted Python name such as mypkg.MyNet",
                   lambda value: isinstance(value, str) and bool(MODULE_NAME.fullmatch(value)))
QUALIFIED_NAME = Rule("a module and a name in it, such as mypkg.step",
                      lambda value: DOTTED_NAME.accepts(value) and "." in value)
INSTANTIABLE = Rule("a mapping with a _target_ (a dotted Python name)",
                    lambda value: isinstance(value, Mapping) and DOTTED_NAME.accepts(value.get("_target_")))
ENDPOINT = Rule("HOST:PORT with a port in 1-65535",
                lambda value: isinstance(value, str) and split_endpoint(value) is not None)
ARGUMENTS = Rule("a list of arguments, or one string split as a shell would",
                 lambda value: isinstance(value, str) or isinstance(value, list)
                 and all(isinstance(arg, (str, int, float, bool)) for arg in value))
EXISTING_FILE = Rule("the path of an existing file",
                     lambda value: _text(value) and Path(value).expanduser().is_file())
RANKS = choice("all") | integer(0, what="a rank") | listof(integer(0), "ranks like [0,3]")
# torchrun's rendezvous and shutdown take whole seconds (it truncates 0.5 to 0: no wait at all).
WHOLE_SECONDS = integer(1, what="whole seconds, an integer")
SECONDS = number(1, what="seconds, a number")
COUNT = integer(1)
HYDRA_CONVERT = choice("none", "partial", "object", "all")  # Hydra's _convert_ of an instantiated node

# Sections: a mapping of their own keys (``trainer=3`` would replace them all).
SECTIONS = ("launcher", "trainer", "save", "slurm", "data", "model", "optim", "sched", "loss")

# Every config has these keys; the trainer or the launcher reads each of them.
KEYS: dict[str, Rule] = {
    "nodes": AUTO | integer(1),
    "gpus": AUTO | integer(1) | listof(integer(1), "per-node counts like [4,2]"),
    "node_rank": AUTO | integer(0),
    "master_addr": AUTO | HOST,
    "master_port": AUTO | integer(1, 65535),
    "slurm_task": choice(*SLURM_TASK_ROLES),
    "local_addr": AUTO | HOST,
    "socket_ifname": AUTO | NULL | Rule("interface names like eth0 or eth0,ib0", _text),
    "backend": choice(*BACKENDS),
    "init_timeout": WHOLE_SECONDS,
    "collective_timeout": SECONDS,
    "seed": integer(0),
    "deterministic": BOOLEAN,
    "cudnn_benchmark": BOOLEAN,
    "dry_run": BOOLEAN,
    "script": NULL | TEXT,
    "script_args": ARGUMENTS,
    "script_module": BOOLEAN,
    "no_python": BOOLEAN,
    "console_ranks": RANKS,
    "console_local_ranks": RANKS,
    "resume": NULL | AUTO | Rule("the path of a checkpoint", _text),
    "overwrite": BOOLEAN,
    "checkpoint": NULL | Rule("the path of a checkpoint", _text),
    "task": NULL | QUALIFIED_NAME,
    "metrics": AUTO | Rule(
        f"a list of metrics ({', '.join(BUILTIN_METRICS)} or dotted names of functions), [] for none",
        lambda value: isinstance(value, list) and all(
            item in BUILTIN_METRICS or QUALIFIED_NAME.accepts(item) for item in value)),
    "launcher.name": choice(*MODES),
    "trainer.mode": choice(*TRAINER_MODES),
    "trainer.epochs": COUNT,
    "trainer.log_every_steps": integer(0),
    "trainer.stop_check_steps": COUNT,
    "trainer.precision": choice(*PRECISIONS, normalise=str),
    "trainer.matmul_precision": choice(*MATMUL_PRECISIONS),
    "trainer.accumulate": COUNT,
    "trainer.clip_grad_norm": NULL | number(0, exclusive=True),
    "trainer.channels_last": BOOLEAN,
    "trainer.compile": BOOLEAN,
    "trainer.progress_bar": choice(*PROGRESS_BAR),
    "trainer.tensorboard": BOOLEAN,
    "trainer.tensorboard_every_steps": COUNT,
    "save.every_epochs": integer(0),
    "save.every_steps": integer(0),
    "save.keep_last": COUNT,
    "save.best.monitor": NULL | Rule("a validation metric such as val_loss or val_acc",
                                     lambda value: isinstance(value, str) and value.startswith("val_")),
    "save.best.mode": choice(*IMPROVEMENT_MODES),
    "trainer.early_stop.monitor": NULL | Rule("a validation metric such as val_loss or val_acc",
                                              lambda value: isinstance(value, str) and value.startswith("val_")),
    "trainer.early_stop.mode": choice(*IMPROVEMENT_MODES),
    "trainer.early_stop.patience": COUNT,
    "trainer.early_stop.min_delta": number(0),
    "slurm.gpus_per_node": AUTO | integer(0),
    "slurm.max_requeues": integer(0),
    "data.dataset": INSTANTIABLE,
    "data.root": TEXT,
    "data.cache_scope": choice(*CACHE_SCOPES),
    "data.prepare_timeout": SECONDS,
    "data.batch_size": COUNT,
    "data.num_workers": integer(0),
    "data.worker_start_method": choice(*WORKER_START_METHODS),
    "data.shuffle": BOOLEAN,
    "data.drop_last": BOOLEAN,
    "data.num_classes": NULL | COUNT,
    "model._target_": DOTTED_NAME,
    "loss._target_": DOTTED_NAME,
    "optim._target_": DOTTED_NAME,
    "optim.lr": number(0),
    "optim.scale_lr": choice(*LR_SCALING_RULES),
    "sched.interval": choice(*SCHEDULE_INTERVALS),
    "sched.scheduler": NULL | INSTANTIABLE,
}

# Keys of some group options only (a launcher mode's, the image data sets'): checked where set.
IF_SET: dict[str, Rule] = {
    "model.freeze": Rule("a list of submodule names like [conv1,layer1]",
                         lambda value: isinstance(value, list) and all(
                             _text(item) or _is_int(item) for item in value)),
    "launcher.rdzv": choice(*RENDEZVOUS),
    "launcher.rdzv_endpoint": NULL | ENDPOINT,
    "launcher.rdzv_id": NULL | TEXT,
    "launcher.max_restarts": integer(0),
    "launcher.monitor_interval_s": number(0, exclusive=True, what="seconds, a number"),
    "launcher.start_method": choice(*START_METHODS),
    "launcher.shutdown_grace_s": integer(0, what="whole seconds, an integer"),
    "launcher.local_rank_arg": BOOLEAN,
    "data.image_size": COUNT,
    "data.resize_size": COUNT,
    "data.mean": listof(FINITE, "numbers, one per channel"),
    "data.std": listof(number(0, exclusive=True), "numbers > 0, one per channel"),
    "data.download": BOOLEAN,
    "data.dataset._convert_": HYDRA_CONVERT,
}

_IMAGE_DATA = {"root": TEXT, "num_classes": COUNT, "download": BOOLEAN,
               "train_transform": INSTANTIABLE, "val_transform": INSTANTIABLE}
WARMUP_COSINE = "trainer.schedules.WarmupCosineLR"
# The built-in classes' own arguments, by the node that holds them and the class it names (the
# data set first: the model's sizes are interpolated from it).
TARGETS: dict[str, dict[str, dict[str, Rule]]] = {
    "data.dataset": {
        "trainer.data.SyntheticClassification": {
            "root": TEXT, "num_samples": integer(2), "num_features": COUNT, "num_classes": COUNT,
            "noise": number(0), "val_fraction": number(0, 1, exclusive=True), "seed": integer(0)},
        "trainer.vision.CIFAR10Data": _IMAGE_DATA,
        "trainer.vision.MNISTData": _IMAGE_DATA,
        "trainer.vision.ImageFolderData": {
            **_IMAGE_DATA, "train_dir": TEXT, "val_dir": TEXT,
            "num_classes": integer(1, what="the number of class folders in train_dir, an integer")},
    },
    "model": {
        "trainer.models.MLP": {"in_features": AUTO | COUNT, "num_classes": AUTO | COUNT, "hidden": COUNT,
                               "depth": integer(0)},
        "trainer.vision.torchvision_model": {
            "name": Rule("a torchvision model name such as resnet18",
                         lambda value: isinstance(value, str) and value.isidentifier()),
            "num_classes": COUNT, "weights": NULL | EXISTING_FILE},
    },
    "optim": {
        "torch.optim.SGD": {"momentum": number(0), "weight_decay": number(0)},
        "torch.optim.AdamW": {"weight_decay": number(0)},
    },
    "sched.scheduler": {
        WARMUP_COSINE: {"total": AUTO | COUNT, "warmup": integer(0),
                        "warmup_start_factor": number(0, 1), "min_lr_ratio": number(0, 1)},
        "torch.optim.lr_scheduler.MultiStepLR": {"milestones": listof(COUNT, "integers >= 1"),
                                                 "gamma": number(0, exclusive=True)},
        "torch.optim.lr_scheduler.StepLR": {"step_size": COUNT, "gamma": number(0, exclusive=True)},
    },
}
# The built-in classes whose every argument the table above names: another key is a typo.
CLOSED_TARGETS = ("trainer.models.MLP", "trainer.data.SyntheticClassification", WARMUP_COSINE)
# Training samples of the built-in data sets of fixed size (for a schedule's ``total: auto``).
FIXED_TRAIN_SIZES = {"trainer.vision.CIFAR10Data": 50000, "trainer.vision.MNISTData": 60000}


def lookup(values: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key``, or ``MISSING``."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, every interpolation resolved once, here: a value that cannot
    be resolved would otherwise fail while the run directory is written, or in every rank.
    Hydra's own node is Hydra's to resolve."""
    values: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            node = cfg[key]
            values[str(key)] = (OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
                                if OmegaConf.is_config(node) else node)
        except OmegaConfBaseException as error:
            name = str(error.full_key or key)
            raw = lookup(cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=False)), name)
            if isinstance(error, MissingMandatoryValue):
                raise ConfigError(name, raw, "is required (??? in the config): give it a value") from None
            raise ConfigError(name, raw, f"cannot be resolved ({str(error.msg).splitlines()[0]})") from None
    return values


def _checks(values: Mapping[str, Any]) -> Iterator[tuple[str, Rule, Any]]:
    """(key, rule, value) for every key the tables name, in their order."""
    for key, rule in KEYS.items():
        yield key, rule, lookup(values, key)
    for key, rule in IF_SET.items():
        if (value := lookup(values, key)) is not MISSING:
            yield key, rule, value
    for node_key, classes in TARGETS.items():
        node = lookup(values, node_key)
        if isinstance(node, Mapping):  # not a null scheduler
            for name, rule in classes.get(str(node.get("_target_")), {}).items():
                if name in node:
                    yield f"{node_key}.{name}", rule, node[name]


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """Every key's type, range or choice; returns the resolved values.

    Keys whose value is written out are checked before the keys that copy it by interpolation
    (``model.num_classes: ${data.num_classes}``), so a bad value is named where it was set."""
    values = resolved(cfg)
    for section in SECTIONS:
        section_value = lookup(values, section)
        if not isinstance(section_value, Mapping):
            raise ConfigError(section, section_value, f"allowed: a mapping of {section}'s keys "
                              f"({section}.KEY=value sets one)")
    written = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=False))

    def interpolation(key: str) -> str | None:
        raw = lookup(written, key)
        return raw if isinstance(raw, str) and "${" in raw else None

    for key, rule, value in sorted(_checks(values), key=lambda check: interpolation(check[0]) is not None):
        rule.check(key, value, interpolation(key))
    _check_closed_targets(values)
    if values["task"] is not None and values["metrics"] not in ("auto", []):
        raise ConfigError("metrics", values["metrics"], f"a task (task={values['task']}) returns its "
                          "metric sums itself: allowed with a task: auto or []")
    reported = reported_metrics(values["metrics"], values["task"], values["loss"]["_target_"])
    for key in ("save.best.monitor", "trainer.early_stop.monitor"):
        monitor = lookup(values, key)
        if reported is not None and monitor is not None and monitor not in reported:
            raise ConfigError(key, monitor, f"allowed: null or one of this run's metrics: {', '.join(reported)}")
    submission_from_config(cfg)  # the slurm block: every sbatch option it would submit
    check_plugins(values)  # last: it may import the user's modules
    return values


def _check_closed_targets(values: Mapping[str, Any]) -> None:
    """A key the built-in class does not take (``+model.widht=64``) is named, not passed on."""
    for node_key, classes in TARGETS.items():
        node = lookup(values, node_key)
        target = node.get("_target_") if isinstance(node, Mapping) else None
        if target not in CLOSED_TARGETS:
            continue
        takes = classes[target]
        for name in node:
            if name not in takes and name not in HYDRA_KEYS and name not in TRAINER_KEYS.get(node_key, ()):
                raise ConfigError(f"{node_key}.{name}", node[name], f"{target} takes no argument "
                                  f"{name!r} (it takes: {', '.join(takes)})")


def train_set_size(dataset: Mapping[str, Any]) -> int | None:
    """Training samples of a built-in data set (as ``SyntheticClassification`` splits them);
    None where only the data set itself knows."""
    target = dataset.get("_target_")
    if target == "trainer.data.SyntheticClassification":
        samples = dataset["num_samples"]
        return samples - int(round(samples * dataset["val_fraction"]))
    return FIXED_TRAIN_SIZES.get(str(target))


def optimizer_steps_per_epoch(values: Mapping[str, Any], world_size: int) -> int | None:
    """As the trainer counts them: ``DistributedSampler``'s share per rank, in batches, in groups
    of ``trainer.accumulate``."""
    samples = train_set_size(values["data"]["dataset"])
    if samples is None:
        return None
    if values["data"]["drop_last"] and samples % world_size:
        per_rank = math.ceil((samples - world_size) / world_size)
    else:
        per_rank = math.ceil(samples / world_size)
    micro_batches = math.ceil(per_rank / values["data"]["batch_size"])
    return math.ceil(micro_batches / values["trainer"]["accumulate"])


def check_schedule(values: Mapping[str, Any], world_size: int) -> None:
    """A warm-up no longer than the schedule: with ``total: auto`` the run's own intervals, known
    here when the data set's size is (a built-in data set); else the trainer refuses it itself."""
    scheduler = lookup(values, "sched.scheduler")
    if (lookup(values, "trainer.mode") != "train" or not isinstance(scheduler, Mapping)
            or scheduler.get("_target_") != WARMUP_COSINE):
        return
    warmup, total = scheduler.get("warmup", 0), scheduler.get("total")
    how = "sched.scheduler.total"
    if total == "auto":
        epochs = values["trainer"]["epochs"]
        if values["sched"]["interval"] == "epoch":
            total, how = epochs, f"the run's epochs (trainer.epochs={epochs})"
        else:
            steps = optimizer_steps_per_epoch(values, world_size)
            if steps is None:
                return
            total = epochs * steps
            how = (f"the run's optimizer steps: {epochs} epochs x {steps} (data.batch_size="
                   f"{values['data']['batch_size']}, trainer.accumulate={values['trainer']['accumulate']}, "
                   f"world size {world_size})")
    if warmup > total:
        raise ConfigError("sched.scheduler.warmup", warmup, f"allowed: 0-{total}, {how}")
