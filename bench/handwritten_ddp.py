"""The baseline for ``bench/launch_overhead.py``: the DDP script a user would write by hand.

Plain torch only (nothing from launcher/ or trainer/), so the comparison measures what the launcher
and trainer add. Per step it does the same work as ``trainer/train.py`` with the default configs:
same MLP, same cached data, DistributedSampler, SGD with a cosine schedule stepped after every
optimizer step (the default ``sched=cosine``, no warm-up), a loss
``.item()`` per step, and per-epoch evaluation over a sharded validation set. With the same seed
it ends with bit-identical weights, which the bench checks. ``--checkpoint`` adds what a user
would write for ``save.every_epochs=1`` (``bench/many_epochs.py``): rank 0 ``torch.save``s model,
optimizer and schedule to that file after every epoch's evaluation, synchronously.

    torchrun --standalone --nproc-per-node=2 bench/handwritten_ddp.py --data X.npz --epochs 3 \\
        --summary out/summary.json
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def mlp(in_features: int, num_classes: int, hidden: int = 128, depth: int = 2) -> nn.Sequential:
    """Same layers, in the same order (so the same initialisation), as ``trainer.models.MLP``."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def all_reduce(values: list[float], op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Loss and accuracy over the whole validation set (per-rank sums, then one all_reduce)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for inputs, targets in loader:
        logits = model(inputs)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(dim=1) == targets).sum().item()
        count += targets.numel()
    model.train()
    loss_sum, correct, count = all_reduce([loss_sum, correct, count])
    return loss_sum / count, correct / count


def weights_sha256(model: nn.Module) -> str:
    """Digest of the state_dict bytes in key order, computed as the trainer's summary does."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def train(args: argparse.Namespace) -> None:
    """Train, evaluate each epoch, and have rank 0 write the summary."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)

    with np.load(args.data) as arrays:
        train_set = TensorDataset(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]))
        val_set = TensorDataset(torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, seed=args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=args.batch_size,
                            sampler=range(rank, len(val_set), world_size))

    num_classes = int(train_set.tensors[1].max()) + 1
    model = mlp(train_set.tensors[0].shape[1], num_classes)
    ddp_model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    total_steps = args.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))

    first_step_unix_s = 0.0
    train_time_s, train_samples, global_step = 0.0, 0, 0
    val_loss, val_acc = float("nan"), float("nan")
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        loss_sum, samples = 0.0, 0
        epoch_start = time.perf_counter()
        for inputs, targets in train_loader:
            loss = F.cross_entropy(ddp_model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if not first_step_unix_s:
                first_step_unix_s = time.time()
            global_step += 1
            loss_sum += loss.item() * targets.numel()
            samples += targets.numel()
        train_time_s += time.perf_counter() - epoch_start
        train_samples += samples

        loss_sum, samples = all_reduce([loss_sum, samples])
        val_loss, val_acc = evaluate(ddp_model, val_loader)
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} train_loss={loss_sum / samples:.4f} "
                  f"val_loss={val_loss:.4f} val_acc={val_acc:.4f}", flush=True)
            if args.checkpoint is not None:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch + 1}, args.checkpoint)

    total_samples, time_sum = all_reduce([train_samples, train_time_s])
    (first_step_done,) = all_reduce([first_step_unix_s], dist.ReduceOp.MAX)
    mean_train_time = time_sum / world_size
    if rank == 0:
        summary = {
            "world_size": world_size,
            "epochs": args.epochs,
            "global_step": global_step,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "train_samples_per_s": total_samples / mean_train_time if mean_train_time > 0 else 0.0,
            "first_step_unix_s": first_step_done,
            "weights_sha256": weights_sha256(model),
        }
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the trainer's synthetic-*.npz")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--summary", type=Path, required=True, help="JSON written by rank 0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, help="rank 0 saves here after every epoch")
    args = parser.parse_args()

    local_world_size = int(os.environ["LOCAL_WORLD_SIZE"])
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world_size))
    dist.init_process_group("gloo")
    train(args)
    # A DDP model still alive when the group is destroyed can abort the process at exit
    # ("terminate called without an active exception"): collect it, wait for all, then tear down.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
