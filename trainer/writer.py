"""Checkpoints written off the critical path: a snapshot in CPU memory, then one background thread.

Writing a checkpoint (serialise, write, fsync, rename, fsync of the directory) takes milliseconds to
seconds, the fsync most of it; done in the training thread it stalls every rank, since the next
collective waits for rank 0. So rank 0 copies the state to CPU memory (the live tensors keep
changing with the next optimizer step) and hands the copy to a single writer thread, which does the
atomic write while training goes on.

- At most one write is in flight: a new checkpoint first waits for the previous one, so the files
  change in the order the checkpoints were taken and at most one snapshot is held in memory.
- An exception in the writer is never lost: it is raised in the training thread at the next
  checkpoint or at ``wait()`` (the run's end, a stop for Slurm).
- A crash mid-write leaves the previous checkpoint whole: the writer only ever replaces a file by a
  rename of a complete, fsynced temporary file (``trainer.files.write_atomic``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

# The writer thread's name: what a debugger, py-spy or a test looks for.
WRITER_THREAD_NAME = "checkpoint-writer"


def snapshot(value: Any) -> Any:
    """``value`` with every tensor copied to CPU memory and every container copied: nothing in the
    result shares storage or a mutable container with the live training state."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    if isinstance(value, tuple):
        return tuple(snapshot(item) for item in value)
    return value  # numbers, strings, None: immutable


class BackgroundWriter:
    """Runs write jobs one at a time in a background thread; ``submit`` returns at once."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Wait for the previous job (raising its error, if any), then start ``job`` in the
        background."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name=WRITER_THREAD_NAME)
        self._thread.start()

    def wait(self) -> None:
        """Block until the job in flight is done; raise the exception it ended with."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"writing a checkpoint failed: {error}") from error

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - handed to the training thread, not lost
            self._error = error
