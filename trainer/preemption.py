"""Stopping cleanly when Slurm says the end is near: checkpoint, then requeue and resume.

Slurm signals every task, but not at the same instant, and a rank must never checkpoint alone (the
checkpoint is a collective). The handler only notes the signal; every ``check_every`` steps the
ranks agree (one all-reduce) and, if any rank was signalled, all of them stop after the same step.

- USR1 (``--signal=USR1@90``, our templates) and USR2 (submitit's time-limit signal): the time
  limit is near. Checkpoint, then rank 0 requeues the job (``scontrol requeue``), at most
  ``max_requeues`` times; the requeued job resumes from the checkpoint.
- SIGTERM (``scancel``, or preemption, where Slurm itself requeues if configured): checkpoint and
  stop; never requeue, since the user or the scheduler asked for the job to end.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from types import FrameType

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
STOP_SIGNALS = (*TIME_LIMIT_SIGNALS, signal.SIGTERM)
REQUEUED_EXIT_CODE = 0  # the step ends as asked; Slurm has already put the job back in the queue
# The rank that could not be requeued (limit reached, or SIGTERM) leaves with this: not a success.
STOPPED_EXIT_CODE = 3


@dataclass(frozen=True)
class StopRequest:
    signum: int

    @property
    def time_limit(self) -> bool:
        return self.signum in TIME_LIMIT_SIGNALS

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """Notes Slurm's signals in a handler; ``agreed`` turns them into one decision for all ranks."""

    def __init__(self, check_every: int) -> None:
        self.check_every = check_every
        self.received = 0
        self.previous: dict[int, object] = {}

    @staticmethod
    def wanted() -> bool:
        """Only under Slurm: elsewhere SIGTERM means stop now (Ctrl-C, the launcher's clean-up)."""
        return "SLURM_JOB_ID" in os.environ

    def install(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._note)
        return self

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _note(self, signum: int, frame: FrameType | None) -> None:
        # Keep the first signal: a SIGTERM after USR1 must not turn a requeue into a stop.
        self.received = self.received or signum

    def agreed(self, global_step: int, device: torch.device) -> StopRequest | None:
        """Collective every ``check_every`` steps: the signal any rank received, or None."""
        if global_step % self.check_every:
            return None
        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return StopRequest(int(flag.item())) if flag.item() else None


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start: Slurm signals every process of the step, and USR1/USR2 would kill
    a worker by default; the rank decides when to stop, the workers follow."""
    for signum in TIME_LIMIT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


REQUEUE_BACKOFF_S = (1.0, 2.0, 4.0)  # pauses between the tries of `scontrol requeue`


def requeue_this_job(max_requeues: int) -> bool:
    """Rank 0: put this Slurm job back in the queue, unless it was requeued too often already."""
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") and (
        f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    ) or os.environ["SLURM_JOB_ID"]
    done = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if done >= max_requeues:
        log.error("time limit near and slurm.max_requeues=%d reached: not requeued; resume by hand "
                  "with resume=auto", max_requeues)
        return False
    # slurmctld under load answers with a timeout now and then: try again with back-off.
    for attempt, pause_s in enumerate((*REQUEUE_BACKOFF_S, None), start=1):
        try:
            result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True,
                                    timeout=60, check=False)
            why = result.stderr.strip() if result.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as err:
            why = str(err)
        if not why:
            log.warning("requeued job %s (requeue %d of at most %d)", job_id, done + 1, max_requeues)
            return True
        log.error("scontrol requeue %s failed (try %d): %s", job_id, attempt, why)
        if pause_s is not None:
            time.sleep(pause_s)
    return False
