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
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from trainer import checkpoint, resume
from trainer.curves import plot_curves
from trainer.data import (
    ResumableDistributedSampler,
    SeededBatches,
    SeededBatchSampler,
    ShardSampler,
    caching_rank_first,
)
from trainer.distributed import (
    all_reduce_scalars,
    configure_determinism,
    limit_cpu_threads,
    process_group,
    resolve_backend,
    seed_everything,
    select_device,
    settle_gradient_buckets,
)
from trainer.env import DistEnv
from trainer.files import write_text_atomic
from trainer.logs import setup_logging
from trainer.monitor import Monitor, SilentMonitor
from trainer.options import MODES
from trainer.precision import MixedPrecision
from trainer.preemption import (
    REQUEUED_EXIT_CODE,
    STOPPED_EXIT_CODE,
    StopRequest,
    StopSignals,
    ignore_stop_signals,
    requeue_this_job,
)
from trainer.schedules import build_optimizer, build_scheduler


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    step_in_epoch: int = 0  # micro-batches already taken in `epoch` (the sampler's position)
    global_step: int = 0
    epoch_loss_sum: float = 0.0  # this rank's loss x samples in `epoch` (up to the last UnreadLosses.read)
    epoch_samples: int = 0
    epoch_time_s: float = 0.0  # this rank's training time in `epoch` (evaluation excluded)
    train_time_s: float = 0.0
    train_samples: int = 0  # this rank's samples over the whole run
    first_step_unix_s: float = 0.0  # when this rank finished its first optimizer step

    def start_epoch(self, epoch: int) -> Progress:
        """The same run, at the beginning of ``epoch``: the epoch-local counters start over."""
        return replace(self, epoch=epoch, step_in_epoch=0, epoch_loss_sum=0.0, epoch_samples=0,
                       epoch_time_s=0.0)

    def add_time(self, seconds: float) -> None:
        self.epoch_time_s += seconds
        self.train_time_s += seconds

    # The counters that differ between ranks: each rank's own are checkpointed (one row per rank).
    PER_RANK = ("epoch_loss_sum", "epoch_samples", "epoch_time_s", "train_time_s", "train_samples",
                "first_step_unix_s")

    def gather_per_rank(self, device: torch.device) -> torch.Tensor:
        """Every rank's own counters, a float64 row per rank (collective)."""
        mine = torch.tensor([float(getattr(self, name)) for name in self.PER_RANK], dtype=torch.float64,
                            device=device)
        rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, mine)
        return torch.stack(rows).cpu()

    def with_own(self, row: torch.Tensor) -> Progress:
        """This progress with this rank's own counters from its checkpointed row."""
        values = row.tolist()
        return replace(self, **{name: type(getattr(self, name))(value)
                                for name, value in zip(self.PER_RANK, values, strict=True)})


class UnreadLosses:
    """This rank's training losses, kept on the device until the host reads them.

    Reading a device tensor (``loss.item()``) waits for every kernel queued before it: once per
    micro-batch, that would leave the GPU idle while the host prepares the next step. So each
    micro-batch's loss stays on the device as it is (one scalar each), and `read` brings the
    unread ones over in one transfer: at the logging interval (``trainer.log_every_steps``),
    before a checkpoint and at the epoch's end. The host then adds them up as Python floats in the
    order they came, so the epoch's sum is the very number that reading each loss at once gives.
    """

    def __init__(self) -> None:
        self.unread: list[tuple[torch.Tensor, int, float]] = []  # (loss, samples, lr) per micro-batch
        self.charted: list[tuple[int, int]] = []  # (global step, index in unread) for TensorBoard

    def add(self, loss: torch.Tensor, samples: int, lr: float) -> None:
        """A micro-batch's mean loss over ``samples``, and the lr its optimizer step uses."""
        self.unread.append((loss.detach(), samples, lr))

    def chart(self, global_step: int) -> None:
        """TensorBoard charts the last micro-batch's loss and lr as this optimizer step's."""
        self.charted.append((global_step, len(self.unread) - 1))

    def read(self, progress: Progress, monitor: Monitor) -> float:
        """One transfer: the losses added into ``progress``, the charted ones and the last one to
        ``monitor``; returns the last micro-batch's loss (nan when none came since the last read)."""
        if not self.unread:
            return math.nan
        values = torch.stack([loss for loss, _, _ in self.unread]).tolist()
        for value, (_, samples, _) in zip(values, self.unread, strict=True):
            progress.epoch_loss_sum += value * samples
        charted = [(step, values[index], self.unread[index][2]) for step, index in self.charted]
        monitor.losses_read(charted, values[-1], self.unread[-1][2])
        self.unread.clear()
        self.charted.clear()
        return values[-1]


