"""The step loop never waits for the device between logging intervals.

A host read of a device tensor (``.item()``, ``.tolist()``, ``.cpu()``, ``float(t)``, ``bool(t)``)
waits for every kernel queued before it; once per step it leaves a GPU idle while the host prepares
the next one. On CPU nothing waits, but the calls that would are the same, so the test counts them:
the trainer's real ``train`` runs in this process (one rank, gloo) with those calls patched, and an
optimizer hook marks where each step ends.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.optimizer import register_optimizer_step_post_hook

from tests.composing import composed
from trainer import train as trainer_train
from trainer.logs import LOGGER_NAME

# The Tensor methods through which Python reads a tensor's values on the host.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
STEPS, LOG_EVERY, BATCH = 40, 10, 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(tmp_path: Path, *overrides: str) -> DictConfig:
    """The shipped config for one rank on gloo: ``STEPS`` optimizer steps in one epoch."""
    train_samples = STEPS * BATCH
    cfg = composed(
        "backend=gloo", f"data.root={tmp_path / 'data'}", f"data.batch_size={BATCH}",
        f"data.dataset.num_samples={train_samples * 5 // 4}",  # 20 % held out
        "trainer.epochs=1", f"trainer.log_every_steps={LOG_EVERY}", "trainer.progress_bar=false",
        *overrides, hydra=False)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def one_rank(monkeypatch) -> Iterator[None]:
    """The environment of rank 0 of 1, outside Slurm; the process's threads and logger restored."""
    for key in [key for key in os.environ if key.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(key)
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", NODE_RANK="0",
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    logger = logging.getLogger(LOGGER_NAME)
    propagate, level = logger.propagate, logger.level  # the trainer's setup_logging changes both
    yield
    torch.set_num_threads(threads)
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()
    logger.propagate, logger.level = propagate, level


def train_counting_host_reads(cfg: DictConfig, monkeypatch) -> tuple[dict[int, list[str]], int]:
    """Run ``train``; return the host reads made after each optimizer step, before the next one
    (keyed by the step: the reads of step k's logging interval land after step k), each named by
    where it was made, and the number of optimizer steps."""
    after_step: dict[int, list[str]] = {}
    steps = 0

    def counted(name: str, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {name}"
            after_step.setdefault(steps, []).append(where)
            return original(self, *args, **kwargs)
        return read

    def step_ended(optimizer, args, kwargs) -> None:
        nonlocal steps
        steps += 1

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    hook = register_optimizer_step_post_hook(step_ended)
    try:
        assert trainer_train.train(cfg, trainer_train.Options.from_config(cfg)) == 0
    finally:
        hook.remove()
    return after_step, steps


@pytest.mark.slow  # the real training loop, 40 steps: 1.5-4 s a case
@pytest.mark.parametrize("overrides", [
    (),
    ("trainer.accumulate=2", "data.batch_size=32", "trainer.clip_grad_norm=1.0", "trainer.precision=bf16"),
], ids=["defaults", "accumulate-clip-bf16"])
def test_at_most_one_host_read_per_logging_interval(tmp_path, monkeypatch, one_rank, overrides):
    cfg = config(tmp_path, *overrides)
    after_step, steps = train_counting_host_reads(cfg, monkeypatch)
    assert steps == STEPS

    # Between the first and the last step: one read at each logging step, none anywhere else.
    in_loop = {step: reads for step, reads in after_step.items() if 1 <= step < STEPS}
    per_step = {step: len(reads) for step, reads in sorted(in_loop.items())}
    print(f"host reads inside the step loop: {sum(per_step.values())} ({per_step})")
    print(f"host reads after the last step (epoch end, evaluation, checkpoint, summary): "
          f"{len(after_step.get(STEPS, []))}")
    wrong = {step: reads for step, reads in in_loop.items() if step % LOG_EVERY or len(reads) > 1}
    assert not wrong, ("host reads outside the logging interval (step: where): "
                       f"{ {step: dict(Counter(reads)) for step, reads in list(wrong.items())[:5]} }")

    # What those reads are for: the log line and TensorBoard still show every interval's loss.
    run_dir = Path(cfg.run_dir)
    logged = [line for line in (run_dir / "train.log").read_text().splitlines() if " loss " in line]
    assert [line.split(" step ")[1].split()[0] for line in logged] == [
        str(step * cfg.trainer.accumulate) for step in range(LOG_EVERY, STEPS + 1, LOG_EVERY)]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    charted = {event.step: event.value for event in events.Scalars("train/batch_loss")}
    assert sorted(charted) == list(range(10, STEPS + 1, 10))
    assert [round(charted[step], 4) for step in range(LOG_EVERY, STEPS + 1, LOG_EVERY)] == [
        float(line.split(" loss ")[1].split()[0]) for line in logged]
