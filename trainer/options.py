"""The allowed values of the trainer's options, in a module without torch so the launcher can check
a config against them before it starts anything (one list for both)."""

PRECISIONS = ("32", "bf16", "fp16")
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's three
MODES = ("train", "eval")
LR_SCALING_RULES = ("none", "linear", "sqrt")
SCHEDULE_INTERVALS = ("step", "epoch")
PROGRESS_BAR = ("auto", True, False)
CACHE_SCOPES = ("global", "node")  # data.cache_scope: rank 0 prepares, or local rank 0 of each node
WORKER_START_METHODS = ("fork", "forkserver", "spawn")  # data.worker_start_method: DataLoader workers

BUILTIN_METRICS = {"accuracy": "acc"}  # metrics=[...] by name (trainer.tasks.METRICS): reported as val_acc
IMPROVEMENT_MODES = ("auto", "min", "max")  # save.best.mode, trainer.early_stop.mode
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


def improvement_mode(monitor: str, mode: str) -> str:
    """``auto``: lower is better for a loss, higher for anything else (accuracy, top-k, F1)."""
    if mode != "auto":
        return mode
    return "min" if "loss" in monitor else "max"
