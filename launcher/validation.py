"""Every key a user can set and what it allows, in one table, checked before anything starts.

``check_config`` resolves the composed config once (an interpolation that cannot be resolved is
named by its key), then holds every value against its ``Rule``: a type, a range or a list of
choices. A bad value is a ``ConfigError`` naming the key, the value and what is allowed; the ranks
never see it. The rules of the keys the schema types (``launcher.schema``, ``trainer.options``)
are derived from its fields (``launcher.rules.schema_rules``); the plug-in blocks' are written
here. Relations between keys and what this machine decides (a node rank below the node
count, a free port, a CUDA device, an existing file) are checked where the job is built
(``launcher.config``); ``check_schedule`` needs the job's world size from there.

The keys of the built-in classes (model, data set, optimizer, schedule) are checked for the class
that ``_target_`` names: a class of the user's own gets its keys as written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from launcher.errors import ConfigError
from launcher.rules import (
    AUTO,
    BOOLEAN,
    COUNT,
    DOTTED_NAME,
    EXISTING_FILE,
    FINITE,
    HYDRA_CONVERT,
    INSTANTIABLE,
    NULL,
    TEXT,
    Rule,
    choice,
    integer,
    is_int,
    is_text,
    listof,
    number,
    schema_rules,
)
from launcher.schema import LAUNCH_MODES, Config
from launcher.slurm.submit import submission_from_config
from launcher.targets import HYDRA_KEYS, TRAINER_KEYS, check_plugins
from trainer.options import (
    LR_SCALING_RULES,
    SCHEDULE_INTERVALS,
    DataLoaderOptions,
    reported_metrics,
)


class _Missing:
    """A key the config lacks (deleted with ``~key``): shown as ``key=<missing>``."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()

# Sections: a mapping of their own keys (``trainer=3`` would replace them all).
SECTIONS = ("launcher", "trainer", "save", "slurm", "data", "model", "optim", "sched", "loss")


def _launch_mode_rules() -> tuple[dict[str, Rule], dict[str, Rule]]:
    """The launch modes' keys: those every mode has, and those of some modes only (checked where
    set). A key several modes share has one rule (tests/test_schema.py holds them equal)."""
    rules = [schema_rules(mode, "launcher.") for mode in LAUNCH_MODES.values()]
    common = set.intersection(*(set(mode) for mode in rules))
    every = {key: rule for mode in rules for key, rule in mode.items() if key in common}
    some = {key: rule for mode in rules for key, rule in mode.items() if key not in common}
    return every, some


_EVERY_MODE, _SOME_MODES = _launch_mode_rules()

# Every config has these keys; the trainer or the launcher reads each of them. The schema's keys
# (launcher.schema, trainer.options) derive their rules; the plug-in blocks' are written here.
KEYS: dict[str, Rule] = {
    **schema_rules(Config, ""),
    **_EVERY_MODE,
    **schema_rules(DataLoaderOptions, "data."),
    "data.dataset": INSTANTIABLE,
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
    **_SOME_MODES,
    "model.freeze": Rule("a list of submodule names like [conv1,layer1]",
                         lambda value: isinstance(value, list) and all(
                             is_text(item) or is_int(item) for item in value)),
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