@dataclass
class Worker:
    """This process's place in the job and what it runs on."""

    env: DistEnv
    run_dir: Path
    log: logging.Logger
    backend: str
    device: torch.device


@contextlib.contextmanager
def started(cfg: DictConfig) -> Iterator[Worker]:
    """Logging, determinism, device and process group: the same start for training and evaluation."""
    env = DistEnv.from_environ()
    run_dir = Path(cfg.run_dir)
    log = setup_logging(env.rank, run_dir)
    configure_determinism(cfg.deterministic, cfg.cudnn_benchmark)
    # high: float32 matmuls on TF32 tensor cores (Ampere and later), several times the fp32 rate
    # for a 10-bit mantissa; medium: bf16. highest, the default, keeps them exact fp32.
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    backend = resolve_backend(cfg.backend)
    device = select_device(backend, env)
    threads = limit_cpu_threads(env)
    with process_group(env, backend, cfg.init_timeout, cfg.collective_timeout):
        log.info("rank %d/%d up: backend=%s device=%s threads/rank=%d", env.rank, env.world_size,
                 backend, device, threads)
        seed_everything(cfg.seed)
        yield Worker(env, run_dir, log, backend, device)


def prepare_data(cfg: DictConfig, env: DistEnv) -> tuple[Dataset, Dataset]:
    """Prepared (downloaded, generated) once per cache scope, behind a barrier that outlasts slow
    downloads; then every rank opens the cache."""
    data_module = instantiate(cfg.data.dataset)
    with caching_rank_first(env, cfg.data.cache_scope, cfg.data.prepare_timeout) as caching:
        if caching:
            data_module.prepare()
    return data_module.datasets()


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    model = instantiate(cfg.model).to(device)
    if cfg.trainer.channels_last:  # NHWC: faster convolutions on tensor cores and oneDNN
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(tensor: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    if channels_last and tensor.dim() == 4:
        return tensor.to(device, non_blocking=True, memory_format=torch.channels_last)
    return tensor.to(device, non_blocking=True)


def on_device(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
              channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's ``(inputs, targets)`` on ``device``, each batch's copy overlapping the compute
    of the batch before it.

    On CUDA the batch (pinned by the loader) is copied asynchronously on a side stream, and the
    compute stream waits for that copy only where it reaches the batch: as the step loop never waits
    for the GPU, the host queues batch k+1's copy while the GPU still computes batch k, one batch
    ahead. The loader itself is not read ahead: a batch fetched before the step in front of it is
    checkpointed would have drawn its augmentation (without workers, from this process's RNG)
    before the RNG state the checkpoint saves, and a resumed run would augment it differently.
    On CPU there is nothing to copy: the batches pass through in the loader's order.
    """
    if device.type != "cuda":
        for inputs, targets in loader:
            yield to_device(inputs, device, channels_last), to_device(targets, device, False)
        return
    copies, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    for inputs, targets in loader:
        with torch.cuda.stream(copies):
            batch = to_device(inputs, device, channels_last), to_device(targets, device, False)
        compute.wait_stream(copies)
        for tensor in batch:
            tensor.record_stream(compute)  # its memory is reused only once the compute stream is done
        yield batch


def build_loaders(cfg: DictConfig, env: DistEnv, train_set: Any, val_set: Any,
                  device: torch.device) -> tuple[DataLoader, DataLoader, ResumableDistributedSampler]:
    sampler = ResumableDistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, shuffle=cfg.data.shuffle,
        seed=cfg.seed, drop_last=cfg.data.drop_last,
    )
    workers = cfg.data.num_workers
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # Explicit: a rank started by torch.multiprocessing inherits its "spawn" default, which
        # would re-import torch in every worker; the same setting in every launch mode.
        multiprocessing_context=cfg.data.worker_start_method if workers > 0 else None,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
    # Each loader draws its workers' base seed from a generator of its own, not from the global
    # one: a resumed run, which starts its iterators at other points, keeps the global streams.
    generators = [torch.Generator().manual_seed((cfg.seed * 1_000_003 + env.rank * 2 + kind) % 2**63)
                  for kind in (0, 1)]
    if workers > 0:
        # Workers seed their generators per batch (seed, epoch, rank, batch number), so random
        # augmentation does not depend on where a run started (see SeededBatchSampler). Without
        # workers, augmentation draws from this process's generators, which checkpoints restore.
        train_loader = DataLoader(SeededBatches(train_set, cfg.seed, env.rank),
                                  batch_sampler=SeededBatchSampler(sampler, cfg.data.batch_size),
                                  generator=generators[0], **common)
    else:
        train_loader = DataLoader(train_set, sampler=sampler, batch_size=cfg.data.batch_size,
                                  generator=generators[0], **common)
    val_loader = DataLoader(val_set, sampler=ShardSampler(len(val_set), env.rank, env.world_size),
                            batch_size=cfg.data.batch_size, generator=generators[1], **common)
    return train_loader, val_loader, sampler


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             channels_last: bool) -> tuple[float, float]:
    """Loss and accuracy over the whole validation set: sums reduced over ranks, then divided.

    The sums stay on the device until the end (float64, so they equal Python floats added in
    order): reading them per batch would wait for the GPU on every batch."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for inputs, targets in on_device(loader, device, channels_last):
        logits = model(inputs)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
        correct += (logits.argmax(dim=1) == targets).sum()
        count += targets.numel()
    model.train()
    count_on_device = torch.full((), count, dtype=torch.float64, device=device)  # a fill, not a copy
    totals = torch.stack([loss_sum, correct.double(), count_on_device])
    dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
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
                    cfg: DictConfig, device: torch.device, fingerprint: dict[str, Any]) -> None:
    """Collective (every rank's RNG state is gathered); rank 0 writes."""
    rng_states = checkpoint.gather_rng_states(device)
    per_rank = progress.gather_per_rank(device)
    if env.is_main:
        checkpoint.save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),  # empty unless fp16
                "progress": asdict(progress),  # rank 0's; every rank's own counters below
                "progress_per_rank": per_rank,
                "rng": rng_states,
                "world_size": env.world_size,
                "seed": cfg.seed,
                "fingerprint": fingerprint,  # what the sample order and the schedule came from
            },
            path,
        )


