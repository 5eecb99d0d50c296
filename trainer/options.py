"""The trainer's options, typed, and the allowed values of every key it reads, in a module without
torch (standard library only) so the launcher can check a config against them before it starts
anything: one schema for both.

The dataclasses below are the schema of the blocks the trainer owns (``trainer``, ``save``, the
data loader keys of ``data``): each field has its type, the default of ``conf/``, and in its
metadata a ``doc`` (what the key does) and a ``check`` (what it allows beyond its type: a range,
choices or a pattern). The launcher derives its rules and error messages from them
(``launcher.validation``); the trainer reads the run's config as these objects
(``trainer.train.Options``). The plug-in blocks (model, data.dataset, optim, sched, loss) are the user's
classes' arguments and have no schema here.
"""

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class Check:
    """What a field allows beyond its type, as data: ``low``/``high`` bound a number (both
    included unless ``exclusive``), ``choices`` list the values, ``pattern`` is a regular
    expression the whole string matches, ``what`` names the value in an error message."""

    low: float | None = None
    high: float | None = None
    exclusive: bool = False
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    what: str | None = None

    def accepts(self, value: Any) -> bool:
        """Whether ``value``, already of its field's type, is within the check. A bounded number
        must be finite: nan and inf are no count, size or rate."""
        if self.choices:
            return any(type(value) is type(allowed) and value == allowed for allowed in self.choices)
        if self.pattern is not None:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if self.low is None and self.high is None:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.exclusive else value >= self.low)
        below = self.high is None or (value < self.high if self.exclusive else value <= self.high)
        return above and below

    def allowed(self) -> str:
        """The check in words, for the trainer's own error message (the launcher words its own)."""
        if self.choices:
            return ", ".join(shown(choice) for choice in self.choices)
        if self.pattern is not None:
            return self.what or f"a string matching {self.pattern}"
        bounds = [f"{'>' if self.exclusive else '>='} {self.low:g}"] if self.low is not None else []
        bounds += [f"{'<' if self.exclusive else '<='} {self.high:g}"] if self.high is not None else []
        return " ".join(filter(None, (self.what, " and ".join(bounds)))) or "any value"


def shown(value: Any) -> str:
    """A value as it is typed on the command line or in YAML: null, true, 32."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return str(value)


def refusals(options: Any, prefix: str) -> list[str]:
    """``KEY=VALUE: allowed: ...`` for every field of the dataclass instance ``options`` (nested
    blocks too) whose value its ``check`` refuses; None passes (the type said whether it may be).
    Where the launcher started the job these are empty: it checked every key before a rank started;
    they matter for ``python -m trainer`` on a hand-edited file."""
    found: list[str] = []
    for item in fields(options):
        value = getattr(options, item.name)
        if is_dataclass(value):
            found += refusals(value, f"{prefix}{item.name}.")
            continue
        check = item.metadata.get("check")
        if isinstance(check, Check) and value is not None and not check.accepts(value):
            found.append(f"{prefix}{item.name}={value!r}: allowed: {check.allowed()}")
    return found


def option(default: Any, doc: str, check: object = None) -> Any:
    """A field with its default, its doc and its check: a ``Check``, or in the launcher's schema
    one of its rules where the words need code (a list or mapping default: a fresh copy for each
    instance)."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def block(cls: type, doc: str) -> Any:
    """A nested block (``trainer.early_stop``, ``save.best``) with its defaults."""
    return field(default_factory=cls, metadata={"doc": doc, "check": None})


class TrainerMode(str, Enum):
    train = "train"
    eval = "eval"


class MatmulPrecision(str, Enum):
    """torch.set_float32_matmul_precision's three."""

    highest = "highest"
    high = "high"
    medium = "medium"


class ImprovementMode(str, Enum):
    """save.best.mode, trainer.early_stop.mode."""

    auto = "auto"
    min = "min"
    max = "max"


class WorkerStartMethod(str, Enum):
    """data.worker_start_method: how DataLoader workers start."""

    fork = "fork"
    forkserver = "forkserver"
    spawn = "spawn"


# Choices whose values are no Python names (32, global) or not all strings (progress_bar).
PRECISIONS = ("32", "bf16", "fp16")
PROGRESS_BAR = ("auto", True, False)
CACHE_SCOPES = ("global", "node")  # data.cache_scope: rank 0 prepares, or local rank 0 of each node
# The plug-in blocks' keys that the trainer reads itself (checked by the launcher's own rules).
LR_SCALING_RULES = ("none", "linear", "sqrt")
SCHEDULE_INTERVALS = ("step", "epoch")

NON_BLANK = r"(?s).*\S.*"  # a string with something in it
NON_EMPTY = Check(pattern=NON_BLANK, what="a non-empty string")
COUNT = Check(low=1)
AT_LEAST_0 = Check(low=0)
METRIC = Check(pattern=r"(?s)val_.*", what="a validation metric such as val_loss or val_acc")
MONITOR_DOC = "null: off | val_loss | val_acc | val_NAME of a configured metric"
MODE_DOC = "auto: min for a loss, max otherwise | min | max"


@dataclass
class EarlyStop:
    monitor: str | None = option(None, MONITOR_DOC, METRIC)
    mode: ImprovementMode = option(ImprovementMode.auto, MODE_DOC)
    patience: int = option(3, "epochs without improvement", COUNT)
    min_delta: float = option(0.0, "a change smaller than this is no improvement", AT_LEAST_0)


