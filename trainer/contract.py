"""The contract between the launcher and the ranks it starts, written once: the run directory's
file names, how a rank learns its node and how many times its job started over, and each rank's
share of the machine's cores.

Standard library only, like ``trainer.options``: the launcher reads it (to clear, inspect and
report on a run directory; to size each rank's thread pool before it starts) without importing
torch, and a trainer started by torchrun alone (``torchrun -m trainer CONFIG``) reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# The run directory, as the built-in trainer writes it (the launcher reads and clears it).
CONFIG_FILE = "config.yaml"  # the resolved config every rank reads (written by the launcher)
SUMMARY_FILE = "summary.json"  # what the run did, written by rank 0 at its end (trainer.summary)
METRICS_FILE = "metrics.jsonl"  # one line of metrics per epoch (and per logged step)
TRAIN_LOG = "train.log"  # rank 0's log lines
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"  # in CHECKPOINTS_DIR: what a resume continues from
TENSORBOARD_DIR = "tensorboard"
CURVES_FILE = "curves.png"

# Set by torchrun's agent per restart, and by Slurm per requeue.
RESTART_COUNT_VARIABLES = ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")


def restarts(environ: Mapping[str, str] | None = None) -> int:
    """How many times this job was started over before: torchrun restarts plus Slurm requeues
    (both count under a requeued ``slurm_task=node`` job)."""
    environ = os.environ if environ is None else environ
    return sum(int(environ.get(key) or 0) for key in RESTART_COUNT_VARIABLES)


def node_rank(environ: Mapping[str, str] | None = None) -> int:
    """This node's index: ``NODE_RANK`` (scripts written for ``torchrun --node-rank`` read it; the
    launcher exports it), else ``GROUP_RANK`` (torchrun's agent's name for it), else 0."""
    environ = os.environ if environ is None else environ
    return int(environ.get("NODE_RANK") or environ.get("GROUP_RANK") or 0)


def threads_per_rank(local_processes: int) -> int:
    """Each of this node's ranks' share of the cores this process may run on, so that processes
    x threads never exceeds them (the launcher exports it as OMP_NUM_THREADS before any rank
    starts; a rank started without it computes the same)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_processes)