def processes_per_node(env: DistEnv, device: torch.device) -> list[int]:
    """How many ranks each node ran, as the ranks themselves report it (collective)."""
    report = torch.tensor([env.node_rank, env.local_world_size], dtype=torch.int64, device=device)
    reports = [torch.empty_like(report) for _ in range(env.world_size)]
    dist.all_gather(reports, report)
    return [count for _, count in sorted({tuple(item.tolist()) for item in reports})]


def stop_for_slurm(stop: StopRequest, env: DistEnv, log: logging.Logger, max_requeues: int,
                   device: torch.device) -> int:
    """After the stop checkpoint: rank 0 requeues the job if the time limit is the reason; every
    rank learns the outcome and returns its exit code."""
    dist.barrier()  # the checkpoint is on disk before the job leaves the queue's hands
    requeued = torch.zeros(1, dtype=torch.int64, device=device)
    if env.is_main:
        log.warning("stopping after step checkpoint: %s received", stop.name)
        requeued.fill_(int(bool(stop.time_limit and requeue_this_job(max_requeues))))
    dist.broadcast(requeued, src=0)
    return REQUEUED_EXIT_CODE if requeued.item() else STOPPED_EXIT_CODE


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Atomically, with fsync, like the checkpoint: a reader sees the whole summary or none."""
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def train(cfg: DictConfig) -> int:
    """The whole run on this rank; returns the process's exit code."""
    start = time.perf_counter()
    with started(cfg) as worker:
        env, run_dir, log, device = worker.env, worker.run_dir, worker.log, worker.device
        train_set, val_set = prepare_data(cfg, env)
        train_loader, val_loader, sampler = build_loaders(cfg, env, train_set, val_set, device)

        # Model, optimizer, schedule.
        model = build_model(cfg, device)
        if cfg.trainer.compile:
            # In place, inside DDP: the state dict keeps its plain names; DDP's own hooks stay eager.
            model.compile()
        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = build_optimizer(cfg.optim, model.parameters(), env.world_size)
        precision = MixedPrecision.from_config(cfg.trainer.precision, device)
        accumulate, clip_grad_norm = cfg.trainer.accumulate, cfg.trainer.clip_grad_norm
        batch_size, epochs = cfg.data.batch_size, cfg.trainer.epochs
        micro_batches = math.ceil(sampler.num_samples / batch_size)  # per epoch, on this rank
        steps_per_epoch = math.ceil(micro_batches / accumulate)
        scheduler = build_scheduler(cfg.sched, optimizer, steps_per_epoch, epochs)
        step_scheduler_each_step = cfg.sched.interval == "step"

        # Resume: every rank gets the checkpoint (from the file, or as tensors from rank 0) and
        # restores the same state (and its own RNG).
        run_fingerprint = resume.fingerprint(cfg, env.world_size, len(train_set), optimizer.defaults["lr"],
                                             steps_per_epoch)
        base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        progress = Progress()
        resumed = False
        state = checkpoint.load_everywhere(resume_from(cfg, run_dir, env.restart), device)
        if state is not None:
            resumed = True
            progress = Progress(**state["progress"])
            same_world = state["world_size"] == env.world_size
            if not same_world:
                # Another world size shards the data differently: a mid-epoch position is
                # meaningless, so that epoch restarts; exactness is only promised for the same size.
                log.warning("checkpoint from world size %d, now %d: RNG streams not restored, "
                            "epoch %d restarts from its beginning", state["world_size"],
                            env.world_size, progress.epoch)
                progress = progress.start_epoch(progress.epoch)
            saved = state.get("fingerprint")
            schedule_changes: list[str] = []
            if saved is not None:
                resume.check_sample_order(saved, run_fingerprint, progress.epoch, progress.step_in_epoch, log)
                schedule_changes = resume.changed(resume.SCHEDULE_KEYS, saved, run_fingerprint)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if schedule_changes:
                # The checkpoint's curve was drawn for other settings (its end may be behind us:
                # lr 0): the current settings' schedule, at the run's position on it.
                same_intervals = same_world and "optimizer steps per epoch" not in schedule_changes
                position = (progress.epoch if cfg.sched.interval != "step" else
                            progress.global_step if same_intervals else progress.epoch * steps_per_epoch)
                scheduler = resume.rederive_schedule(cfg.sched, optimizer, base_lrs, steps_per_epoch,
                                                     epochs, position)
                log.warning("resuming with another schedule (%s): the lr schedule is re-derived for "
                            "the current settings, at interval %d (lr %.4g)",
                            resume.describe(schedule_changes, saved, run_fingerprint), position,
                            optimizer.param_groups[0]["lr"])
            elif scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                precision.scaler.load_state_dict(state["scaler"])
            if same_world:
                checkpoint.set_rng_state(state["rng"][env.rank], device)
                if "progress_per_rank" in state:  # older checkpoints: rank 0's counters for all
                    progress = progress.with_own(state["progress_per_rank"][env.rank])
            log.info("resumed at epoch %d, step %d of that epoch (global step %d)",
                     progress.epoch, progress.step_in_epoch, progress.global_step)
            del state
        # metrics.jsonl keeps the epochs the checkpoint covers; nothing is rewritten before this
        # run logs its first epoch. TensorBoard hides what the interrupted attempt logged past
        # the checkpoint's last completed step.
        monitor = (Monitor(run_dir, cfg.trainer.progress_bar, cfg.trainer.tensorboard,
                           cfg.trainer.tensorboard_every_steps,
                           resumed_step=progress.global_step if resumed else None,
                           keep_epochs_before=progress.epoch)
                   if env.is_main else SilentMonitor())

        # Plain values: OmegaConf lookups cost tens of microseconds, too much for the step loop.
        log_every = cfg.trainer.log_every_steps
        every_steps, every_epochs = cfg.save.every_steps, cfg.save.every_epochs
        channels_last = cfg.trainer.channels_last
        stop_signals = StopSignals(cfg.trainer.stop_check_steps).install() if StopSignals.wanted() else None
        stop = None
        buckets_settled = False
        losses = UnreadLosses()
        val_loss, val_acc = math.nan, math.nan

        for epoch in range(progress.epoch, epochs):
            sampler.set_epoch(epoch, start_index=progress.step_in_epoch * batch_size)
            monitor.start_epoch(epoch, epochs, micro_batches, progress.step_in_epoch)
            epoch_start = time.perf_counter()
            for inputs, targets in on_device(train_loader, device, channels_last):
                if not buckets_settled:  # once per process, before its first real step
                    settle_gradient_buckets(ddp_model, inputs)
                    buckets_settled = True
                # Gradient accumulation: DDP syncs only on the micro-batch that ends a group (or
                # the epoch); the loss is divided so the group's gradient is the mean over it (not
                # when K is 1: a division is one more autograd node in every step).
                progress.step_in_epoch += 1
                ends_group = progress.step_in_epoch % accumulate == 0 or progress.step_in_epoch == micro_batches
                with contextlib.nullcontext() if ends_group else ddp_model.no_sync():
                    with precision.autocast():
                        loss = F.cross_entropy(ddp_model(inputs), targets)
                    precision.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
                batch = targets.numel()
                lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
                losses.add(loss, batch, lr)  # on the device: no wait for the GPU here
                progress.epoch_samples += batch
                progress.train_samples += batch
                monitor.micro_batch()
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
                if monitor.charts(progress.global_step):
                    losses.chart(progress.global_step)
                logs_now = log_every and progress.global_step % log_every == 0
                saves_now = every_steps and progress.global_step % every_steps == 0
                if logs_now or saves_now:  # the only steps at which the host waits for the device
                    loss_value = losses.read(progress, monitor)
                if logs_now:
                    log.info("epoch %d step %d loss %.4f lr %.4g", epoch, progress.step_in_epoch, loss_value, lr)
                if saves_now:
                    progress.add_time(time.perf_counter() - epoch_start)
                    epoch_start = time.perf_counter()
                    save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler, progress,
                                    cfg, device, run_fingerprint)
                if stop_signals and (stop := stop_signals.agreed(progress.global_step, device)):
                    break
            losses.read(progress, monitor)
            progress.add_time(time.perf_counter() - epoch_start)
            if stop:  # Slurm's time limit or a cancel: a mid-epoch checkpoint, then leave
                save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler, progress,
                                cfg, device, run_fingerprint)
                monitor.close()
                del ddp_model, model, optimizer, scheduler, train_loader, val_loader
                return stop_for_slurm(stop, env, log, cfg.slurm.max_requeues, device)

            if scheduler is not None and not step_scheduler_each_step:
                scheduler.step()
            loss_sum, samples, epoch_time = all_reduce_scalars(
                [progress.epoch_loss_sum, progress.epoch_samples, progress.epoch_time_s], device)
            val_loss, val_acc = evaluate(ddp_model, val_loader, device, channels_last)
            record = {
                "epoch": epoch,
                "global_step": progress.global_step,
                "train_loss": loss_sum / max(samples, 1),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": optimizer.param_groups[0]["lr"],  # for the next epoch
                "samples_per_s": samples / (epoch_time / env.world_size) if epoch_time > 0 else 0.0,
            }
            log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_acc=%.4f lr=%.4g", epoch + 1,
                     epochs, record["train_loss"], val_loss, val_acc, record["lr"])
            progress = progress.start_epoch(epoch + 1)
            # The record first, then the checkpoint: a checkpoint past an epoch implies its record
            # is on disk; a kill between the two resumes from an earlier checkpoint, and the
            # resumed run drops the records past that checkpoint and logs them again.
            monitor.end_epoch(record)
            if every_epochs and (epoch + 1) % every_epochs == 0:
                save_checkpoint(checkpoint_path(run_dir), env, model, optimizer, scheduler, precision.scaler,
                                progress, cfg, device, run_fingerprint)

        if math.isnan(val_loss):  # resumed after the last epoch: report the final model anyway
            val_loss, val_acc = evaluate(ddp_model, val_loader, device, channels_last)
        total_samples, time_sum = all_reduce_scalars([progress.train_samples, progress.train_time_s], device)
        mean_train_time = time_sum / env.world_size
        (first_step_done,) = all_reduce_scalars([progress.first_step_unix_s], device, dist.ReduceOp.MAX)
        gpus_per_node = processes_per_node(env, device)
        summary = {
            "mode": "train",
            "world_size": env.world_size,
            "nodes": len(gpus_per_node),
            "gpus_per_node": gpus_per_node,
            "backend": worker.backend,
            "launcher": OmegaConf.select(cfg, "launcher.name", default="external"),
            "epochs": epochs,
            "restarts": env.restart,  # torchrun restarts and Slurm requeues this job needed
            "precision": precision.name,
            "matmul_precision": torch.get_float32_matmul_precision(),
            "accumulate": accumulate,
            "lr": optimizer.defaults["lr"],  # after optim.scale_lr
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "compiled": cfg.trainer.compile,
            "global_step": progress.global_step,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "train_samples_per_s": total_samples / mean_train_time if mean_train_time > 0 else 0.0,
            "wall_s": time.perf_counter() - start,
            "first_step_unix_s": first_step_done,  # every rank had taken one optimizer step by then
            "weights_sha256": checkpoint.weights_sha256(model),
        }
        monitor.close()
        if env.is_main:
            write_summary(run_dir, summary)
            if monitor.metrics_path.exists():
                plot_curves(monitor.metrics_path, run_dir / "curves.png")
            log.info("done: val_acc=%.4f val_loss=%.4f %.0f samples/s, summary in %s",
                     val_acc, val_loss, summary["train_samples_per_s"], run_dir / "summary.json")
        del ddp_model, model, optimizer, scheduler, train_loader, val_loader
    if stop_signals:
        stop_signals.uninstall()
    return 0


