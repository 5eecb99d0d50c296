"""What the scheduler says of a job: one way to ask, for ``launcher.status``, ``launcher.cancel``,
``launcher.logs -f`` and ``slurm.wait=true`` alike.

``squeue`` knows a job while it is queued or running; ``sacct`` how it ended (where accounting
runs); ``scontrol show job`` still knows an ended job for some minutes where ``sacct`` does not.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
REQUEUED = {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING"}
QUERY_TIMEOUT_S = 5.0  # a status command must answer promptly, even with slurmctld under load


@dataclass
class SlurmState:
    job_id: str
    state: str | None  # Slurm's (PENDING, RUNNING, REQUEUED, COMPLETED, ...), None: unknown
    source: str = ""  # squeue, sacct, scontrol
    note: str = ""  # why the state is unknown


def _ask(command: list[str], timeout_s: float) -> tuple[str | None, str]:
    """The tool's standard output, or None and why not."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        return None, f"{command[0]} not found (no Slurm client here)"
    except (OSError, subprocess.TimeoutExpired):
        return None, f"{command[0]} did not answer within {timeout_s:g}s"
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()
        return None, f"{command[0]}: {error[-1] if error else 'exit code ' + str(done.returncode)}"
    return done.stdout, ""


def _first_word(output: str | None) -> str | None:
    lines = [line.split()[0] for line in (output or "").splitlines() if line.strip()]
    return lines[0] if lines else None


def job_state(job_id: str, timeout_s: float = QUERY_TIMEOUT_S) -> SlurmState:
    """``squeue`` while the job is queued or running, else ``sacct``, else ``scontrol``; a state of
    None (with the reason in ``note``) when none of them knows the job."""
    queue, squeue_note = _ask(["squeue", "-h", "-j", job_id, "-o", "%T"], timeout_s)
    queued = _first_word(queue)
    if queued and queued != "COMPLETING":
        return SlurmState(job_id, queued, "squeue")
    accounting, sacct_note = _ask(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], timeout_s)
    ended = _first_word(accounting)
    if ended and (queued is None or ended in ENDED):  # COMPLETING: how it ended, once known
        return SlurmState(job_id, ended, "sacct")
    if queued:
        return SlurmState(job_id, queued, "squeue")
    control, scontrol_note = _ask(["scontrol", "show", "job", job_id], timeout_s)
    match = re.search(r"\bJobState=(\S+)", control or "")
    if match:
        return SlurmState(job_id, match.group(1), "scontrol")
    notes = [note for note in (squeue_note, sacct_note, scontrol_note) if note]
    return SlurmState(job_id, None, note="; ".join(notes) or "neither squeue, sacct nor scontrol knows the job")
