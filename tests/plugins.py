"""Plug-ins the tests select through ``_target_``, the way users plug in their own classes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from trainer.data import SyntheticClassification
from trainer.models import MLP
from trainer.vision import MNISTData
from trainer.writer import WRITER_THREAD_NAME


class CountingSynthetic(SyntheticClassification):
    """Logs every ``prepare()`` call (rank, whether the cache existed) to ``root/prepare_calls``.

    ``delay_s`` makes preparation slow, like a large download.
    """

    def __init__(self, *args: object, delay_s: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.delay_s = delay_s

    def prepare(self) -> None:
        cached = self.cache_path.exists()
        time.sleep(self.delay_s)
        super().prepare()
        record = {"rank": int(os.environ["RANK"]), "local_rank": int(os.environ["LOCAL_RANK"]),
                  "cached": cached, "pid": os.getpid()}
        with open(self.cache_path.parent / "prepare_calls", "a") as log:
            log.write(json.dumps(record) + "\n")


class _RecordingDataset(Dataset):
    def __init__(self, inner: Dataset, path: Path) -> None:
        self.inner, self.path = inner, path

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        with open(self.path, "a") as log:
            log.write(f"{index}\n")
        return self.inner[index]


class IndexRecordingSynthetic(SyntheticClassification):
    """Each rank appends every training index it reads to ``root/train_indices_rank<R>``."""

    def datasets(self):
        train, val = super().datasets()
        path = self.cache_path.parent / f"train_indices_rank{os.environ['RANK']}"
        return _RecordingDataset(train, path), val


class FaultyMLP(MLP):
    """An MLP that misbehaves at one training-mode forward, to test failures and resume.

    ``fault_step`` counts training-mode forwards in this process; the first one is the trainer's
    gradient-bucket settling pass, so forward N is optimizer step N - 1.

    ``action``: ``raise`` (an exception on ``rank``), ``stall`` (rank ``rank`` stops responding
    for a minute, like a hung peer), ``usr1`` (rank ``rank`` gets Slurm's time-limit signal), or
    ``kill_job`` (rank ``rank`` SIGKILLs its launcher once its checkpoint in flight is written,
    like a machine going down; ranks follow by their parent-death signal). With a
    ``marker`` file the fault happens once: a resumed run finds the marker and trains normally.
    """

    def __init__(self, *args: object, fault_step: int = -1, rank: int = 0, action: str = "raise",
                 marker: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fault_step, self.fault_rank, self.action = fault_step, rank, action
        self.marker = Path(marker) if marker else None
        self.steps = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
            if self.steps == self.fault_step and int(os.environ["RANK"]) == self.fault_rank:
                self._fault()
        return super().forward(inputs)

    def _fault(self) -> None:
        if self.marker is not None:
            if self.marker.exists():
                return
            self.marker.write_text("faulted")
        if self.action == "stall":
            time.sleep(60)
        if self.action == "usr1":  # Slurm's "time limit near": the trainer checkpoints and stops
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        if self.action == "kill_job":  # the launcher (a warm rank's parent is its fork server)
            # After the checkpoint in flight lands, so which one a resume finds does not depend on
            # how fast the disk is (a crash mid-write: tests/test_checkpoint_writer.py).
            for thread in threading.enumerate():
                if thread.name == WRITER_THREAD_NAME:
                    thread.join(timeout=60)
            os.kill(int(os.environ["LAUNCHER_PARENT_PID"]), signal.SIGKILL)
            time.sleep(60)  # the parent-death signal ends us
        raise RuntimeError(f"deliberate fault at training step {self.steps}")


class PutMLP(MLP):
    """An MLP whose forward uses ``Tensor.put_``, an op with no deterministic kernel on CPU."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = super().forward(inputs)
        return logits + torch.zeros(logits.numel()).put_(torch.tensor([0]), torch.tensor([0.0])).view_as(logits)


class CountingMNIST(MNISTData):
    """MNIST that records, per rank, when ``prepare()`` ran and when ``datasets()`` was entered,
    into ``root/calls``: the tests check only the caching rank prepares, before anyone reads."""

    def _record(self, what: str) -> None:
        with open(self.root / "calls", "a") as log:
            log.write(json.dumps({"what": what, "rank": int(os.environ["RANK"]),
                                  "t": time.time()}) + "\n")

    def prepare(self) -> None:
        self._record("prepare_start")
        time.sleep(1.0)  # a slow download: a rank that did not wait would read before it ended
        super().prepare()
        self._record("prepare_end")

    def datasets(self):
        self._record("datasets")
        return super().datasets()


# --- Resume edge cases (tests/test_resume_edges.py) ------------------------------------------------

PICKLING_COLLECTIVES = ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
                        "send_object_list", "recv_object_list")


def _refuse_pickling_collectives() -> None:
    """Make every collective that pickles raise in this process (the trainer must not use them)."""
    import torch.distributed as dist

    def refuse(name: str):
        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"torch.distributed.{name} used: it unpickles what other ranks send")
        return refused

    for name in PICKLING_COLLECTIVES:
        setattr(dist, name, refuse(name))


class PickleFreeSynthetic(SyntheticClassification):
    """The synthetic data set, in a rank where collectives that pickle raise. ``hide_checkpoint``:
    ranks other than 0 do not see the checkpoint file (as on nodes without a shared run dir)."""

    def __init__(self, *args: object, hide_checkpoint: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _refuse_pickling_collectives()
        if hide_checkpoint and int(os.environ.get("RANK", "0")) != 0:
            import trainer.checkpoint

            trainer.checkpoint._sees = lambda *args: None  # type: ignore[assignment]


class _NoisyDataset(Dataset):
    def __init__(self, inner: Dataset, scale: float) -> None:
        self.inner, self.scale = inner, scale

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        features, label = self.inner[index]
        # Random augmentation from torch's global generator, in whichever process reads the sample.
        return features + self.scale * torch.randn(features.shape), label


class NoisySynthetic(SyntheticClassification):
    """The synthetic data set with random Gaussian noise added to every training sample on read."""

    def __init__(self, *args: object, augment_noise: float = 0.5, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.augment_noise = augment_noise

    def datasets(self):
        train, val = super().datasets()
        return _NoisyDataset(train, self.augment_noise), val


class MetricsBlockingMLP(FaultyMLP):
    """At training forward ``fault_step`` on rank ``rank``, a directory takes the place of
    ``marker`` (the run's metrics.jsonl): the next write of metrics.jsonl fails, as if the process
    died there."""

    def _fault(self) -> None:
        if self.marker is not None and not self.marker.exists():
            self.marker.mkdir(parents=True)
