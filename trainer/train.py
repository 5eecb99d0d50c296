"""The training worker, top to bottom: set up, prepare data, train, evaluate, checkpoint, report.

Run as one rank of a job (``python -m trainer RUN_DIR/config.yaml``); it reads its place in the job
from the environment contract only (RANK, WORLD_SIZE, LOCAL_RANK, ...), so any torchrun-compatible
launcher can start it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Sampler

from trainer import checkpoint, resume
from trainer.batches import on_device
from trainer.checkpoint import Checkpoints, TrainingState
from trainer.contract import CURVES_FILE, SUMMARY_FILE
from trainer.curves import plot_curves
from trainer.data import (
    Data,
    ResumableDistributedSampler,
    SeededBatches,
    SeededBatchSampler,
    ShardSampler,
    batched_indexing,
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
from trainer.evaluation import evaluate, metrics_text
from trainer.improvement import Improvement
from trainer.logs import setup_logging
from trainer.models import freeze, keep_eval_mode, trainable
from trainer.monitor import Monitor, SilentMonitor
from trainer.options import DataLoaderOptions, SaveOptions, TrainerMode, TrainerOptions, refusals
from trainer.precision import MixedPrecision
from trainer.preemption import (
    REQUEUED_EXIT_CODE,
    STOPPED_EXIT_CODE,
    StopRequest,
    StopSignals,
    ignore_stop_signals,
    requeue_this_job,
)
from trainer.progress import Progress, UnreadLosses
from trainer.schedules import build_optimizer, build_scheduler
from trainer.summary import evaluation_summary, training_summary, write_summary
from trainer.tasks import Step

Schema = TypeVar("Schema")


class InvalidOptions(ValueError):
    """A value of the trainer's own blocks that their schema refuses (its type, range or choices):
    seen only where a config reaches the trainer without the launcher's check (``python -m
    trainer`` by hand, on an edited file); the launcher checks every key before a rank starts."""


def typed(schema: type[Schema], cfg: DictConfig, block: str) -> Schema:
    """The ``block`` of ``cfg``, the keys of the dataclass ``schema``, as that dataclass: each
    value converted to its field's type (``precision: 32`` is "32", a mode its enum member), a key
    the config lacks at its default, a value of the wrong type refused (``InvalidOptions``)."""
    names = {item.name for item in fields(schema)}  # type: ignore[arg-type]
    resolved = OmegaConf.to_container(cfg[block], resolve=True)  # interpolations against the whole config
    assert isinstance(resolved, dict)
    values = {name: value for name, value in resolved.items() if name in names}
    for item in fields(schema):  # type: ignore[arg-type]
        # OmegaConf would read "yes", "on" or 1 as true; the launcher refuses them, so does this.
        if item.type is bool and not isinstance(values.get(item.name, False), bool):
            raise InvalidOptions(f"{block}.{item.name}={values[item.name]!r}: allowed: true, false")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))  # type: ignore[return-value]
    except ValidationError as refused:
        key = f"{block}.{refused.full_key}"
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        raise InvalidOptions(f"{key}={value!r}: {str(refused).splitlines()[0]}") from None


@dataclass(frozen=True)
class Options:
    """The blocks the trainer owns, read once from the run's config as typed objects: plain
    attributes, cheap enough for the step loop (an OmegaConf lookup costs tens of microseconds).
    The plug-in blocks (model, data.dataset, optim, sched, loss) stay ``DictConfig`` nodes for
    ``hydra.utils.instantiate``."""

    trainer: TrainerOptions
    save: SaveOptions
    data: DataLoaderOptions

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Options:
        options = cls(typed(TrainerOptions, cfg, "trainer"), typed(SaveOptions, cfg, "save"),
                      typed(DataLoaderOptions, cfg, "data"))
        refused = refusals(options, "")  # each block by its dotted keys (trainer.epochs)
        if refused:
            raise InvalidOptions("; ".join(refused))
        return options


@dataclass
class Worker:
    """This process's place in the job and what it runs on."""

    env: DistEnv
    run_dir: Path
    log: logging.Logger
    backend: str
    device: torch.device


