"""The training worker, top to bottom: set up, prepare data, train, evaluate, checkpoint, report.

Run as one rank of a job (``python -m trainer RUN_DIR/config.yaml``); it reads its place in the job
from the environment contract only (RANK, WORLD_SIZE, LOCAL_RANK, ...), so any torchrun-compatible
launcher can start it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trainer import checkpoint
from trainer.curves import plot_curves
from trainer.data import ResumableDistributedSampler, ShardSampler, caching_rank_first
from trainer.distributed import (
    all_reduce_scalars,
    limit_cpu_threads,
    process_group,
    resolve_backend,
    seed_everything,
    select_device,
    settle_gradient_buckets,
)
from trainer.env import DistEnv
from trainer.logs import setup_logging
from trainer.precision import MixedPrecision
from trainer.preemption import (
    REQUEUED_EXIT_CODE,
    STOPPED_EXIT_CODE,
    StopRequest,
    StopSignals,
    ignore_stop_signals,
    requeue_this_job,
)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in `epoch`
    global_step: int = 0
    epoch_loss_sum: float = 0.0  # this rank's loss x samples so far in `epoch`
    epoch_samples: int = 0
    train_time_s: float = 0.0
    train_samples: int = 0  # this rank's samples over the whole run
    first_step_unix_s: float = 0.0  # when this rank finished its first optimizer step

    def start_epoch(self, epoch: int) -> Progress:
        """The same run, at the beginning of ``epoch``: the epoch-local counters start over."""
        return replace(self, epoch=epoch, step_in_epoch=0, epoch_loss_sum=0.0, epoch_samples=0)


def build_loaders(cfg: DictConfig, env: DistEnv, train_set: Any, val_set: Any,
                  device: torch.device) -> tuple[DataLoader, DataLoader, ResumableDistributedSampler]:
    sampler = ResumableDistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, shuffle=cfg.data.shuffle,
        seed=cfg.seed, drop_last=cfg.data.drop_last,
    )
    workers = cfg.data.num_workers
    common = dict(
        batch_size=cfg.data.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # Explicit: a rank started by torch.multiprocessing inherits its "spawn" default, which
        # would re-import torch in every worker; the same setting in every launch mode.
        multiprocessing_context=cfg.data.worker_start_method if workers > 0 else None,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
    train_loader = DataLoader(train_set, sampler=sampler, **common)
    val_loader = DataLoader(val_set, sampler=ShardSampler(len(val_set), env.rank, env.world_size), **common)
    return train_loader, val_loader, sampler


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Loss and accuracy over the whole validation set: sums reduced over ranks, then divided."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = model(inputs)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(dim=1) == targets).sum().item()
        count += targets.numel()
    model.train()
    loss_sum, correct, count = all_reduce_scalars([loss_sum, correct, count], device)
    return loss_sum / count, correct / count


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def resume_from(cfg: DictConfig, run_dir: Path, restart: int) -> Path | None:
    """The checkpoint to start from (read on rank 0 only).

    A restarted attempt (torchrun ``max_restarts``, ``restart`` > 0) always continues from this
    job's own last checkpoint when there is one: restarting from scratch, or from the checkpoint
    the first attempt was started from, would throw the work done since away.
    """
    own = checkpoint_path(run_dir)
    if (cfg.resume == "auto" or restart > 0) and own.exists():
        return own
    if cfg.resume in (None, "none", "auto"):
        return None
    return Path(cfg.resume)


def save_checkpoint(path: Path, env: DistEnv, model: torch.nn.Module, optimizer: Any,
                    scheduler: Any, scaler: torch.amp.GradScaler, progress: Progress,
                    cfg: DictConfig) -> None:
    """Collective (every rank's RNG state is gathered); rank 0 writes."""
    rng_states = checkpoint.gather_rng_states()
    if env.is_main:
        checkpoint.save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),  # empty unless fp16
                "progress": asdict(progress),
                "rng": rng_states,
                "world_size": env.world_size,
                "seed": cfg.seed,
            },
            path,
        )


def trim_metrics(metrics_path: Path, before_epoch: int) -> None:
    """On resume, drop records of epochs the checkpoint does not cover (they will be redone)."""
    if not metrics_path.exists():
        return
    kept = [line for line in metrics_path.read_text().splitlines()
            if line and json.loads(line)["epoch"] < before_epoch]
    metrics_path.write_text("".join(line + "\n" for line in kept))


