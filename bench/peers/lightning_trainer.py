"""The peers' workload under Lightning's ``Trainer``, written as its documentation shows.

``strategy="ddp"`` on ``accelerator="cpu"`` with ``devices=N``: started with plain ``python``, the
Trainer's own launcher runs this script again for ranks 1..N-1 when ``fit`` starts. Training
goes through ``training_step``/``configure_optimizers`` (the schedule stepped every optimizer
step), evaluation through ``validation_step`` after every epoch. Lightning replaces the loaders'
samplers with ``DistributedSampler``s seeded from ``seed_everything``, so every rank reads the same
batches as under the baseline's sampler. What a plain run would add and the others do not do is
off: logger, checkpoints, progress bar, model summary, the sanity validation before training.

    python bench/peers/lightning_trainer.py --procs 2 --data X.npz --epochs 3 --summary out/summary.json
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from workload import (
    StepClock,
    all_reduce,
    arguments,
    cosine,
    datasets,
    model_for,
    set_threads,
    sgd,
    write_summary,
)


class Classifier(L.LightningModule):
    """The MLP with its loss, optimizer and schedule; it times its own steps (``StepClock``) and
    writes the summary at the end of training, while the process group is still up."""

    def __init__(self, net: nn.Module, epochs: int, summary_path: Path) -> None:
        super().__init__()
        self.net, self.epochs, self.summary_path = net, epochs, summary_path
        self.clock = StepClock()
        self.val_sums = [0.0, 0.0, 0.0]  # loss sum, correct, count: reduced over ranks per epoch
        self.val_loss = self.val_acc = float("nan")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(self.net(inputs), targets)

    def configure_optimizers(self) -> dict[str, object]:
        optimizer = sgd(self.parameters())
        scheduler = cosine(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        self.clock.start_epoch()

    def on_train_batch_end(self, outputs: object, batch: tuple[torch.Tensor, torch.Tensor],
                           batch_idx: int) -> None:
        self.clock.step_done(batch[1].numel())

    def on_train_epoch_end(self) -> None:
        self.clock.end_epoch()

    def on_validation_epoch_start(self) -> None:
        self.val_sums = [0.0, 0.0, 0.0]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.net(inputs)
        self.val_sums[0] += F.cross_entropy(logits, targets, reduction="sum").item()
        self.val_sums[1] += (logits.argmax(dim=1) == targets).sum().item()
        self.val_sums[2] += targets.numel()

    def on_validation_epoch_end(self) -> None:
        loss_sum, correct, count = all_reduce(self.val_sums)
        self.val_loss, self.val_acc = loss_sum / count, correct / count

    def on_train_end(self) -> None:
        write_summary(self.clock, self.net, self.epochs, self.val_loss, self.val_acc,
                      self.summary_path)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, required=True, help="CPU processes (ranks)")
    args = parser.parse_args()
    set_threads(args.procs)
    L.seed_everything(args.seed, verbose=False)
    train_set, val_set = datasets(args.data)
    module = Classifier(model_for(train_set), args.epochs, args.summary)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.procs, strategy="ddp", max_epochs=args.epochs,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
                DataLoader(val_set, batch_size=args.batch_size))


if __name__ == "__main__":
    main()