@contextlib.contextmanager
def started(cfg: DictConfig, options: Options) -> Iterator[Worker]:
    """Logging, determinism, device and process group: the same start for training and evaluation."""
    env = DistEnv.from_environ()
    run_dir = Path(cfg.run_dir)
    log = setup_logging(env.rank, run_dir)
    configure_determinism(cfg.deterministic, cfg.cudnn_benchmark)
    # high: float32 matmuls on TF32 tensor cores (Ampere and later), several times the fp32 rate
    # for a 10-bit mantissa; medium: bf16. highest, the default, keeps them exact fp32.
    torch.set_float32_matmul_precision(options.trainer.matmul_precision.value)
    backend = resolve_backend(cfg.backend)
    device = select_device(backend, env)
    threads = limit_cpu_threads(env)
    with process_group(env, backend, cfg.init_timeout, cfg.collective_timeout):
        log.info("rank %d/%d up: backend=%s device=%s threads/rank=%d", env.rank, env.world_size,
                 backend, device, threads)
        seed_everything(cfg.seed)
        yield Worker(env, run_dir, log, backend, device)


# Model arguments that may say ``auto``: taken from the data (``model=mlp`` with any data set).
SIZES_FROM_DATA = ("in_features", "num_classes")
TRAINER_KEYS = ("freeze",)  # model.freeze is the trainer's, not the model's constructor's


def build_model(cfg: DictConfig, options: Options, device: torch.device, data: Data) -> torch.nn.Module:
    node = OmegaConf.masked_copy(cfg.model, [key for key in cfg.model if key not in TRAINER_KEYS])
    sizes = {key: node[key] for key in SIZES_FROM_DATA if node.get(key) == "auto"}
    if "in_features" in sizes:  # one sample's inputs, flattened (a validation sample: its transform
        sample = data.val[0]      # draws no random numbers, and the training stream stays untouched)
        sizes["in_features"] = (sample[0] if isinstance(sample, (tuple, list)) else sample).numel()
    if "num_classes" in sizes:
        if data.num_classes is None:
            raise ValueError("model.num_classes=auto: the data does not say how many classes it has "
                             "(no data.num_classes, no num_classes attribute): set model.num_classes=N")
        sizes["num_classes"] = data.num_classes
    model = instantiate(node, **sizes).to(device)
    if options.trainer.channels_last:  # NHWC: faster convolutions on tensor cores and oneDNN
        model = model.to(memory_format=torch.channels_last)
    return model


def build_loaders(loader: DataLoaderOptions, seed: int, env: DistEnv, train_set: Any, val_set: Any,
                  device: torch.device) -> tuple[DataLoader, DataLoader, ResumableDistributedSampler]:
    sampler = ResumableDistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, shuffle=loader.shuffle,
        seed=seed, drop_last=loader.drop_last,
    )
    workers = loader.num_workers
    common: dict[str, Any] = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # Explicit: a rank started by torch.multiprocessing inherits its "spawn" default, which
        # would re-import torch in every worker; the same setting in every launch mode.
        multiprocessing_context=loader.worker_start_method.value if workers > 0 else None,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
    # Each loader draws its workers' base seed from a generator of its own, not from the global
    # one: a resumed run, which starts its iterators at other points, keeps the global streams.
    generators = [torch.Generator().manual_seed((seed * 1_000_003 + env.rank * 2 + kind) % 2**63)
                  for kind in (0, 1)]
    if workers > 0:
        # Workers seed their generators per batch (seed, epoch, rank, batch number), so random
        # augmentation does not depend on where a run started (see SeededBatchSampler). Without
        # workers, augmentation draws from this process's generators, which checkpoints restore.
        train_loader = DataLoader(SeededBatches(train_set, seed, env.rank),
                                  batch_sampler=SeededBatchSampler(sampler, loader.batch_size),
                                  generator=generators[0], **common)
    else:
        train_loader = batch_loader(train_set, sampler, loader.batch_size, generator=generators[0], **common)
    val_loader = batch_loader(val_set, ShardSampler(len(val_set), env.rank, env.world_size), loader.batch_size,
                              generator=generators[1], **common)
    return train_loader, val_loader, sampler


