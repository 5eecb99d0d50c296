"""``slurm.wait=true``: follow a submitted job to its end, streaming rank 0's progress."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from launcher.slurm import LOG_FOLDER
from launcher.slurm.queue import ENDED, job_state
from launcher.slurm.task import failure_report
from trainer.contract import SUMMARY_FILE, TRAIN_LOG


def _progress_lines(train_log: Path, offset: int) -> tuple[list[str], int]:
    if not train_log.exists():
        return [], offset
    with train_log.open() as file:
        file.seek(offset)
        text = file.read()
    complete = text[: text.rfind("\n") + 1]
    return complete.splitlines(), offset + len(complete)


# Asking Slurm: every 2 s in the job's first minute, then every 20 s (slurmctld and slurmdbd serve
# every user of the cluster); rank 0's log is still streamed every second.
FAST_POLL_S, SLOW_POLL_S, FAST_PHASE_S = 2.0, 20.0, 60.0
STATE_FAILURES_TO_GIVE_UP = 10  # polls in a row where neither sacct, squeue nor scontrol answered
STATE_QUERY_TIMEOUT_S = 30.0  # the watcher can wait for a busy slurmctld; a status command cannot


def poll_interval(elapsed_s: float) -> float:
    return FAST_POLL_S if elapsed_s < FAST_PHASE_S else SLOW_POLL_S


def wait_for(job: Any, run_dir: Path, *, state_of: Any = None, sleep: Any = time.sleep,
             clock: Any = time.monotonic, tail_s: float = 1.0) -> int:
    """Stream rank 0's progress until Slurm says the job ended (requeues included); exit code 0
    only for COMPLETED. (submitit's ``done()`` turns true as soon as rank 0 returned, before Slurm
    has the job's final state.) Gives up, exit code 1, when Slurm cannot be asked repeatedly."""
    state_of = state_of or (lambda job_id: job_state(job_id, STATE_QUERY_TIMEOUT_S).state)
    offset = 0
    train_log = run_dir / TRAIN_LOG
    job_id = str(job.job_id)
    start = next_poll = clock()
    failures = 0
    while True:
        lines, offset = _progress_lines(train_log, offset)
        for line in lines:
            print(line, flush=True)
        now = clock()
        if now >= next_poll:
            state = state_of(job_id)
            if state is None:
                failures += 1
                if failures >= STATE_FAILURES_TO_GIVE_UP:
                    print(f"stopped waiting for job {job_id}: sacct, squeue and scontrol gave no state "
                          f"{failures} times in a row; the job may still run (squeue -j {job_id}), its "
                          f"logs are in {run_dir / LOG_FOLDER}", file=sys.stderr)
                    return 1
            else:
                failures = 0
                if state in ENDED:
                    break
            next_poll = now + poll_interval(now - start)
        sleep(tail_s)
    lines, _ = _progress_lines(train_log, offset)
    for line in lines:
        print(line, flush=True)
    if state == "COMPLETED":
        summary = run_dir / SUMMARY_FILE
        if summary.exists():
            print(f"job {job.job_id} COMPLETED: {json.dumps(json.loads(summary.read_text()))}")
        return 0
    report = failure_report(run_dir)
    print(f"job {job.job_id} ended {state}", file=sys.stderr)
    if report:
        print(report, file=sys.stderr)
    else:
        stderr = Path(str(job.paths.stderr).replace("%t", "0"))
        if stderr.exists():
            print(f"--- {stderr} (tail) ---", file=sys.stderr)
            print("\n".join(stderr.read_text().splitlines()[-20:]), file=sys.stderr)
    return 1
