"""Data: a no-network default data set, rank-0-first caching, and samplers that resume exactly."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset, DistributedSampler, Sampler, TensorDataset

from trainer.env import DistEnv
from trainer.files import write_atomic
from trainer.logs import get_logger
from trainer.options import DataLoaderOptions

log = get_logger("data")


@runtime_checkable
class DataModule(Protocol):
    """What ``data=mypkg.MyData`` names: ``datasets()`` opens the training and validation sets on
    every rank; ``prepare()``, if it has one, downloads or generates them first, on the caching
    rank(s) only (``data.cache_scope``) while the others wait. A function that returns
    ``(train, val)`` works too (the caching ranks call it first)."""

    def datasets(self) -> tuple[Dataset, Dataset]: ...


class Data:
    """The opened data sets, and the number of classes where the data knows it."""

    def __init__(self, train: Dataset, val: Dataset, num_classes: int | None) -> None:
        self.train, self.val, self.num_classes = train, val, num_classes

    @classmethod
    def open(cls, node: DictConfig, loader: DataLoaderOptions, env: DistEnv) -> Data:
        """``data.dataset`` (``node``), prepared once per cache scope, behind a barrier that
        outlasts slow downloads; then every rank opens it."""
        module = None
        function = not inspect.isclass(get_object(node._target_))
        with caching_rank_first(env, loader.cache_scope, loader.prepare_timeout) as caching:
            if function:
                splits: Any = instantiate(node)
            else:
                module = instantiate(node)
                if caching and callable(getattr(module, "prepare", None)):
                    module.prepare()
        if module is not None:
            splits = module.datasets()
        if not (isinstance(splits, (tuple, list)) and len(splits) == 2):
            raise TypeError(f"data.dataset ({node._target_}) gave {type(splits).__name__}, not "
                            "(train, val): a data module's datasets() or a data function returns both")
        num_classes = loader.num_classes
        if num_classes is None:
            num_classes = getattr(module, "num_classes", None)
        return cls(splits[0], splits[1], num_classes)


class SyntheticClassification:
    """Deterministic Gaussian-mixture classification (two clusters per class), cached as ``.npz``.

    A ``DataModule``: ``prepare()`` generates the cache (on the caching ranks only) and
    ``datasets()`` returns ``(train, val)`` read from it (on every rank).
    """

    def __init__(self, root: str, num_samples: int, num_features: int, num_classes: int,
                 noise: float, val_fraction: float, seed: int) -> None:
        self.params: dict[str, Any] = dict(num_samples=num_samples, num_features=num_features, num_classes=num_classes,
                           noise=noise, val_fraction=val_fraction, seed=seed)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        self.cache_path = Path(root) / f"synthetic-{digest}.npz"

    def prepare(self) -> None:
        if self.cache_path.exists():
            log.info("data cache present: %s", self.cache_path)
            return
        p = self.params
        rng = np.random.default_rng(p["seed"])
        centers = rng.normal(scale=1.0, size=(p["num_classes"] * 2, p["num_features"]))
        labels = rng.integers(0, p["num_classes"], size=p["num_samples"])
        cluster = labels * 2 + rng.integers(0, 2, size=p["num_samples"])
        noise = rng.normal(scale=p["noise"], size=(p["num_samples"], p["num_features"]))
        features = (centers[cluster] + noise).astype(np.float32)
        n_val = int(round(p["num_samples"] * p["val_fraction"]))
        # Atomic, under a name unique per host and process: with data.cache_scope=node, the nodes
        # sharing a file system may generate it at the same time.
        write_atomic(self.cache_path, lambda file: np.savez(
            file, x_train=features[n_val:], y_train=labels[n_val:], x_val=features[:n_val], y_val=labels[:n_val]))
        log.info("generated synthetic data set (%d samples) into %s", p["num_samples"], self.cache_path)

    def datasets(self) -> tuple[Dataset, Dataset]:
        with np.load(self.cache_path) as arrays:
            train = TensorDataset(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]))
            val = TensorDataset(torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))
        return train, val


def batched_indexing(dataset: Any) -> bool:
    """Whether ``dataset[list_of_indices]`` is the whole batch, as the per-sample items stacked: a
    ``TensorDataset``, or a data set of the user's that says so with ``batched_indexing = True``."""
    return isinstance(dataset, TensorDataset) or getattr(dataset, "batched_indexing", False) is True


def is_caching_rank(env: DistEnv, scope: str) -> bool:
    if scope == "global":
        return env.rank == 0
    if scope == "node":
        return env.local_rank == 0
    raise ValueError(f"data.cache_scope={scope!r}: allowed: global, node")


@contextlib.contextmanager
def caching_rank_first(env: DistEnv, scope: str, timeout_s: float) -> Iterator[bool]:
    """Yield True on the rank(s) that prepare the data; everyone else waits until they are done.

    The wait runs on its own gloo group whose timeout is ``timeout_s`` (a day by default), not the
    collective timeout: a slow download must not kill the waiting ranks. If the caching rank
    raises, the waiting ranks stay at the barrier and the launcher stops them.
    """
    caching = is_caching_rank(env, scope)
    if not dist.is_initialized() or dist.get_world_size() == 1:
        yield caching
        return
    group = cast(dist.ProcessGroup, dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)))
    if not caching:
        dist.barrier(group=group)
    yield caching
    if caching:
        dist.barrier(group=group)
    dist.destroy_process_group(group)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way, for exact mid-epoch resume."""

    def __init__(self, dataset: Dataset, **kwargs: object) -> None:
        super().__init__(dataset, **kwargs)  # type: ignore[arg-type]
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ShardSampler(Sampler[int]):
    """Every sample exactly once across ranks (no padding), so evaluation counts each sample once."""

    def __init__(self, dataset_size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, dataset_size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededBatchSampler(Sampler[list]):
    """Batches of ``sampler``'s indices, each headed by its key ``(epoch, batch number)``, for
    ``SeededBatches`` in the DataLoader workers.

    Random augmentation in a worker then draws from generators seeded per (seed, epoch, rank,
    batch), not from streams that depend on which worker took which batch since the workers
    started: a run resumed mid-epoch (whose workers start afresh, at another batch) augments every
    batch exactly as an uninterrupted run does.
    """

    def __init__(self, sampler: ResumableDistributedSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[list]:
        epoch, number = self.sampler.epoch, self.sampler.start_index // self.batch_size
        indices = iter(self.sampler)
        while batch := list(itertools.islice(indices, self.batch_size)):
            yield [(epoch, number), *batch]
            number += 1

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class SeededBatches(Dataset):
    """``dataset`` read by batches from ``SeededBatchSampler``: before a batch, the worker seeds
    Python's, NumPy's and torch's generators from (seed, epoch, rank, batch number)."""

    def __init__(self, dataset: Dataset, seed: int, rank: int) -> None:
        self.dataset, self.seed, self.rank = dataset, seed, rank

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitems__(self, keys: list) -> list:
        (epoch, number), indices = keys[0], keys[1:]
        words = np.random.SeedSequence([self.seed % 2**64, epoch, self.rank, number]).generate_state(2, np.uint32)
        random.seed(int(words[0]) << 32 | int(words[1]))
        np.random.seed(int(words[0]))
        torch.manual_seed(int(words[0]) << 32 | int(words[1]))
        inner = getattr(self.dataset, "__getitems__", None)
        return inner(indices) if inner is not None else [self.dataset[index] for index in indices]

    def __getitem__(self, index: int):
        return self.dataset[index]
