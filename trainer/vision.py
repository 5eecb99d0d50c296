"""torchvision models and data sets behind the trainer's two plug points (``model._target_`` and
``data.dataset._target_``), with the trainer's rule that only ``prepare()`` may touch the network.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, MNIST, ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.datasets.utils import check_integrity

from trainer.logs import get_logger

log = get_logger("vision")

Transform = Callable[[Any], Any]

# Wrappers that prefix every key of a saved state dict: DDP (``module.``), torch.compile (``_orig_mod.``).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _preview(names: Iterable[str], limit: int = 5) -> str:
    """Name a few items and count the rest: error messages stay one line even for 1000 classes."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


# --- models ----------------------------------------------------------------------------------------


def torchvision_model(name: str, num_classes: int, weights: str | None = None,
                      **kwargs: Any) -> nn.Module:
    """Any ``torchvision.models`` model by name, optionally initialised from a local file.

    torchvision's own ``weights=`` argument is never used: it downloads, and model construction
    runs on every rank, where the network is off limits. ``weights`` is a local plain state dict or
    a trainer checkpoint; tensors whose shape differs from the model's (typically the classifier
    head of a model trained on another number of classes) keep their fresh initialisation.
    """
    if name not in torchvision.models.list_models():
        raise ValueError(f"model.name={name!r} is not a torchvision model: "
                         f"torchvision.models.list_models() names them all")
    model = torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
    if weights is not None:
        _load_weights(model, Path(weights))
    return model


