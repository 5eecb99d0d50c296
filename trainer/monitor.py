"""What rank 0 shows of a run: metrics.jsonl, TensorBoard scalars, and a progress bar on a terminal.

Every other rank gets a monitor that does nothing, so the training loop has no rank checks and
only one process writes files or draws.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainer.contract import METRICS_FILE, TENSORBOARD_DIR
from trainer.files import read_jsonl, write_text_atomic

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# Set by a launcher that passes this process's output on to a terminal through a pipe of its own.
CONSOLE_IS_TERMINAL_ENV = "LAUNCHER_CONSOLE_IS_TERMINAL"


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() or os.environ.get(CONSOLE_IS_TERMINAL_ENV) == "1"


class Monitor:
    """Rank 0's view of the run: one instance per run, on rank 0 only."""

    def __init__(self, run_dir: Path, progress_bar: Any, tensorboard: bool, tensorboard_every_steps: int,
                 resumed_step: int | None, keep_epochs_before: int) -> None:
        """``resumed_step``: the checkpoint's last completed optimizer step (None: not resumed);
        ``keep_epochs_before``: metrics.jsonl keeps the records of the epochs before this one (the
        checkpoint's), dropped only when this run writes its first record."""
        self.metrics_path = run_dir / METRICS_FILE
        # auto: a bar only on a terminal; in a log file it would be thousands of carriage returns.
        self.show_bar = progress_bar is True or (progress_bar == "auto" and stderr_is_terminal())
        self.keep_epochs_before = keep_epochs_before
        self.metrics_rewritten = False
        # purge_step: after a resume, TensorBoard hides what the crashed attempt logged past the
        # checkpoint (the steps after its last completed one; that step's points, the epoch's
        # among them, stay), so the curves do not fold back on themselves. A fresh start hides
        # what an earlier attempt without a checkpoint logged.
        self.purge_step = resumed_step + 1 if resumed_step is not None else 0
        self.tensorboard_dir: Path | None = run_dir / TENSORBOARD_DIR if tensorboard else None
        self._writer: SummaryWriter | None = None
        # Two scalars cost rank 0 about 50 us, a few percent of a small model's step, and every
        # rank waits for rank 0 at the next all-reduce: step scalars go out every N steps.
        self.tensorboard_every_steps = tensorboard_every_steps
        self.bar: tqdm | None = None

    def _charts(self) -> SummaryWriter | None:
        """TensorBoard's writer, made when the first point is written. Importing it takes about
        0.3 s: at the top of this module, the fork server would preload it before any rank could
        start, and every rank would wait for it before the first step."""
        if self._writer is None and self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.purge_step)
        return self._writer

    def _write_record(self, record: dict[str, Any]) -> None:
        """The first record of this run rewrites metrics.jsonl atomically: the records of the
        epochs the checkpoint covers, then this one (records an interrupted attempt logged past the
        checkpoint, and a torn last line, are dropped). Later records are appended. Either way the
        record is on disk (fsync) before the epoch's checkpoint is written."""
        line = json.dumps(record) + "\n"
        if self.metrics_rewritten:
            with self.metrics_path.open("a") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            return
        kept = []
        if self.metrics_path.exists():
            kept = [json.dumps(old) + "\n" for old in read_jsonl(self.metrics_path)
                    if isinstance(old.get("epoch"), int) and old["epoch"] < self.keep_epochs_before]
        write_text_atomic(self.metrics_path, "".join(kept) + line)
        self.metrics_rewritten = True

    def start_epoch(self, epoch: int, epochs: int, micro_batches: int, done: int) -> None:
        if self.show_bar:
            self.bar = tqdm(total=micro_batches, initial=done, desc=f"epoch {epoch + 1}/{epochs}",
                            unit="batch", dynamic_ncols=True, file=sys.stderr)

    def micro_batch(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def charts(self, global_step: int) -> bool:
        """Whether TensorBoard shows this optimizer step's loss and lr (every N steps); the
        trainer keeps those losses on the device and hands them over in `losses_read`."""
        return self.tensorboard_dir is not None and global_step % self.tensorboard_every_steps == 0

    def losses_read(self, charted: list[tuple[int, float, float]], loss: float, lr: float) -> None:
        """The losses the trainer has just read from the device, which it does at the logging
        interval, before a checkpoint and at the epoch's end (not every step, which would make
        the host wait for the GPU): each charted (global step, loss, lr) goes to TensorBoard under
        its own step, the last micro-batch's loss and lr to the bar."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
        writer = self._charts() if charted else None
        if writer is not None:
            for global_step, step_loss, step_lr in charted:
                writer.add_scalar("train/batch_loss", step_loss, global_step)
                writer.add_scalar("train/lr", step_lr, global_step)

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Close the bar, append the epoch's record to metrics.jsonl and TensorBoard."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._write_record(record)
        writer = self._charts()
        if writer is not None:
            for key, value in record.items():  # the losses, the configured metrics, samples/s
                if key not in ("epoch", "global_step", "lr"):
                    writer.add_scalar(f"epoch/{key}", value, record["global_step"])
            writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._writer is not None:
            self._writer.close()


class SilentMonitor(Monitor):
    """The monitor of every rank but 0."""

    def __init__(self) -> None:
        self.bar, self._writer, self.show_bar, self.tensorboard_dir = None, None, False, None

    def end_epoch(self, record: dict[str, Any]) -> None:
        pass
