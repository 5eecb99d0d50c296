"""The user's own classes and functions as config group options, checked before anything starts.

Imported by ``launcher.__main__`` before the working directory moves to the end of ``sys.path``
(a user's ``trainer/`` there must not replace ours): the trainer's vocabulary is imported inside
the checks, not here.

``model=mypkg.MyNet`` names no file in ``conf/model``: a dotted name in a plug-in group is answered
by ``PluginSource`` (a Hydra config source, so single runs, sweeps, ``launch()`` and Slurm sweeps
all see it) with a config holding nothing but that ``_target_`` and the settings that are the
trainer's, not the constructor's (``data``'s loader keys, ``optim.scale_lr``, ``sched.interval``).
Nothing of another option's file is inherited: ``+model.width=64`` builds ``MyNet(width=64)``.

``check_plugins`` then resolves every ``_target_`` of the composed config (and ``task``, the
``metrics``) before any rank starts: a name that cannot be imported, or constructor arguments the
signature refuses, is a ``ConfigError`` naming the key. The shipped configs' own targets are known
to exist and are not imported here (that would put torch's import on every launch).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from launcher.config import MODULE_NAME
from launcher.errors import ConfigError

# What a dotted name in each group stands for: the config the group's key gets.
PLUGIN_GROUPS: dict[str, Callable[[str], dict[str, Any]]] = {
    "model": lambda target: {"_target_": target},
    # The loader and cache settings (conf/data/_loader.yaml) are the trainer's: they stay settable.
    "data": lambda target: {"defaults": ["_loader", "_self_"], "dataset": {"_target_": target},
                            "num_classes": None},
    # No optimizer has a learning rate every other one would share: it is asked for.
    "optim": lambda target: {"_target_": target, "lr": "???", "scale_lr": "none"},
    # torch's schedulers count epochs in their arguments (StepLR's step_size, MultiStepLR's milestones).
    "sched": lambda target: {"interval": "epoch", "scheduler": {"_target_": target}},
    "loss": lambda target: {"_target_": target},
}

# Arguments the trainer passes in front of the configured ones, by the node that is built.
PASSED_BY_TRAINER: dict[str, tuple[str, ...]] = {
    "optim": ("params",),
    "sched.scheduler": ("optimizer",),
}
# Keys beside a _target_ that the trainer reads itself (optim.scale_lr), not the constructor.
TRAINER_KEYS: dict[str, tuple[str, ...]] = {"optim": ("scale_lr",), "model": ("freeze",)}
HYDRA_KEYS = ("_target_", "_convert_", "_recursive_", "_partial_", "_args_")

# Every _target_ of the shipped configs (tests/test_validation.py holds this to conf/): known
# to import, so they are not imported before the start. Their keys are the rule tables'.
SHIPPED_TARGETS = frozenset({
    "trainer.models.MLP",
    "trainer.data.SyntheticClassification",
    "trainer.vision.torchvision_model",
    "trainer.vision.CIFAR10Data",
    "trainer.vision.MNISTData",
    "trainer.vision.ImageFolderData",
    "trainer.schedules.WarmupCosineLR",
    "torch.optim.SGD",
    "torch.optim.AdamW",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.MultiStepLR",
    "torch.nn.CrossEntropyLoss",
    "torchvision.transforms.Compose",
    "torchvision.transforms.RandomResizedCrop",
    "torchvision.transforms.RandomCrop",
    "torchvision.transforms.RandomHorizontalFlip",
    "torchvision.transforms.Resize",
    "torchvision.transforms.CenterCrop",
    "torchvision.transforms.ToTensor",
    "torchvision.transforms.Normalize",
    "torchvision.transforms.Grayscale",
})


def _option(config_path: str) -> tuple[str, str] | None:
    """(group, dotted name) when ``config_path`` is a dotted name in a plug-in group."""
    group, _, name = config_path.rpartition("/")
    name = name.removesuffix(".yaml")
    if group in PLUGIN_GROUPS and "." in name and MODULE_NAME.fullmatch(name):
        return group, name
    return None


class PluginSource(ConfigSource):
    """Answers ``GROUP/pkg.Name`` for the plug-in groups; every other path is the files'."""

    @staticmethod
    def scheme() -> str:
        return "plugin"

    def load_config(self, config_path: str) -> ConfigResult:
        option = _option(config_path)
        if option is None:
            raise ConfigLoadError(f"not a plug-in option: {config_path}")
        group, target = option
        return ConfigResult(provider=self.provider, path=f"{self.scheme()}://{self.path}",
                            config=OmegaConf.create(PLUGIN_GROUPS[group](target)),
                            header={"package": None})

    def is_config(self, config_path: str) -> bool:
        return _option(config_path) is not None

    def is_group(self, config_path: str) -> bool:
        return False

    def available(self) -> bool:
        return True

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []  # any dotted name: nothing to list (the groups' files list their options)


class PluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="launcher", path=f"{PluginSource.scheme()}://")


def register() -> None:
    """Before Hydra composes (``python -m launcher``, ``launch()``, a Slurm sweep's task)."""
    Plugins.instance().register(PluginSource)
    Plugins.instance().register(PluginSearchPath)


register()


def _import(key: str, name: str, module_name: str) -> Any:
    """The module, None where it does not exist; its own import failing is the user's error."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            return None  # the module itself (or its package) is not there: maybe an attribute
        failure: Exception = error
    except Exception as error:  # the user's module raised while it was imported
        failure = error
    reason = str(failure).strip().splitlines()
    raise ConfigError(key, name, f"cannot be imported: importing {module_name} raised "
                      f"{type(failure).__name__}: {reason[0] if reason else ''}")


def resolve(key: str, name: Any) -> Any:
    """The object a dotted ``name`` imports to (``pkg.module.Class``, also ``pkg.Class.method``),
    or a ``ConfigError`` naming ``key`` and the part that could not be found."""
    if not isinstance(name, str) or "." not in name or not MODULE_NAME.fullmatch(name):
        raise ConfigError(key, name, "allowed: a dotted Python name such as mypkg.MyNet")
    parts = name.split(".")
    found = _import(key, name, parts[0])
    if found is None:
        raise ConfigError(key, name, f"cannot be imported: no module named {parts[0]!r} (is its "
                          "directory the working directory, or on PYTHONPATH?)")
    for index, part in enumerate(parts[1:], start=1):
        prefix = ".".join(parts[:index])
        if hasattr(found, part):
            found = getattr(found, part)
            continue
        module = _import(key, name, f"{prefix}.{part}") if inspect.ismodule(found) else None
        if module is None:
            public = sorted(item for item in dir(found) if not item.startswith("_"))
            listed = f" (it has {', '.join(public[:8])}{', ...' if len(public) > 8 else ''})" if public else ""
            raise ConfigError(key, name, f"cannot be imported: {prefix} has no {part!r}{listed}")
        found = module
    return found


def _instantiated(values: Mapping[str, Any], key: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(key, node) for every node under ``key`` that Hydra's ``instantiate`` builds, outer first."""
    node: Any = values
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    stack: list[tuple[str, Any]] = [(key, node)]
    while stack:
        path, item = stack.pop(0)
        if isinstance(item, Mapping):
            if "_target_" in item:
                yield path, item
                if item.get("_recursive_") is False:
                    continue  # the nested nodes reach the user's class as they are
            stack += [(f"{path}.{name}", child) for name, child in item.items() if name not in HYDRA_KEYS]
        elif isinstance(item, list):
            stack += [(f"{path}.{index}", child) for index, child in enumerate(item)]


def _check_arguments(key: str, target: str, built: Any, node: Mapping[str, Any]) -> None:
    """The node's arguments against the signature (where Python can read it)."""
    if not callable(built):
        raise ConfigError(f"{key}._target_", target, "is neither a class nor a function")
    try:
        signature = inspect.signature(built)
    except (TypeError, ValueError):
        return  # a built-in without a readable signature: its own call will tell
    passed = PASSED_BY_TRAINER.get(key, ())
    skipped = (*HYDRA_KEYS, *TRAINER_KEYS.get(key, ()))
    keywords = {name: value for name, value in node.items() if name not in skipped}
    positional = [None] * len(passed) + list(node.get("_args_") or [])
    # A loss function gets (output, target) at every step: its configured arguments are bound first.
    partial = node.get("_partial_") or (key == "loss" and not inspect.isclass(built))
    bind = signature.bind_partial if partial else signature.bind
    try:
        bind(*positional, **keywords)
    except TypeError as error:
        reason = str(error)
        takes = [name for name in signature.parameters if name not in passed and name != "self"]
        if "unexpected keyword argument" in reason:
            name = reason.rsplit(" ", 1)[-1].strip("'")
            raise ConfigError(f"{key}.{name}", keywords.get(name), f"{target} takes no argument "
                              f"{name!r} (it takes: {', '.join(takes) or 'none'})") from None
        if "missing a required argument" in reason:
            name = reason.rsplit(" ", 1)[-1].strip("'")
            raise ConfigError(key, target, f"needs the argument {name!r}: give it with "
                              f"+{key}.{name}=VALUE") from None
        raise ConfigError(key, target, f"cannot be called with this config's arguments ({reason}; "
                          f"the trainer passes {', '.join(passed) or 'nothing'} first)") from None