def _load_weights(model: nn.Module, path: Path) -> None:
    """Copy the file's tensors into ``model``; a key that fits nowhere is an error, not a warning,
    because a silently half-loaded model trains on and only shows up as a worse result."""
    saved = _read_state_dict(path)
    current = model.state_dict()
    mismatched = [key for key in saved.keys() & current.keys()
                  if saved[key].shape != current[key].shape]
    if mismatched:
        log.warning("weights %s: skipped %s: shapes differ from the model's, left freshly initialised",
                    path, _preview(f"{key} {list(saved[key].shape)}->{list(current[key].shape)}"
                                   for key in sorted(mismatched)))
    missing = sorted(current.keys() - saved.keys())
    unexpected = sorted(saved.keys() - current.keys())
    if missing or unexpected:
        raise ValueError(f"weights {path} do not fit the model (another architecture?): "
                         f"missing keys: {_preview(missing) or 'none'}; "
                         f"unexpected keys: {_preview(unexpected) or 'none'}")
    current.update((key, value) for key, value in saved.items() if key not in mismatched)
    model.load_state_dict(current)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a plain one, or the ``"model"`` entry of a trainer checkpoint."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(saved, Mapping) and isinstance(saved.get("model"), Mapping):
        saved = saved["model"]
    if not isinstance(saved, Mapping):
        raise ValueError(f"weights {path} hold a {type(saved).__name__}, not a state dict or a "
                         f"checkpoint with a 'model' entry")
    return _strip_wrapper_prefixes(dict(saved))


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved from a DDP-wrapped or compiled model load into the bare model."""
    while state and (prefix := next((p for p in _WRAPPER_PREFIXES
                                     if all(key.startswith(p) for key in state)), None)):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


# --- data ------------------------------------------------------------------------------------------


def _check_num_classes(dataset: str, num_classes: int | None, actual: int) -> None:
    """The model's head is sized from ``data.num_classes``: a wrong value would only fail (or
    silently waste outputs) deep in training, so it is checked up front, naming the right value."""
    if num_classes != actual:
        raise ValueError(f"data.num_classes={num_classes} but {dataset} has {actual} classes: "
                         f"set data.num_classes={actual}")


class _DownloadableData(ABC):
    """A torchvision data set with fixed files and a downloader (MNIST, CIFAR10).

    ``prepare()`` checks the files itself and calls torchvision's downloader only when some are
    missing, so a present cache never reaches the network whatever torchvision's own checks do;
    ``datasets()`` always constructs with ``download=False``.
    """

    dataset_class: ClassVar[type[MNIST | CIFAR10]]
    num_dataset_classes: ClassVar[int]

    def __init__(self, root: str, num_classes: int, download: bool,
                 train_transform: Transform, val_transform: Transform) -> None:
        _check_num_classes(self.dataset_class.__name__, num_classes, self.num_dataset_classes)
        self.root = Path(root)
        self.download = download
        self.train_transform = train_transform
        self.val_transform = val_transform

    @property
    @abstractmethod
    def folder(self) -> Path:
        """Where torchvision keeps the files (named in logs and errors)."""

    @abstractmethod
    def files(self) -> list[tuple[str, str | None]]:
        """``(file name in folder, md5 or None)``: exactly what torchvision checks before loading."""

    def prepare(self) -> None:
        missing = self._missing()
        if not missing:
            log.info("data cache present: %s", self.folder)
            return
        if not self.download:
            raise FileNotFoundError(self._not_found(missing))
        name = self.dataset_class.__name__
        log.info("downloading %s into %s", name, self.root)
        # torchvision's download fetches both splits (and its constructor raises if any file is
        # still missing or corrupted); the test split is the smaller one to load.
        self.dataset_class(str(self.root), train=False, download=True)
        log.info("downloaded %s into %s", name, self.folder)

    def datasets(self) -> tuple[Dataset, Dataset]:
        # Presence only: torchvision's constructors verify the checksums themselves (CIFAR10:
        # 180 MB per split object), so hashing here too would read the files once more per rank.
        if missing := self._missing(verify=False):
            raise FileNotFoundError(f"{self._not_found(missing)} (each machine needs them: without a "
                                    f"shared filesystem use data.cache_scope=node)")
        return (self.dataset_class(str(self.root), train=True, transform=self.train_transform),
                self.dataset_class(str(self.root), train=False, transform=self.val_transform))

    def _missing(self, verify: bool = True) -> list[str]:
        return [name for name, md5 in self.files()
                if not check_integrity(self.folder / name, md5 if verify else None)]

    def _not_found(self, missing: list[str]) -> str:
        return (f"{self.dataset_class.__name__} not found under {self.folder} (missing or corrupted: "
                f"{_preview(missing)}): set data.download=true on a machine with network "
                f"access, or copy the files there")


class MNISTData(_DownloadableData):
    """MNIST (60000 train / 10000 test digits, 28x28 grayscale) from ``root/MNIST/raw``."""

    dataset_class = MNIST
    num_dataset_classes = 10

    @property
    def folder(self) -> Path:
        return self.root / "MNIST" / "raw"

    def files(self) -> list[tuple[str, str | None]]:
        # torchvision checks the extracted files by name only (its md5s are of the .gz archives).
        return [(Path(archive).stem, None) for archive, _ in MNIST.resources]


class CIFAR10Data(_DownloadableData):
    """CIFAR10 (50000 train / 10000 test 32x32 colour images) from ``root/cifar-10-batches-py``."""

    dataset_class = CIFAR10
    num_dataset_classes = 10

    @property
    def folder(self) -> Path:
        return self.root / CIFAR10.base_folder

    def files(self) -> list[tuple[str, str | None]]:
        batches = [(name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list]
        return [*batches, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]


class ImageFolderData:
    """Images in ``root/train_dir/<class>/...`` and ``root/val_dir/<class>/...`` (ImageNet layout).

    Nothing to download: ``prepare()`` only fails early, on the caching rank, when a folder is
    missing. Labels are the sorted class folder names' indices, so ``datasets()`` insists that both
    splits hold the same names and as many as ``data.num_classes``: otherwise label k would mean
    different classes in training and validation, or the model's head would have the wrong size.
    """

    def __init__(self, root: str, num_classes: int | None, train_transform: Transform,
                 val_transform: Transform, train_dir: str = "train", val_dir: str = "val") -> None:
        self.num_classes = num_classes
        self.train_path = Path(root) / train_dir
        self.val_path = Path(root) / val_dir
        self.train_transform = train_transform
        self.val_transform = val_transform

    def prepare(self) -> None:
        self._check_dirs()
        log.info("data cache present: %s, %s", self.train_path, self.val_path)

    def datasets(self) -> tuple[Dataset, Dataset]:
        self._check_dirs()
        classes = self._classes()
        if self.num_classes is None:
            raise ValueError(f"data.num_classes is not set: {self.train_path} has {len(classes)} "
                             f"class folders ({_preview(classes)}): set data.num_classes="
                             f"{len(classes)}")
        _check_num_classes(f"{self.train_path} (class folders: {_preview(classes)})",
                           self.num_classes, len(classes))
        return (ImageFolder(str(self.train_path), transform=self.train_transform),
                ImageFolder(str(self.val_path), transform=self.val_transform))

    def _check_dirs(self) -> None:
        for path in (self.train_path, self.val_path):
            if not path.is_dir():
                raise FileNotFoundError(f"image folder {path} does not exist: put one sub-folder "
                                        f"of images per class there, or set data.root")

    def _classes(self) -> list[str]:
        train, _ = find_classes(self.train_path)
        val, _ = find_classes(self.val_path)
        if train != val:
            raise ValueError(f"class folders differ between {self.train_path} and {self.val_path} "
                             f"(only in train: {_preview(sorted(set(train) - set(val))) or 'none'}; "
                             f"only in val: {_preview(sorted(set(val) - set(train))) or 'none'}): "
                             f"give both the same class names, or labels would not match")
        return train