def evaluate_checkpoint(cfg: DictConfig) -> int:
    """``trainer.mode=eval checkpoint=PATH``: the validation metrics of a saved model, computed by
    every rank on its shard and reduced exactly as during training (any world size)."""
    start = time.perf_counter()
    with started(cfg) as worker:
        env, log, device = worker.env, worker.log, worker.device
        train_set, val_set = prepare_data(cfg, env)
        _, val_loader, _ = build_loaders(cfg, env, train_set, val_set, device)
        model = build_model(cfg, device)
        state = checkpoint.load_everywhere(Path(cfg.checkpoint), device)
        assert state is not None
        model.load_state_dict(state["model"])
        val_loss, val_acc = evaluate(model, val_loader, device, cfg.trainer.channels_last)
        trained = state["progress"]
        summary = {
            "mode": "eval",
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "checkpoint_epoch": trained["epoch"],
            "checkpoint_global_step": trained["global_step"],
            "world_size": env.world_size,
            "backend": worker.backend,
            "val_samples": len(val_set),  # type: ignore[arg-type]
            "val_loss": val_loss,
            "val_acc": val_acc,
            "wall_s": time.perf_counter() - start,
            "weights_sha256": checkpoint.weights_sha256(model),
        }
        if env.is_main:
            write_summary(worker.run_dir, summary)
            log.info("eval of %s: val_acc=%.4f val_loss=%.4f over %d samples", cfg.checkpoint,
                     val_acc, val_loss, summary["val_samples"])
        del model, val_loader
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python -m trainer RUN_DIR/config.yaml")
    cfg = OmegaConf.load(argv[0])
    if cfg.trainer.mode not in MODES:
        raise SystemExit(f"trainer.mode={cfg.trainer.mode!r}: allowed: {', '.join(MODES)}")
    return evaluate_checkpoint(cfg) if cfg.trainer.mode == "eval" else train(cfg)