def batch_loader(dataset: Any, sampler: Sampler[int], batch_size: int, **options: Any) -> DataLoader:
    """A loader of ``sampler``'s indices in batches of ``batch_size``. In-memory data that takes a
    list of indices (``batched_indexing``) is indexed once per batch: the same samples in the same
    order as one indexing per sample plus a collate, in one step instead of ``batch_size``."""
    if batched_indexing(dataset):
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                          batch_size=None, **options)
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size, **options)


def resume_from(cfg: DictConfig, checkpoints: Checkpoints, restart: int) -> Path | None:
    """The checkpoint to start from (read on rank 0 only).

    A restarted attempt (torchrun ``max_restarts``, ``restart`` > 0) always continues from this
    job's own last checkpoint when there is one: restarting from scratch, or from the checkpoint
    the first attempt was started from, would throw the work done since away.
    """
    if (cfg.resume == "auto" or restart > 0) and checkpoints.last.exists():
        return checkpoints.last
    if cfg.resume in (None, "none", "auto"):
        return None
    return Path(cfg.resume)


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


class Run:
    """One rank's training run: what it trains, how, and where it stands (``progress``).

    Built once (data, loaders, model, step, optimizer, schedule, restored from a checkpoint), then
    driven by ``train()`` one epoch at a time.
    """

    def __init__(self, cfg: DictConfig, options: Options, worker: Worker) -> None:
        self.cfg, self.options, self.worker = cfg, options, worker
        env, device, trainer = worker.env, worker.device, options.trainer
        data = Data.open(cfg.data.dataset, options.data, env)
        self.train_loader, self.val_loader, self.sampler = build_loaders(options.data, cfg.seed, env, data.train,
                                                                         data.val, device)
        self.model = build_model(cfg, options, device, data)
        self.frozen = freeze(self.model, list(cfg.model.get("freeze") or []))
        self.step = Step.from_config(cfg)
        if trainer.compile:
            # In place, inside DDP: the state dict keeps its plain names; DDP's own hooks stay eager.
            self.model.compile()
        self.ddp_model = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = build_optimizer(cfg.optim, trainable(self.model), env.world_size)
        self.precision = MixedPrecision.from_config(trainer.precision, device)
        self.micro_batches = math.ceil(self.sampler.num_samples / options.data.batch_size)  # per epoch, on this rank
        self.steps_per_epoch = math.ceil(self.micro_batches / trainer.accumulate)
        self.step_scheduler_each_step = cfg.sched.interval == "step"
        self.state = TrainingState(
            self.model, optimizer, build_scheduler(cfg.sched, optimizer, self.steps_per_epoch, trainer.epochs),
            self.precision.scaler,
            resume.fingerprint(cfg, trainer, options.data, env.world_size, len(data.train),  # type: ignore[arg-type]
                               optimizer.defaults["lr"], self.steps_per_epoch),
            cfg.seed)
        self.checkpoints = Checkpoints(worker.run_dir, options.save.keep_last)
        self.best = Improvement.from_options(options.save.best)
        self.early_stop = Improvement.from_options(trainer.early_stop)
        self.stop_signals = StopSignals(trainer.stop_check_steps).install() if StopSignals.wanted() else None
        self.buckets_settled = False
        self.losses = UnreadLosses()

    def restore(self) -> tuple[Progress, bool]:
        """Every rank gets the checkpoint (from the file, or as tensors from rank 0) and restores the
        same state (and its own RNG); returns where the run stands, and whether it resumed."""
        worker = self.worker
        state = checkpoint.load_everywhere(resume_from(self.cfg, self.checkpoints, worker.env.restart),
                                           worker.device)
        if state is None:
            return Progress(), False
        return self.state.restore(state, worker.env, worker.device, self.cfg.sched, self.steps_per_epoch,
                                  self.options.trainer.epochs, worker.log), True

    def open_monitor(self, progress: Progress, resumed: bool) -> Monitor:
        """metrics.jsonl keeps the epochs the checkpoint covers; nothing is rewritten before this
        run logs its first epoch. TensorBoard hides what the interrupted attempt logged past the
        checkpoint's last completed step."""
        trainer = self.options.trainer
        if not self.worker.env.is_main:
            return SilentMonitor()
        return Monitor(self.worker.run_dir, trainer.progress_bar, trainer.tensorboard,
                       trainer.tensorboard_every_steps, resumed_step=progress.global_step if resumed else None,
                       keep_epochs_before=progress.epoch)

    def save(self, progress: Progress) -> None:
        self.state.save(self.checkpoints, self.worker.env, progress, self.worker.device)

    def train_epoch(self, progress: Progress, monitor: Monitor) -> StopRequest | None:
        """The epoch's remaining micro-batches (all of them, unless resumed mid-epoch); returns the
        stop request the ranks agreed on (Slurm), if one came."""
        device, optimizer, precision = self.worker.device, self.state.optimizer, self.precision
        trainer, save = self.options.trainer, self.options.save
        epoch, accumulate = progress.epoch, trainer.accumulate
        self.sampler.set_epoch(epoch, start_index=progress.step_in_epoch * self.options.data.batch_size)
        monitor.start_epoch(epoch, trainer.epochs, self.micro_batches, progress.step_in_epoch)
        epoch_start = time.perf_counter()
        stop = None
        for batch in on_device(self.train_loader, device, trainer.channels_last):
            if not self.buckets_settled:  # once per process, before its first real step
                settle_gradient_buckets(self.ddp_model, self.step, batch)
                self.buckets_settled = True
            # Gradient accumulation: DDP syncs only on the micro-batch that ends a group (or the
            # epoch); the loss is divided so the group's gradient is the mean over it (not when K
            # is 1: a division is one more autograd node in every step).
            progress.step_in_epoch += 1
            ends_group = progress.step_in_epoch % accumulate == 0 or progress.step_in_epoch == self.micro_batches
            with contextlib.nullcontext() if ends_group else self.ddp_model.no_sync():
                with precision.autocast():
                    loss, samples = self.step.training_loss(self.ddp_model, batch)
                precision.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
            lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
            self.losses.add(loss, samples, lr)  # on the device: no wait for the GPU here
            progress.epoch_samples += samples
            progress.train_samples += samples
            monitor.micro_batch()
            if not ends_group:
                continue
            if trainer.clip_grad_norm:
                precision.scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), trainer.clip_grad_norm)
            precision.scaler.step(optimizer)
            precision.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if self.state.scheduler is not None and self.step_scheduler_each_step:
                self.state.scheduler.step()

            if not progress.first_step_unix_s:
                progress.first_step_unix_s = time.time()
            progress.global_step += 1
            if monitor.charts(progress.global_step):
                self.losses.chart(progress.global_step)
            logs_now = trainer.log_every_steps and progress.global_step % trainer.log_every_steps == 0
            saves_now = save.every_steps and progress.global_step % save.every_steps == 0
            if logs_now or saves_now:  # the only steps at which the host waits for the device
                loss_value = self.losses.read(progress, monitor)
            if logs_now:
                self.worker.log.info("epoch %d step %d loss %.4f lr %.4g", epoch, progress.step_in_epoch,
                                     loss_value, lr)
            if saves_now:
                progress.add_time(time.perf_counter() - epoch_start)
                epoch_start = time.perf_counter()
                self.save(progress)
            if self.stop_signals and (stop := self.stop_signals.agreed(progress.global_step, device)):
                break
        self.losses.read(progress, monitor)
        progress.add_time(time.perf_counter() - epoch_start)
        return stop

    def end_epoch(self, progress: Progress, monitor: Monitor) -> tuple[Progress, dict[str, float], bool]:
        """Step an epoch schedule, evaluate, log the record, checkpoint (and ``best.pt``); returns
        the next epoch's progress, the validation metrics and whether early stopping ends the run."""
        env, device, optimizer = self.worker.env, self.worker.device, self.state.optimizer
        epoch, epochs = progress.epoch, self.options.trainer.epochs
        if self.state.scheduler is not None and not self.step_scheduler_each_step:
            self.state.scheduler.step()
        loss_sum, samples, epoch_time = all_reduce_scalars(
            [progress.epoch_loss_sum, progress.epoch_samples, progress.epoch_time_s], device)
        val_metrics = evaluate(self.ddp_model, self.step, self.val_loader, device, self.options.trainer.channels_last)
        keep_eval_mode(self.frozen)
        record = {
            "epoch": epoch,
            "global_step": progress.global_step,
            "train_loss": loss_sum / max(samples, 1),
            **val_metrics,
            "lr": optimizer.param_groups[0]["lr"],  # for the next epoch
            "samples_per_s": samples / (epoch_time / env.world_size) if epoch_time > 0 else 0.0,
        }
        self.worker.log.info("epoch %d/%d train_loss=%.4f %s lr=%.4g", epoch + 1, epochs,
                             record["train_loss"], metrics_text(val_metrics), record["lr"])
        progress = progress.start_epoch(epoch + 1)
        # The same metrics on every rank (reduced): every rank decides the same.
        new_best = self.best is not None and self.best.improves(val_metrics, progress.best_value)
        if self.best is not None and new_best:
            progress.best_value = val_metrics[self.best.monitor]
        stops_early = False
        if self.early_stop is not None:
            if self.early_stop.improves(val_metrics, progress.early_stop_best):
                progress.early_stop_best, progress.epochs_since_best = val_metrics[self.early_stop.monitor], 0
            else:
                progress.epochs_since_best += 1
            stops_early = (progress.epochs_since_best >= self.options.trainer.early_stop.patience
                           and epoch + 1 < epochs)
        # The record first, then the checkpoint: a checkpoint past an epoch implies its record is
        # on disk; a kill between the two resumes from an earlier checkpoint, and the resumed run
        # drops the records past that checkpoint and logs them again.
        monitor.end_epoch(record)
        every_epochs = self.options.save.every_epochs
        saved = bool(every_epochs and (epoch + 1) % every_epochs == 0) or stops_early
        if saved or new_best:
            self.state.save(self.checkpoints, env, progress, device, last=saved, best=new_best)
        if stops_early and self.early_stop is not None:
            self.worker.log.info("early stop after epoch %d: %s has not improved for %d epochs (best %.4g)",
                                 epoch + 1, self.early_stop.monitor, progress.epochs_since_best,
                                 progress.early_stop_best)
        return progress, val_metrics, stops_early

    def summary(self, progress: Progress, val_metrics: dict[str, float], wall_s: float) -> dict[str, Any]:
        """The run's summary.json (``trainer.summary`` says what each key means). Collective."""
        env, device = self.worker.env, self.worker.device
        total_samples, time_sum = all_reduce_scalars([progress.train_samples, progress.train_time_s], device)
        mean_train_time = time_sum / env.world_size
        (first_step_done,) = all_reduce_scalars([progress.first_step_unix_s], device, dist.ReduceOp.MAX)
        gpus_per_node = processes_per_node(env, device)
        return training_summary(
            world_size=env.world_size, gpus_per_node=gpus_per_node, backend=self.worker.backend,
            launcher=OmegaConf.select(self.cfg, "launcher.name", default="external"),
            epochs=self.options.trainer.epochs, epochs_run=progress.epoch, restarts=env.restart,
            precision=self.precision.name, accumulate=self.options.trainer.accumulate,
            lr=self.state.optimizer.defaults["lr"], compiled=self.options.trainer.compile,
            global_step=progress.global_step, val_metrics=val_metrics,
            train_samples_per_s=total_samples / mean_train_time if mean_train_time > 0 else 0.0,
            wall_s=wall_s, first_step_unix_s=first_step_done, model=self.model,
            best=(self.best.monitor, progress.best_value) if self.best is not None else None)