def _check_data(key: str, target: str, built: Any) -> None:
    """A data module (a class with ``datasets()``), or a function that returns ``(train, val)``."""
    if inspect.isclass(built) and not callable(getattr(built, "datasets", None)):
        raise ConfigError(f"{key}._target_", target, "is a class without datasets(): a data module "
                          "has datasets() -> (train, val) and optionally prepare(); or name a "
                          "function that returns (train, val)")


def _check_function(key: str, name: Any, arguments: tuple[str, ...]) -> None:
    """``task`` and user metrics: functions the trainer calls with ``arguments``."""
    found = resolve(key, name)
    if not callable(found):
        raise ConfigError(key, name, "is not a function")
    try:
        inspect.signature(found).bind(*arguments)
    except (TypeError, ValueError) as error:
        if isinstance(error, TypeError):
            raise ConfigError(key, name, f"must take ({', '.join(arguments)}): {error}") from None


def check_plugins(values: Mapping[str, Any]) -> None:
    """Every ``_target_`` the ranks will build resolves and accepts its arguments; ``task`` and the
    metrics are functions of the right arguments. Imports the user's modules (not the shipped
    configs' targets), so a typo costs a second here instead of a failed start."""
    from trainer.options import BUILTIN_METRICS

    for section in ("model", "data.dataset", "optim", "sched.scheduler", "loss"):
        for key, node in _instantiated(values, section):
            target = node["_target_"]
            if target in SHIPPED_TARGETS:
                continue
            built = resolve(f"{key}._target_", target)
            if key == "data.dataset":
                _check_data(key, target, built)
            _check_arguments(key, target, built, node)
    if values.get("task") is not None:
        _check_function("task", values["task"], ("model", "batch"))
    metrics = values.get("metrics")
    for index, metric in enumerate(metrics if isinstance(metrics, list) else []):
        if metric not in BUILTIN_METRICS:
            _check_function(f"metrics.{index}", metric, ("output", "target"))


def _argument(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{str(value.get('_target_', '')).rsplit('.', 1)[-1]}(...)" if "_target_" in value else "{...}"
    if isinstance(value, list):
        return "[...]" if any(isinstance(item, (Mapping, list)) for item in value) else repr(value)
    return repr(value)


def _call(node: Any, skipped: tuple[str, ...] = ()) -> str:
    if not isinstance(node, Mapping):
        return "none"
    arguments = ", ".join(f"{name}={_argument(value)}" for name, value in node.items()
                          if name not in HYDRA_KEYS and name not in skipped)
    return f"{node.get('_target_')}({arguments})"


def describe_plugins(values: Mapping[str, Any]) -> str:
    """What the trainer builds, for the dry run: one call per plug-in, as it will be made."""
    from trainer.options import metrics_for

    sched = values["sched"]
    model = values["model"]
    frozen = f" freeze={model['freeze']}" if model.get("freeze") else ""
    parts = [f"model={_call(model, TRAINER_KEYS['model'])}{frozen}", f"data={_call(values['data']['dataset'])}"]
    if values.get("task") is not None:
        parts.append(f"task={values['task']}(model, batch)")
    else:
        parts.append(f"loss={_call(values['loss'])}")
    parts += [f"optim={_call(values['optim'], TRAINER_KEYS['optim'])}",
              f"sched={_call(sched['scheduler'])}" + (f" per {sched['interval']}" if sched["scheduler"] else ""),
              f"metrics={metrics_for(values['metrics'], values['task'], values['loss']['_target_'])}"]
    return " ".join(parts)
