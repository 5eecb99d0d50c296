"""Small default model; any ``torch.nn.Module`` can replace it through ``model._target_``."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, depth: int = 2) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


def freeze(model: nn.Module, names: list[str | int]) -> list[nn.Module]:
    """``model.freeze=[conv1,layer1]``: those submodules' parameters get no gradient (and so no
    optimizer state), and their normalisation layers stay in eval mode, as fine-tuning a part of a
    pretrained model needs (their running statistics are the pretrained ones). Returns the frozen
    normalisation layers (``keep_eval_mode`` after each ``model.train()``)."""
    modules = dict(model.named_modules())
    frozen: list[nn.Module] = []
    for name in map(str, names):  # a Sequential's children are named 0, 1, ...
        if name not in modules:
            tops = [child for child, _ in model.named_children()]
            raise ValueError(f"model.freeze: the model has no submodule {name!r} (its top-level "
                             f"ones: {', '.join(tops)})")
        for parameter in modules[name].parameters():
            parameter.requires_grad_(False)
        frozen += [module for module in modules[name].modules()
                   if isinstance(module, nn.modules.batchnorm._NormBase)]
    keep_eval_mode(frozen)
    return frozen


def keep_eval_mode(frozen: list[nn.Module]) -> None:
    for module in frozen:
        module.eval()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates: all but the frozen ones."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