@dataclass
class TrainerOptions:
    """The ``trainer`` block."""

    mode: TrainerMode = option(TrainerMode.train, "train | eval (validation metrics of `checkpoint`, "
                               "reduced over all ranks)")
    epochs: int = option(6, "epochs to train", COUNT)
    log_every_steps: int = option(0, "0: log once per epoch", AT_LEAST_0)
    stop_check_steps: int = option(10, "under Slurm: every N steps the ranks agree whether a stop "
                                   "signal came", COUNT)
    precision: str = option("32", "32 | bf16 (CPU or CUDA) | fp16 (CUDA, with a GradScaler)",
                            Check(choices=PRECISIONS))
    matmul_precision: MatmulPrecision = option(
        MatmulPrecision.highest, "float32 matmuls: highest (exact fp32) | high (TF32 tensor cores) | "
        "medium (bf16)")
    accumulate: int = option(1, "micro-batches per optimizer step (DDP syncs on the last one only)", COUNT)
    clip_grad_norm: float | None = option(None, "max gradient norm (clipped after unscaling), null = "
                                          "no clipping", Check(low=0, exclusive=True))
    channels_last: bool = option(False, "NHWC memory format for 4-D inputs and the model (convolutions)")
    compile: bool = option(False, "torch.compile the DDP model (the first steps pay the compilation)")
    progress_bar: Any = option("auto", "rank 0's tqdm bar: auto (only when stderr is a terminal) | "
                               "true | false", Check(choices=PROGRESS_BAR))
    tensorboard: bool = option(True, "rank 0 writes run_dir/tensorboard (tensorboard --logdir run_dir)")
    curves: bool = option(True, "rank 0 draws run_dir/curves.png at the end (matplotlib: 0.6-1.7 s on 2 CPU cores)")
    tensorboard_every_steps: int = option(10, "batch loss and lr every N optimizer steps (epoch metrics "
                                          "every epoch)", COUNT)
    early_stop: EarlyStop = block(EarlyStop, "stop when the monitored metric has not improved for "
                                  "`patience` epochs (all ranks together)")


@dataclass
class Best:
    monitor: str | None = option(None, MONITOR_DOC, METRIC)
    mode: ImprovementMode = option(ImprovementMode.auto, MODE_DOC)


@dataclass
class SaveOptions:
    """The ``save`` block: checkpoints of a training run, into run_dir/checkpoints/last.pt."""

    every_epochs: int = option(1, "0 disables end-of-epoch checkpoints", AT_LEAST_0)
    every_steps: int = option(0, ">0: also checkpoint mid-epoch every N optimizer steps", AT_LEAST_0)
    keep_last: int = option(1, "checkpoints kept: N > 1 keeps the N newest as "
                            "checkpoints/step-GLOBALSTEP.pt too", COUNT)
    best: Best = block(Best, "checkpoints/best.pt: the model at the epoch with the best monitored metric")


@dataclass
class DataLoaderOptions:
    """``data``'s loading and caching keys (conf/data/_loader.yaml), shared by every data option;
    ``data.dataset`` and an option's own keys (image_size, mean, ...) are not the trainer's."""

    root: str = option("data", "cache directory (relative to the working directory)", NON_EMPTY)
    cache_scope: str = option("global", "global: rank 0 prepares | node: local rank 0 of each node "
                              "prepares", Check(choices=CACHE_SCOPES))
    prepare_timeout: float = option(86400.0, "seconds the other ranks wait for preparation "
                                    "(downloads can be slow)", Check(low=1, what="seconds, a number"))
    batch_size: int = option(64, "per rank", COUNT)
    num_workers: int = option(0, "DataLoader worker processes per rank (0: load in the rank itself)",
                              AT_LEAST_0)
    worker_start_method: WorkerStartMethod = option(WorkerStartMethod.fork, "DataLoader workers: "
                                                    "fork | forkserver | spawn")
    shuffle: bool = option(True, "shuffle the training samples each epoch (seeded by seed and epoch)")
    drop_last: bool = option(False, "drop the training samples that do not divide evenly among "
                             "the ranks (else some repeat)")
    num_classes: int | None = option(None, "what a model with num_classes: auto gets (null: the data "
                                     "module's own, if any)", COUNT)


BUILTIN_METRICS = {"accuracy": "acc"}  # metrics=[...] by name (trainer.tasks.METRICS): reported as val_acc
CLASSIFICATION_LOSSES = ("torch.nn.CrossEntropyLoss", "torch.nn.functional.cross_entropy")


def metrics_for(metrics: str | list[str], task: str | None, loss_target: str | None) -> list[str]:
    """``metrics: auto``: accuracy for the built-in step with a classification loss, else none
    (a user step returns its own sums)."""
    if metrics != "auto":
        return list(metrics)
    return ["accuracy"] if task is None and loss_target in CLASSIFICATION_LOSSES else []


def reported_metrics(metrics: str | list[str], task: str | None, loss_target: str | None) -> list[str] | None:
    """The ``val_*`` keys a run reports: ``val_loss`` and one per metric; None where a task's
    step returns sums the config does not name."""
    if task is not None:
        return None
    names = [reported_name(name) for name in metrics_for(metrics, task, loss_target)]
    return ["val_loss", *(f"val_{name}" for name in names)]


def reported_name(metric: str) -> str:
    """``val_NAME``'s NAME: acc for accuracy, a function's own name for ``mypkg.f1``."""
    return BUILTIN_METRICS.get(metric) or metric.rsplit(".", 1)[-1]


def improvement_mode(monitor: str, mode: ImprovementMode) -> ImprovementMode:
    """``auto``: lower is better for a loss, higher for anything else (accuracy, top-k, F1)."""
    if mode is not ImprovementMode.auto:
        return mode
    return ImprovementMode.min if "loss" in monitor else ImprovementMode.max
