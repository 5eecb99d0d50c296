"""Training options that must change the arithmetic exactly as documented (not just "it runs")."""

from __future__ import annotations

import torch

from tests.conftest import assert_ok

# 2560 samples, 20 % held out: 1024 per rank, so batches of 32 and 64 both tile an epoch exactly.
EVEN = ["data.dataset.num_samples=2560", "trainer.epochs=2", "launcher=mp_spawn", "gpus=2"]


def final_weights(launch) -> dict[str, torch.Tensor]:
    return torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_accumulating_two_half_batches_equals_one_full_batch(launcher, tmp_path):
    full = launcher.run(*EVEN, "data.batch_size=64", run_dir=tmp_path / "full")
    halves = launcher.run(*EVEN, "data.batch_size=32", "trainer.accumulate=2", run_dir=tmp_path / "halves")
    assert_ok(full)
    assert_ok(halves)
    assert full.summary()["global_step"] == halves.summary()["global_step"] == 32  # optimizer steps
    assert halves.summary()["accumulate"] == 2
    assert max_difference(final_weights(full), final_weights(halves)) < 1e-5
    plain_half = launcher.run(*EVEN, "data.batch_size=32", run_dir=tmp_path / "plain")
    assert_ok(plain_half)
    assert max_difference(final_weights(full), final_weights(plain_half)) > 1e-3, "the check cannot tell"


def test_bf16_autocast_on_cpu_trains_and_changes_the_arithmetic(launcher, tmp_path):
    fp32 = launcher.run(*EVEN, run_dir=tmp_path / "fp32")
    bf16 = launcher.run(*EVEN, "trainer.precision=bf16", run_dir=tmp_path / "bf16")
    assert_ok(fp32)
    assert_ok(bf16)
    assert bf16.summary()["precision"] == "bf16"
    assert bf16.summary()["weights_sha256"] != fp32.summary()["weights_sha256"], "autocast had no effect"
    assert abs(bf16.summary()["val_acc"] - fp32.summary()["val_acc"]) < 0.05


def test_clipping_to_a_tiny_norm_leaves_the_weights_where_no_learning_would(launcher, tmp_path):
    common = [*EVEN, "trainer.epochs=1", "checkpoint.every_epochs=1"]
    frozen = launcher.run(*common, "optim.lr=0", run_dir=tmp_path / "frozen")
    clipped = launcher.run(*common, "trainer.clip_grad_norm=1e-9", "optim.weight_decay=0",
                           run_dir=tmp_path / "clipped")
    assert_ok(frozen)
    assert_ok(clipped)
    assert max_difference(final_weights(frozen), final_weights(clipped)) < 1e-7