def train(cfg: DictConfig, options: Options) -> int:
    """The whole run on this rank; returns the process's exit code."""
    start = time.perf_counter()
    with started(cfg, options) as worker:
        run = Run(cfg, options, worker)
        progress, resumed = run.restore()
        monitor = run.open_monitor(progress, resumed)
        val_metrics: dict[str, float] = {}
        for _ in range(progress.epoch, options.trainer.epochs):
            stop = run.train_epoch(progress, monitor)
            if stop:  # Slurm's time limit or a cancel: a mid-epoch checkpoint, then leave
                run.save(progress)
                run.checkpoints.wait()  # on disk before the job is requeued or ends
                monitor.close()
                del run
                return stop_for_slurm(stop, worker.env, worker.log, cfg.slurm.max_requeues, worker.device)
            progress, val_metrics, stops_early = run.end_epoch(progress, monitor)
            if stops_early:
                break
        if not val_metrics:  # resumed after the last epoch: report the final model anyway
            val_metrics = evaluate(run.ddp_model, run.step, run.val_loader, worker.device,
                                   options.trainer.channels_last)
        run.checkpoints.wait()  # the last checkpoint is on disk (a failed write fails the run)
        summary = run.summary(progress, val_metrics, time.perf_counter() - start)
        monitor.close()
        if worker.env.is_main:
            write_summary(worker.run_dir, summary)
            if options.trainer.curves and monitor.metrics_path.exists():
                plot_curves(monitor.metrics_path, worker.run_dir / CURVES_FILE)
            worker.log.info("done: %s %.0f samples/s, summary in %s", metrics_text(val_metrics),
                            summary["train_samples_per_s"], worker.run_dir / SUMMARY_FILE)
        stop_signals = run.stop_signals
        del run
    if stop_signals:
        stop_signals.uninstall()
    return 0


