"""Data: a no-network default data set, rank-0-first caching, and samplers that resume exactly."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler, TensorDataset

from trainer.env import DistEnv
from trainer.logs import get_logger

log = get_logger("data")


class SyntheticClassification:
    """Deterministic Gaussian-mixture classification (two clusters per class), cached as ``.npz``.

    Any data module with the same two methods plugs in through ``data.dataset._target_``:
    ``prepare()`` downloads/generates into the cache (called on the caching ranks only) and
    ``datasets()`` returns ``(train, val)`` read from the cache (called on every rank).
    """

    def __init__(self, root: str, num_samples: int, num_features: int, num_classes: int,
                 noise: float, val_fraction: float, seed: int) -> None:
        self.params = dict(num_samples=num_samples, num_features=num_features, num_classes=num_classes,
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
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, x_train=features[n_val:], y_train=labels[n_val:],
                 x_val=features[:n_val], y_val=labels[:n_val])
        os.replace(tmp, self.cache_path)
        log.info("generated synthetic data set (%d samples) into %s", p["num_samples"], self.cache_path)

    def datasets(self) -> tuple[Dataset, Dataset]:
        with np.load(self.cache_path) as arrays:
            train = TensorDataset(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]))
            val = TensorDataset(torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))
        return train, val


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
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
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
