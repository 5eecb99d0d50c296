"""Name the rank that failed first, on which host, with its traceback."""

from __future__ import annotations

import json
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

TRACEBACK_LINES = 15


@dataclass(frozen=True)
class RankFailure:
    rank: int
    host: str
    exit_code: int | None
    time: float
    error: str
    traceback: str = ""

    def describe(self) -> str:
        how = self.error
        if not how and self.exit_code is not None:
            how = _exit_description(self.exit_code)
        lines = [f"rank {self.rank} on host {self.host} failed first: {how}"]
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
            )
        )
    return sorted(failures, key=lambda failure: failure.time)


def first_failure(error_dir: Path, exits: dict[int, tuple[int, float]]) -> RankFailure | None:
    """The root cause: the earliest recorded exception, else the earliest abnormal exit.

    ``exits`` maps global rank to (exit code, time seen) as the launch mode observed them; ranks
    that died without raising (a signal, ``os._exit``) only show up there.
    """
    recorded = recorded_failures(error_dir)
    if recorded:
        first = recorded[0]
        code = exits.get(first.rank, (None, 0.0))[0]
        return RankFailure(first.rank, first.host, code, first.time, first.error, first.traceback)
    if not exits:
        return None
    rank, (code, seen) = min(exits.items(), key=lambda item: (item[1][1], item[0]))
    return RankFailure(rank, socket.gethostname(), code, seen, "")


def write_failure(run_dir: Path, failure: RankFailure) -> None:
    """Leave the root cause next to the run's outputs, for sweeps and schedulers to read."""
    try:
        (run_dir / "failure.json").write_text(json.dumps(asdict(failure), indent=2))
    except OSError:
        pass