def processes_per_node(env: DistEnv) -> list[int]:
    """How many ranks each node ran, as the ranks themselves report it (collective)."""
    reports: list[Any] = [None] * env.world_size
    dist.all_gather_object(reports, (env.node_rank, env.local_world_size))
    return [count for _, count in sorted(set(reports))]


def stop_for_slurm(stop: StopRequest, env: DistEnv, log: logging.Logger, max_requeues: int) -> int:
    """After the stop checkpoint: rank 0 requeues the job if the time limit is the reason; every
    rank learns the outcome and returns its exit code."""
    dist.barrier()  # the checkpoint is on disk before the job leaves the queue's hands
    requeued = [False]
    if env.is_main:
        log.warning("stopping after step checkpoint: %s received", stop.name)
        requeued[0] = stop.time_limit and requeue_this_job(max_requeues)
    dist.broadcast_object_list(requeued, src=0)
    return REQUEUED_EXIT_CODE if requeued[0] else STOPPED_EXIT_CODE


def train(cfg: DictConfig) -> int:
    """The whole run on this rank; returns the process's exit code."""
    start = time.perf_counter()
    env = DistEnv.from_environ()
    run_dir = Path(cfg.run_dir)
    log = setup_logging(env.rank, run_dir)
    backend = resolve_backend(cfg.backend)
    device = select_device(backend, env)
    threads = limit_cpu_threads(env)

    with process_group(env, backend, cfg.init_timeout, cfg.collective_timeout):
        log.info("rank %d/%d up: backend=%s device=%s threads/rank=%d", env.rank, env.world_size,
                 backend, device, threads)
        seed_everything(cfg.seed)

        # Data: prepared once per scope, behind a barrier that outlasts slow downloads.
        data_module = instantiate(cfg.data.dataset)
        with caching_rank_first(env, cfg.data.cache_scope, cfg.data.prepare_timeout) as caching:
            if caching:
                data_module.prepare()
        train_set, val_set = data_module.datasets()
        train_loader, val_loader, sampler = build_loaders(cfg, env, train_set, val_set, device)

        # Model, optimizer, schedule.
        model = instantiate(cfg.model).to(device)
        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = instantiate(cfg.optim, params=model.parameters())
        precision = MixedPrecision.from_config(cfg.trainer.precision, device)
        scheduler = (instantiate(cfg.sched.scheduler, optimizer=optimizer)
                     if cfg.sched.scheduler is not None else None)
        step_scheduler_each_step = cfg.sched.interval == "step"

        # Resume: rank 0 reads, everyone restores the same state (and its own RNG).
        progress = Progress()
        state = checkpoint.load_on_rank0(resume_from(cfg, run_dir, env.restart))
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                precision.scaler.load_state_dict(state["scaler"])
            progress = Progress(**state["progress"])
            if state["world_size"] == env.world_size:
                checkpoint.set_rng_state(state["rng"][env.rank])
            else:
                # Another world size shards the data differently: a mid-epoch position is
                # meaningless, so that epoch restarts; exactness is only promised for the same size.
                log.warning("checkpoint from world size %d, now %d: RNG streams not restored, "
                            "epoch %d restarts from its beginning", state["world_size"],
                            env.world_size, progress.epoch)
                progress = progress.start_epoch(progress.epoch)
            log.info("resumed at epoch %d, step %d of that epoch (global step %d)",
                     progress.epoch, progress.step_in_epoch, progress.global_step)
        metrics_path = run_dir / "metrics.jsonl"
        if env.is_main:
            trim_metrics(metrics_path, progress.epoch)

        # Plain values: OmegaConf lookups cost tens of microseconds, too much for the step loop.
        epochs, log_every = cfg.trainer.epochs, cfg.trainer.log_every_steps
        every_steps, every_epochs = cfg.checkpoint.every_steps, cfg.checkpoint.every_epochs
        batch_size = cfg.data.batch_size
        stop_signals = StopSignals(cfg.trainer.stop_check_steps).install() if StopSignals.wanted() else None
        stop = None
        buckets_settled = False
        val_loss, val_acc = math.nan, math.nan
        accumulate, clip_grad_norm = cfg.trainer.accumulate, cfg.trainer.clip_grad_norm
        micro_batches = math.ceil(sampler.num_samples / batch_size)  # per epoch, on this rank
        for epoch in range(progress.epoch, epochs):
            sampler.set_epoch(epoch, start_index=progress.step_in_epoch * batch_size)
            epoch_start = time.perf_counter()
            for inputs, targets in train_loader:
                inputs = inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if not buckets_settled:  # once per process, before its first real step
                    settle_gradient_buckets(ddp_model, inputs[:1])
                    buckets_settled = True
                # Gradient accumulation: DDP syncs only on the micro-batch that ends a group (or
                # the epoch); the loss is divided so the group's gradient is the mean over it.
                progress.step_in_epoch += 1
                ends_group = progress.step_in_epoch % accumulate == 0 or progress.step_in_epoch == micro_batches
                with contextlib.nullcontext() if ends_group else ddp_model.no_sync():
                    with precision.autocast():
                        loss = F.cross_entropy(ddp_model(inputs), targets)
                    precision.scaler.scale(loss / accumulate).backward()
                batch = targets.numel()
                progress.epoch_loss_sum += loss.item() * batch
                progress.epoch_samples += batch
                progress.train_samples += batch
                if not ends_group:
                    continue
                if clip_grad_norm:
                    precision.scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                precision.scaler.step(optimizer)
                precision.scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if scheduler is not None and step_scheduler_each_step:
                    scheduler.step()

                if not progress.first_step_unix_s:
                    progress.first_step_unix_s = time.time()
                progress.global_step += 1
                if log_every and progress.global_step % log_every == 0:
                    log.info("epoch %d step %d loss %.4f", epoch, progress.step_in_epoch, loss.item())
                if every_steps and progress.global_step % every_steps == 0:
                    progress.train_time_s += time.perf_counter() - epoch_start
                    epoch_start = time.perf_counter()
                    save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler, progress, cfg)
                if stop_signals and (stop := stop_signals.agreed(progress.global_step, device)):
                    break
            progress.train_time_s += time.perf_counter() - epoch_start
            if stop:  # Slurm's time limit or a cancel: a mid-epoch checkpoint, then leave
                save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler, progress, cfg)
                del ddp_model, model, optimizer, scheduler, train_loader, val_loader
                return stop_for_slurm(stop, env, log, cfg.slurm.max_requeues)

            if scheduler is not None and not step_scheduler_each_step:
                scheduler.step()
            loss_sum, samples = all_reduce_scalars([progress.epoch_loss_sum, progress.epoch_samples], device)
            val_loss, val_acc = evaluate(ddp_model, val_loader, device)
            record = {
                "epoch": epoch,
                "global_step": progress.global_step,
                "train_loss": loss_sum / max(samples, 1),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": optimizer.param_groups[0]["lr"],
            }
            log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_acc=%.4f lr=%.4g", epoch + 1,
                     epochs, record["train_loss"], val_loss, val_acc, record["lr"])
            progress = progress.start_epoch(epoch + 1)
            if every_epochs and (epoch + 1) % every_epochs == 0:
                save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler, progress, cfg)
            if env.is_main:
                with metrics_path.open("a") as file:
                    file.write(json.dumps(record) + "\n")

        if math.isnan(val_loss):  # resumed after the last epoch: report the final model anyway
            val_loss, val_acc = evaluate(ddp_model, val_loader, device)
        total_samples, time_sum = all_reduce_scalars([progress.train_samples, progress.train_time_s], device)
        mean_train_time = time_sum / env.world_size
        (first_step_done,) = all_reduce_scalars([progress.first_step_unix_s], device, dist.ReduceOp.MAX)
        gpus_per_node = processes_per_node(env)
        summary = {
            "world_size": env.world_size,
            "nodes": len(gpus_per_node),
            "gpus_per_node": gpus_per_node,
            "backend": backend,
            "launcher": OmegaConf.select(cfg, "launcher.name", default="external"),
            "epochs": epochs,
            "restarts": env.restart,
            "precision": precision.name,
            "accumulate": accumulate,  # torchrun restarts this job needed (launcher.max_restarts)
            "global_step": progress.global_step,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "train_samples_per_s": total_samples / mean_train_time if mean_train_time > 0 else 0.0,
            "wall_s": time.perf_counter() - start,
            "first_step_unix_s": first_step_done,  # every rank had taken one optimizer step by then
            "weights_sha256": checkpoint.weights_sha256(model),
        }
        if env.is_main:
            tmp = run_dir / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            os.replace(tmp, run_dir / "summary.json")
            if metrics_path.exists():
                plot_curves(metrics_path, run_dir / "curves.png")
            log.info("done: val_acc=%.4f val_loss=%.4f %.0f samples/s, summary in %s",
                     val_acc, val_loss, summary["train_samples_per_s"], run_dir / "summary.json")
        del ddp_model, model, optimizer, scheduler, train_loader, val_loader
    if stop_signals:
        stop_signals.uninstall()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python -m trainer RUN_DIR/config.yaml")
    return train(OmegaConf.load(argv[0]))

