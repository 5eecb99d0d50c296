"""Run management a user expects: rotated checkpoints, the best one kept, early stopping decided by
all ranks together, and freezing part of a model for fine-tuning."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from tests.conftest import assert_ok

pytestmark = pytest.mark.slow  # real jobs: several processes each


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_keep_last_best_and_early_stop(launcher):
    launch = launcher.run("gpus=3", "trainer.epochs=12", "data.dataset.num_samples=3000", "trainer.curves=false",
                          "save.every_steps=7", "save.keep_last=3", "save.best.monitor=val_acc",
                          "trainer.early_stop.monitor=val_loss", "trainer.early_stop.patience=2",
                          "optim.lr=0.5")  # a high lr: the validation loss turns up early
    assert_ok(launch)
    summary, epochs = launch.summary(), records(launch.run_dir)
    folder = launch.run_dir / "checkpoints"

    # Early stop: the last `patience` epochs did not improve on the best val_loss before them.
    losses = [record["val_loss"] for record in epochs]
    assert summary["epochs_run"] == len(epochs) < 12, "early stopping never stopped the run"
    best_before = min(losses[:-2])
    assert all(loss >= best_before for loss in losses[-2:]), losses
    assert f"early stop after epoch {len(epochs)}" in launch.stderr
    # Every rank stopped after the same epoch: the job ended cleanly, and the last checkpoint is
    # that epoch's end.
    last = torch.load(folder / "last.pt", weights_only=True)
    assert last["progress"]["epoch"] == len(epochs) and last["progress"]["step_in_epoch"] == 0

    # keep_last=3: three step files, the newest another name of last.pt.
    steps = sorted(folder.glob("step-*.pt"))
    assert len(steps) == 3, [path.name for path in steps]
    assert steps[-1].stat().st_ino == (folder / "last.pt").stat().st_ino
    assert int(steps[-1].stem.split("-")[1]) == summary["global_step"]

    # best.pt: the epoch with the highest val_acc (mode auto: max for an accuracy).
    accuracies = [record["val_acc"] for record in epochs]
    best_epoch = max(range(len(epochs)), key=lambda index: (accuracies[index], -index))
    best = torch.load(folder / "best.pt", weights_only=True)
    assert best["progress"]["epoch"] == best_epoch + 1, (accuracies, best["progress"]["epoch"])
    assert summary["best"] == {"monitor": "val_acc", "value": accuracies[best_epoch]}


BATCHNORM_MODEL = textwrap.dedent('''
    from torch import nn


    class Tower(nn.Module):
        def __init__(self, in_features: int, num_classes: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Linear(in_features, 32), nn.BatchNorm1d(32), nn.ReLU())
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.head(self.stem(x))
''')


def test_freeze_keeps_weights_and_normalisation_statistics(launcher):
    (launcher.workdir / "finetune.py").write_text(BATCHNORM_MODEL)
    model = ["model=finetune.Tower", "+model.in_features=auto", "+model.num_classes=auto",
             "data.dataset.num_samples=1024", "save.keep_last=2", "trainer.epochs=2", "trainer.curves=false"]
    dry = launcher.run(*model, "+model.freeze=[stem]", "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    assert "model=finetune.Tower(in_features='auto', num_classes='auto') freeze=['stem']" in dry.stdout
    launch = launcher.run(*model, "+model.freeze=[stem]")
    assert_ok(launch)
    first, second = (torch.load(path, weights_only=True) for path in
                     sorted((launch.run_dir / "checkpoints").glob("step-*.pt")))
    for key, tensor in first["model"].items():
        if key.startswith("stem."):  # weights and BatchNorm's running statistics alike
            assert torch.equal(tensor, second["model"][key]), f"frozen {key} changed"
    assert not torch.equal(first["model"]["head.weight"], second["model"]["head.weight"])
    final = torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(final["stem.1.running_mean"], torch.zeros(32)), "BatchNorm left eval mode"
    optimizer = second["optimizer"]
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == 2  # head's weight, bias
    unknown = launcher.run(*model, "+model.freeze=[trunk]", run_dir=launcher.workdir / "unknown")
    assert unknown.returncode != 0 and "the model has no submodule 'trunk'" in unknown.stderr
