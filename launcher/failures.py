"""Name the rank that failed first, on which host, with its traceback."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path

TRACEBACK_LINES = 15
FAILURE_FILE = "failure.json"
# Errors a rank raises because a peer died or never came: symptoms, never the root cause while
# another rank raised something else or died without raising.
_SYMPTOM = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|remote (worker|process)|"
    r"communicator was aborted|DistNetworkError|wait timeout after",
    re.IGNORECASE,
)
CLEAN_EXIT_PREFIX = "exited_rank_"  # launcher.child's record of a rank that finished without error
# The store's own account of a job that never assembled: the best explanation there is.
JOINED = re.compile(r"(\d+)/(\d+) clients joined")


@dataclass(frozen=True)
class RankFailure:
    rank: int
    host: str
    exit_code: int | None
    time: float
    error: str
    traceback: str = ""
    attempt: int = 0  # torchrun restart count when it failed

    def describe(self, first: bool = True) -> str:
        """What failed, where and why; ``first``: chosen among the job's failures as the cause."""
        how = self.error
        if not how and self.exit_code is not None:
            how = _exit_description(self.exit_code)
        lines = [f"rank {self.rank} on host {self.host} failed{' first' if first else ''}: {how}"]
        joined = JOINED.search(self.error)
        if joined:
            lines.append(f"only {joined.group(1)} of {joined.group(2)} ranks joined: check that every "
                         "node was started, with the same nodes, gpus, master_addr and master_port")
        if self.traceback:
            tail = self.traceback.rstrip().splitlines()[-TRACEBACK_LINES:]
            lines.append(f"--- last {len(tail)} lines of rank {self.rank}'s traceback ---")
            lines.extend(tail)
        return "\n".join(lines)


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def recorded_failures(error_dir: Path) -> list[RankFailure]:
    """Failures the ranks wrote themselves (see ``launcher.child``), earliest first."""
    failures = []
    for path in error_dir.glob("rank_*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        failures.append(
            RankFailure(
                rank=record["rank"],
                host=record["host"],
                exit_code=None,
                time=record["time"],
                error=record["error"],
                traceback=record["traceback"],
                attempt=record.get("restart", 0),
            )
        )
    return sorted(failures, key=lambda failure: failure.time)


def first_failure(error_dir: Path, exits: dict[int, tuple[int, float]]) -> RankFailure | None:
    """The root cause, in this order: a rank reporting that not everyone joined; the earliest
    exception that is not a symptom (lost peer, store wait); the earliest rank that died without
    raising (a signal, ``os._exit``); else the earliest exception.

    ``exits`` maps global rank to (exit code, time seen) for the ranks the launch mode saw fail
    before it stopped the others; ranks that died without raising only show up there. Empty
    ``exits`` means the job succeeded (perhaps after restarts): no failure, whatever was recorded.
    Only the last attempt's records explain a failed job.
    """
    if not exits:
        return None
    recorded = recorded_failures(error_dir)
    last_attempt = max((failure.attempt for failure in recorded), default=0)
    recorded = [failure for failure in recorded if failure.attempt == last_attempt]
    joins = [failure for failure in recorded if JOINED.search(failure.error)]
    causes = joins or [failure for failure in recorded if not _SYMPTOM.search(failure.error)]
    silent = {rank: seen for rank, seen in exits.items() if rank not in {f.rank for f in recorded}}
    if not causes and silent:
        rank, (code, seen) = min(silent.items(), key=lambda item: (item[1][1], item[0]))
        return RankFailure(rank, socket.gethostname(), code, seen, "")
    early = _early_exit(error_dir, last_attempt, before=min((f.time for f in recorded), default=0.0))
    if not causes and early is not None:
        return early
    if not (causes or recorded):
        return None
    first = (causes or recorded)[0]
    return replace(first, exit_code=exits.get(first.rank, (None, 0.0))[0])


def _early_exit(error_dir: Path, attempt: int, before: float) -> RankFailure | None:
    """The first rank that finished without error before any rank failed (see
    ``launcher.child.record_clean_exit``): its peers' errors are only that it went away."""
    exited = []
    for path in error_dir.glob(f"{CLEAN_EXIT_PREFIX}*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            if record["restart"] == attempt and record["time"] < before:
                exited.append(record)
    if not exited:
        return None
    first = min(exited, key=lambda record: record["time"])
    return RankFailure(first["rank"], first["host"], 0, first["time"],
                       "exited early with code 0 while the job was still running")


def write_failure(run_dir: Path, failure: RankFailure) -> None:
    """Leave the root cause next to the run's outputs, for sweeps and schedulers to read."""
    with contextlib.suppress(OSError):
        (run_dir / FAILURE_FILE).write_text(json.dumps(asdict(failure), indent=2))
