"""Rank-aware logging: rank 0 talks at INFO, the others only warn; every line says its rank."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from trainer.contract import TRAIN_LOG

LOGGER_NAME = "trainer"


def setup_logging(rank: int, run_dir: Path) -> logging.Logger:
    formatter = logging.Formatter(
        f"[rank {rank}] %(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    log = logging.getLogger(LOGGER_NAME)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    log.addHandler(console)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(run_dir / TRAIN_LOG)
        file.setFormatter(formatter)
        log.addHandler(file)
    return log


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
