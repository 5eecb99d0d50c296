"""What one batch computes: its loss for training, and the sums evaluation reduces over ranks.

The built-in step takes ``(inputs, targets)`` batches: ``loss(model(inputs), targets)``, and each
configured metric of ``(output, target)``. Any other batch, or a model with a forward of its own
kind, gets a user step: ``task=mypkg.step`` with ``step(model, batch) -> loss`` or ``(loss, sums)``;
the trainer keeps everything around it (accumulation, precision, clipping, DDP, checkpoints, logs).

A metric returns a *sum* over the batch (or a ``(sum, count)`` pair): evaluation adds the sums up
on every rank, reduces them over the ranks and divides only then, so a metric over N ranks is
exactly the single-process value (a mean of per-rank means would not be, with uneven shards).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from trainer.options import metrics_for, reported_name

MetricValue = torch.Tensor | tuple[torch.Tensor, torch.Tensor | int]


class Metric(Protocol):
    def __call__(self, output: Any, target: Any) -> MetricValue: ...


class Task(Protocol):
    """``task=``: the forward and loss of one batch (the batch as the loader gives it, on the device)."""

    def __call__(self, model: torch.nn.Module, batch: Any) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, MetricValue]]: ...


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct argmax predictions (a sum: evaluation divides by the samples)."""
    return (output.argmax(dim=1) == target).sum()


# metrics=[accuracy]: the built-in metrics by name (reported as options.BUILTIN_METRICS says: val_acc).
METRICS: dict[str, Metric] = {"accuracy": accuracy}


def build_callable(node: DictConfig) -> Callable[..., Any]:
    """A class is constructed with the node's arguments; a function gets them bound, so ``loss=``
    takes ``torch.nn.MSELoss`` and ``torch.nn.functional.mse_loss`` alike."""
    return instantiate(node, _partial_=not inspect.isclass(get_object(node._target_)))


def configured_metrics(cfg: DictConfig) -> dict[str, Metric]:
    """The configured metrics by the name they are reported under (``val_NAME``)."""
    metrics: dict[str, Metric] = {}
    for name in metrics_for(cfg.get("metrics", "auto"), cfg.get("task"), cfg.loss._target_):
        metrics[reported_name(name)] = METRICS[name] if name in METRICS else get_object(name)
    return metrics


def tensors_in(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor of a batch of any structure (tensor, tuple, list, dict, nested)."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from tensors_in(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from tensors_in(value)


def samples_in(batch: Any) -> int:
    """The batch's size: the first dimension of its first tensor."""
    first = next(tensors_in(batch), None)
    if first is None or first.dim() == 0:
        raise TypeError(f"a batch needs a tensor with a batch dimension; this one is {type(batch).__name__}")
    return first.shape[0]


def map_tensors(batch: Any, move: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The batch with ``move`` applied to each tensor, its structure kept (named tuples too)."""
    if isinstance(batch, torch.Tensor):
        return move(batch)
    if isinstance(batch, Mapping):
        return type(batch)({key: map_tensors(value, move) for key, value in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(map_tensors(value, move) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(value, move) for value in batch)
    return batch


def _pair(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"the built-in step takes (inputs, targets) batches, and this data set gives "
                    f"{type(batch).__name__} batches: train it with task=mypkg.step, where "
                    "step(model, batch) returns the loss")


class Step:
    """The loss (and metric sums) of one batch: the built-in step, or the user's ``task``."""

    def __init__(self, loss: Callable[..., torch.Tensor] | None, metrics: Mapping[str, Metric],
                 task: Task | None) -> None:
        self.loss, self.metrics, self.task = loss, metrics, task

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Step:
        task = get_object(cfg.task) if cfg.get("task") is not None else None
        return cls(build_callable(cfg.loss), configured_metrics(cfg), task)

    def example_input(self, batch: Any) -> Any:
        """What the model's forward takes (for DDP's settling pass), or None for a user step."""
        return None if self.task is not None else _pair(batch)[0]

    def training_loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's mean loss and its number of samples."""
        if self.task is not None:
            result = self.task(model, batch)
            return (result[0] if isinstance(result, tuple) else result), samples_in(batch)
        inputs, targets = _pair(batch)
        assert self.loss is not None
        return self.loss(model(inputs), targets), samples_in(targets)

    def evaluation_sums(self, model: torch.nn.Module, batch: Any
                        ) -> tuple[torch.Tensor, int, dict[str, tuple[torch.Tensor, torch.Tensor | int]]]:
        """(the loss times the samples, the samples, {metric: (sum, count)}) of one batch."""
        sums: dict[str, tuple[torch.Tensor, torch.Tensor | int]] = {}
        if self.task is not None:
            result = self.task(model, batch)
            loss, returned = (result if isinstance(result, tuple) else (result, {}))
            samples = samples_in(batch)
            for name, value in returned.items():
                sums[name] = value if isinstance(value, tuple) else (value, samples)
            return loss.double() * samples, samples, sums
        inputs, targets = _pair(batch)
        output = model(inputs)
        samples = samples_in(targets)
        assert self.loss is not None
        loss = self.loss(output, targets)
        for name, metric in self.metrics.items():
            value = metric(output, targets)
            sums[name] = value if isinstance(value, tuple) else (value, samples)
        return loss.double() * samples, samples, sums


def model_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """``task=trainer.tasks.model_loss``: for a model that computes its own loss. The batch goes in
    as the model's arguments (a tuple or list positionally, a dict by keyword), and the loss is
    what it returns: a tensor, or the ``loss`` of a mapping or an output object."""
    if isinstance(batch, Mapping):
        output = model(**batch)
    elif isinstance(batch, (list, tuple)):
        output = model(*batch)
    else:
        output = model(batch)
    if isinstance(output, torch.Tensor):
        return output
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"task=trainer.tasks.model_loss: the model returned {type(output).__name__}, "
                        "neither a loss tensor nor something with a loss")
    return loss