def evaluate_checkpoint(cfg: DictConfig, options: Options) -> int:
    """``trainer.mode=eval checkpoint=PATH``: the validation metrics of a saved model, computed by
    every rank on its shard and reduced exactly as during training (any world size)."""
    start = time.perf_counter()
    with started(cfg, options) as worker:
        env, device = worker.env, worker.device
        data = Data.open(cfg.data.dataset, options.data, env)
        _, val_loader, _ = build_loaders(options.data, cfg.seed, env, data.train, data.val, device)
        model = build_model(cfg, options, device, data)
        state = checkpoint.load_everywhere(Path(cfg.checkpoint), device)
        assert state is not None
        model.load_state_dict(state["model"])
        val_metrics = evaluate(model, Step.from_config(cfg), val_loader, device, options.trainer.channels_last)
        summary = evaluation_summary(
            checkpoint=Path(cfg.checkpoint), trained=state["progress"], world_size=env.world_size,
            backend=worker.backend, val_samples=len(data.val),  # type: ignore[arg-type]
            val_metrics=val_metrics, wall_s=time.perf_counter() - start, model=model)
        if env.is_main:
            write_summary(worker.run_dir, summary)
            worker.log.info("eval of %s: %s over %d samples", cfg.checkpoint, metrics_text(val_metrics),
                            summary["val_samples"])
        del model, val_loader
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python -m trainer RUN_DIR/config.yaml")
    cfg = OmegaConf.load(argv[0])
    assert isinstance(cfg, DictConfig), f"{argv[0]}: not a mapping"
    try:
        options = Options.from_config(cfg)
    except InvalidOptions as refused:
        print(f"error: invalid config {argv[0]}: {refused}", file=sys.stderr)
        return 2
    return (evaluate_checkpoint(cfg, options) if options.trainer.mode is TrainerMode.eval
            else train(cfg, options))
