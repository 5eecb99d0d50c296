"""``DIR/summary.json``: what a run did, written once by rank 0 at its end. A contract: the
launcher (``objective``, the sweep report, ``launcher.status``) and users' scripts read it.

A training run's keys:
    mode ("train"), world_size, nodes, gpus_per_node (ranks per node), backend, launcher,
    epochs (configured), epochs_run (fewer when early stopping ended the run), restarts (torchrun
    restarts and Slurm requeues the job needed), precision, matmul_precision, accumulate, lr (after
    optim.scale_lr), deterministic, cudnn_benchmark, compiled, global_step (optimizer steps),
    val_loss and val_NAME for each configured metric (val_acc for accuracy), best (save.best:
    {monitor, value}) where configured, train_samples_per_s (all ranks), wall_s, first_step_unix_s
    (every rank had taken one optimizer step by then), weights_sha256 (equal weights, equal digest).
An evaluation's (``trainer.mode=eval``):
    mode ("eval"), checkpoint, checkpoint_epoch, checkpoint_global_step, world_size, backend,
    val_samples, val_loss and val_NAME, wall_s, weights_sha256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint import weights_sha256
from trainer.contract import SUMMARY_FILE
from trainer.files import write_text_atomic


def training_summary(*, world_size: int, gpus_per_node: list[int], backend: str, launcher: str,
                     epochs: int, epochs_run: int, restarts: int, precision: str, accumulate: int,
                     lr: float, compiled: bool, global_step: int, val_metrics: dict[str, float],
                     train_samples_per_s: float, wall_s: float, first_step_unix_s: float,
                     model: torch.nn.Module, best: tuple[str, float | None] | None) -> dict[str, Any]:
    summary = {
        "mode": "train",
        "world_size": world_size,
        "nodes": len(gpus_per_node),
        "gpus_per_node": gpus_per_node,
        "backend": backend,
        "launcher": launcher,
        "epochs": epochs,
        "epochs_run": epochs_run,
        "restarts": restarts,
        "precision": precision,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "accumulate": accumulate,
        "lr": lr,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "compiled": compiled,
        "global_step": global_step,
        **val_metrics,
        "train_samples_per_s": train_samples_per_s,
        "wall_s": wall_s,
        "first_step_unix_s": first_step_unix_s,
        "weights_sha256": weights_sha256(model),
    }
    if best is not None:
        summary["best"] = {"monitor": best[0], "value": best[1]}
    return summary


def evaluation_summary(*, checkpoint: Path, trained: dict[str, Any], world_size: int, backend: str,
                       val_samples: int, val_metrics: dict[str, float], wall_s: float,
                       model: torch.nn.Module) -> dict[str, Any]:
    return {
        "mode": "eval",
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_epoch": trained["epoch"],
        "checkpoint_global_step": trained["global_step"],
        "world_size": world_size,
        "backend": backend,
        "val_samples": val_samples,
        **val_metrics,
        "wall_s": wall_s,
        "weights_sha256": weights_sha256(model),
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Atomically, with fsync, like the checkpoint: a reader sees the whole summary or none."""
    write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
