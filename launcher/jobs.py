"""Looking at a run directory from outside: its state, its logs, stopping it.

``python -m launcher.status DIR``, ``python -m launcher.logs DIR`` and ``python -m launcher.cancel
DIR`` (thin entry modules) share what is here. Everything is read from the run directory
(``summary.json``, ``failure.json``, ``metrics.jsonl``, ``logs/rank_N.log`` and their attempt
markers, submitit's ``slurm/`` folder) and, for a Slurm job, from ``squeue``/``sacct``; nothing is
written there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from launcher.failures import FAILURE_FILE, first_failure, recorded_failures
from launcher.rank_output import LOGS_SUBDIR
from launcher.slurm import FAILURES_DIR, LOG_FOLDER
from launcher.slurm.queue import ENDED, REQUEUED, SlurmState, job_state
from trainer.contract import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

# rank_output.capture_rank_output's marker at the start of every attempt of a rank.
MARKER = re.compile(rb"^==== attempt (\d+): rank (\d+) \(local rank (\d+)\) on (.+?), pid (\d+), "
                    rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ====$", re.MULTILINE)
RUN_DIR_NAME_JOB = re.compile(r"^slurm-(\d+(?:_\d+)?)$")
# submitit's files: JOBID_submitted.pkl, JOBID_TASK_log.out, ARRAYJOB_INDEX_TASK_log.out, ...
SUBMITIT_FILE = re.compile(r"^(\d+(?:_\d+)?)_(?:\d+_log\.(?:out|err)|submitted\.pkl|\d+_result\.pkl|submission\.sh)$")
SUBMITIT_TASK_LOG = re.compile(r"^(\d+(?:_\d+)?)_(\d+)_log\.out$")
# The trainer's epoch line (trainer.train): "HH:MM:SS INFO epoch K/N ..."
EPOCH_LINE = re.compile(rb"(\d\d):(\d\d):(\d\d) \w+ epoch (\d+)/(\d+)")
LAST_LINES = 3


class NotARunDir(Exception):
    """The path is not a launcher run directory (exit code 2, one line)."""


# --- attempts in a rank's log --------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    number: int
    rank: int
    local_rank: int
    host: str
    pid: int
    started: str  # "YYYY-MM-DD HH:MM:SS", local time of the rank's host
    offset: int  # byte offset of the marker line in the log
    end: int  # byte offset where the next attempt's marker starts (or the file's size)

    @property
    def started_epoch(self) -> float:
        return time.mktime(time.strptime(self.started, "%Y-%m-%d %H:%M:%S"))


def attempts(log: Path) -> list[Attempt]:
    """Every attempt marker of a rank's log, in file order."""
    try:
        data = log.read_bytes()
    except OSError:
        return []
    found = list(MARKER.finditer(data))
    result = []
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(data)
        number, rank, local_rank, host, pid, started = match.groups()
        result.append(Attempt(int(number), int(rank), int(local_rank), host.decode(errors="replace"),
                              int(pid), started.decode(), match.start(), end))
    return result


def rank_logs(run_dir: Path) -> dict[int, Path]:
    """``logs/rank_N.log`` by rank."""
    logs = {}
    for path in (run_dir / LOGS_SUBDIR).glob("rank_*.log"):
        number = path.stem.removeprefix("rank_")
        if number.isdigit():
            logs[int(number)] = path
    return dict(sorted(logs.items()))


def submitit_task_logs(run_dir: Path) -> dict[int, Path]:
    """submitit's ``slurm/JOBID_TASK_log.out`` by task (= rank), of the newest job id there."""
    by_job: dict[str, dict[int, Path]] = {}
    folder = run_dir / LOG_FOLDER
    for path in folder.glob("*_log.out") if folder.is_dir() else []:
        match = SUBMITIT_TASK_LOG.match(path.name)
        if match:
            by_job.setdefault(match.group(1), {})[int(match.group(2))] = path
    if not by_job:
        return {}
    newest = max(by_job, key=lambda job: tuple(int(part) for part in job.split("_")))
    return dict(sorted(by_job[newest].items()))


# --- processes -----------------------------------------------------------------------------------

def _boot_time() -> float:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def process_start(pid: int) -> float | None:
    """When the process started (epoch seconds), or None where /proc cannot tell."""
    try:
        ticks = int(_stat_fields(pid)[19])
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """The process runs (not a zombie); with ``started_by``, it also started no later than that
    (a pid reused by a later process is not the one the log names)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):
        if _stat_fields(pid)[0] in ("Z", "X"):
            return False
    if started_by is not None:
        start = process_start(pid)
        if start is not None and start > started_by + 2:
            return False
    return True


def parent_pid(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return None


def process_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def live_ranks(run_dir: Path) -> tuple[list[Attempt], list[Attempt]]:
    """Latest attempt of every rank: (those alive on this host, those on other hosts)."""
    here = socket.gethostname()
    alive, elsewhere = [], []
    for log in rank_logs(run_dir).values():
        found = attempts(log)
        if not found:
            continue
        latest = found[-1]
        if latest.host != here:
            elsewhere.append(latest)
        elif process_alive(latest.pid, latest.started_epoch):
            alive.append(latest)
    return alive, elsewhere


# --- Slurm ---------------------------------------------------------------------------------------

def slurm_job_id(run_dir: Path) -> str | None:
    """The Slurm job of this run dir: from submitit's file names in ``DIR/slurm/`` (the newest
    job there), else from the templates' dir name ``slurm-JOBID``."""
    folder = run_dir / LOG_FOLDER
    ids = set()
    if folder.is_dir():
        for path in folder.iterdir():
            match = SUBMITIT_FILE.match(path.name)
            if match:
                ids.add(match.group(1))
    if ids:
        return max(ids, key=lambda job: tuple(int(part) for part in job.split("_")))
    match = RUN_DIR_NAME_JOB.match(run_dir.resolve().name)
    return match.group(1) if match else None


# --- progress, failure ---------------------------------------------------------------------------

def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written or foreign file: status still answers
        return {}
    return cast("dict[str, Any]", loaded) if isinstance(loaded, dict) else {}


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The last complete record of metrics.jsonl (a torn last line is skipped)."""
    path = run_dir / METRICS_FILE
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "epoch" in record:
                return record
    return None


def epoch_end_times(log: Path, attempt: Attempt) -> list[tuple[int, float]]:
    """(epoch number 1-based, when its log line was written) in this attempt of rank 0's log."""
    try:
        with log.open("rb") as file:
            file.seek(attempt.offset)
            data = file.read(attempt.end - attempt.offset)
    except OSError:
        return []
    start = attempt.started_epoch
    day = datetime.fromtimestamp(start).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    times, previous = [], start
    for match in EPOCH_LINE.finditer(data):
        hour, minute, second, epoch, _ = (int(group) for group in match.groups())
        at = day + hour * 3600 + minute * 60 + second
        while at < previous - 1:  # past midnight
            at += 86400
            day += 86400
        times.append((epoch, at))
        previous = at
    return times


@dataclass
class Progress:
    epoch: int  # epochs done
    epochs: int | None
    val_loss: float | None
    val_acc: float | None
    samples_per_s: float | None
    epoch_s: float | None = None  # mean epoch duration in the latest attempt
    eta_s: float | None = None


def progress(run_dir: Path, config: dict[str, Any], running: bool) -> Progress | None:
    record = last_metrics(run_dir)
    if record is None:
        return None
    trainer = config["trainer"] if isinstance(config.get("trainer"), dict) else {}
    epochs = trainer.get("epochs") if isinstance(trainer.get("epochs"), int) else None
    done = int(record["epoch"]) + 1
    result = Progress(done, epochs, record.get("val_loss"), record.get("val_acc"), record.get("samples_per_s"))
    log = rank_logs(run_dir).get(0)
    found = attempts(log) if log else []
    if log and found:
        times = epoch_end_times(log, found[-1])
        if len(times) >= 2:
            result.epoch_s = (times[-1][1] - times[0][1]) / (len(times) - 1)
        elif times:  # one epoch: from the attempt's start (includes start-up)
            result.epoch_s = max(0.0, times[0][1] - found[-1].started_epoch)
        if result.epoch_s is not None and epochs is not None and running:
            since_last = time.time() - times[-1][1]
            result.eta_s = max(0.0, result.epoch_s * (epochs - done) - since_last)
    return result


def failure_info(run_dir: Path) -> dict[str, Any] | None:
    """``failure.json`` (local launcher), else the first failure the Slurm tasks recorded under
    ``DIR/failures`` (``launcher=slurm`` and the templates), with where its traceback is."""
    path = run_dir / FAILURE_FILE
    record = _load_json(path) if path.exists() else None
    where = []
    if isinstance(record, dict):
        where.append(f"{path} (\"traceback\")")
    else:
        failures = run_dir / FAILURES_DIR
        recorded = recorded_failures(failures) if failures.is_dir() else []
        if not recorded:
            return None
        first = first_failure(failures, {failure.rank: (1, failure.time) for failure in recorded})
        if first is None:
            return None
        record = asdict(first)
        record_path = failures / f"rank_{first.rank}.attempt_{first.attempt}.json"
        where.append(f"{record_path} (\"traceback\")")
    rank = record.get("rank")
    log = run_dir / LOGS_SUBDIR / f"rank_{rank}.log"
    if log.exists():
        where.append(str(log))
    error = str(record.get("error") or "")
    code = record.get("exit_code")
    headline = error.strip().splitlines()[0] if error.strip() else (
        f"exited with code {code}" if code is not None else "failed")
    return {"rank": rank, "host": record.get("host"), "exit_code": code, "error": headline,
            "traceback_last_line": (str(record.get("traceback") or "").strip().splitlines() or [""])[-1],
            "traceback_in": where}


def _tail_lines(path: Path, count: int = LAST_LINES) -> list[str]:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 8192))
            data = file.read()
    except OSError:
        return []
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-count:]


# --- status --------------------------------------------------------------------------------------

def looks_like_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (
        CONFIG_FILE, LOGS_SUBDIR, LOG_FOLDER, SUMMARY_FILE, FAILURE_FILE, METRICS_FILE, "launcher.log"))


def check_run_dir(path: Path) -> Path:
    if not path.exists():
        raise NotARunDir(f"{path}: no such directory")
    if not looks_like_run_dir(path):
        raise NotARunDir(f"{path} is not a run directory (no config.yaml, logs/, slurm/, summary.json "
                         "or failure.json in it)")
    return path


@dataclass
class Status:
    run_dir: str
    state: str  # finished, failed, running, pending, requeued, cancelled, stopped, unknown
    detail: str
    target: str
    slurm: dict[str, Any] | None
    attempts: int
    latest_attempt: dict[str, Any] | None
    alive_pids: list[int]
    progress: dict[str, Any] | None
    failure: dict[str, Any] | None
    summary: dict[str, Any] | None
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)


def refused_as_not_a_run_dir(run_dir: Path) -> bool:
    """The commands' shared check: True, after the one-line error, when ``run_dir`` is no run."""
    try:
        check_run_dir(run_dir)
    except NotARunDir as why:
        print(f"error: {why}", file=sys.stderr)
        return True
    return False


def launcher_log_verdict(run_dir: Path) -> tuple[str, str] | None:
    """What the launcher logged at the end of its latest start in ``launcher.log``: every rank
    finished (how a script's run, which writes no summary, is known to have finished), or it was
    interrupted (Ctrl-C, SIGTERM)."""
    try:
        text = (run_dir / "launcher.log").read_text(errors="replace")
    except OSError:
        return None
    start = text.rfind(" INFO starting ")
    tail = text[start:] if start >= 0 else text
    if re.search(r" INFO all ranks finished$", tail, re.MULTILINE):
        return "finished", "launcher.log: all ranks finished"
    interrupted = re.search(r" ERROR (interrupted \(.*?\)).*$", tail, re.MULTILINE)
    if interrupted:
        return "stopped", f"launcher.log: {interrupted.group(1)}"
    return None


def _target(config: dict[str, Any]) -> str:
    script = config.get("script")
    if not script:
        return "built-in trainer" if config else "unknown (no config.yaml)"
    kind = "module" if config.get("script_module") else "executable" if config.get("no_python") else "script"
    return f"{kind} {script}"


def _slurm_run_state(slurm: SlurmState) -> tuple[str, str]:
    state = slurm.state
    if state is None:
        return "unknown", f"Slurm job {slurm.job_id}: state unknown ({slurm.note})"
    detail = f"Slurm job {slurm.job_id} is {state} ({slurm.source})"
    if state in ("RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"):
        return "running", detail
    if state in ("PENDING", "SUSPENDED", "STOPPED"):
        return state.lower(), detail
    if state in REQUEUED:
        return "requeued", detail
    if state == "COMPLETED":
        return "finished", detail
    if state == "CANCELLED":
        return "cancelled", detail
    if state in ENDED:
        return "failed", detail
    return state.lower(), detail


def status(run_dir: Path) -> Status:
    check_run_dir(run_dir)
    config = read_config(run_dir)
    logs = rank_logs(run_dir)
    rank0 = attempts(logs[0]) if 0 in logs else []
    summary = _load_json(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).exists() else None
    failure = failure_info(run_dir)
    job_id = slurm_job_id(run_dir)
    slurm = None
    alive: list[Attempt] = []
    if summary is not None:
        state, detail = "finished", f"{SUMMARY_FILE} written"
    elif (run_dir / FAILURE_FILE).exists():
        state, detail = "failed", f"{FAILURE_FILE} written"
    elif job_id is not None:
        slurm = job_state(job_id)
        state, detail = _slurm_run_state(slurm)
        if state == "pending" and rank0:  # it ran before: Slurm requeued it, it waits to run again
            state, detail = "requeued", f"{detail} after {len(rank0)} attempt(s)"
    else:
        alive, elsewhere = live_ranks(run_dir)
        if alive:
            state = "running"
            detail = "rank process(es) alive on this host: " + ", ".join(
                f"rank {a.rank} pid {a.pid}" for a in alive)
        elif elsewhere:
            state = "unknown"
            detail = ("the ranks run on " + ", ".join(sorted({a.host for a in elsewhere}))
                      + ": their processes cannot be checked from this host")
        elif (verdict := launcher_log_verdict(run_dir)) is not None:
            state, detail = verdict
        elif not logs:
            state, detail = "stopped", "no summary, no failure and no rank log: killed before any rank started, or still starting?"
        else:
            state, detail = "stopped", "no summary, no failure: killed?"
    if slurm is None and job_id is not None and state in ("finished", "failed"):
        slurm = SlurmState(job_id, None, note="not asked: the run dir says it ended")
    running = state == "running"
    prog = progress(run_dir, config, running)
    ranks = {}
    if not config or config.get("script") or prog is None:
        sources = logs or submitit_task_logs(run_dir)
        for rank, path in sources.items():
            ranks[rank] = {"log": str(path), "last_lines": _tail_lines(path)}
    latest = rank0[-1] if rank0 else None
    return Status(
        run_dir=str(run_dir), state=state, detail=detail, target=_target(config),
        slurm=asdict(slurm) if slurm else None, attempts=len(rank0),
        latest_attempt=({"number": latest.number, "host": latest.host, "pid": latest.pid,
                         "started": latest.started} if latest else None),
        alive_pids=[a.pid for a in alive], progress=asdict(prog) if prog else None,
        failure=failure, summary=summary if isinstance(summary, dict) else None, ranks=ranks)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "?"


def format_status(found: Status) -> str:
    lines = [f"run dir:   {found.run_dir}",
             f"state:     {found.state} ({found.detail})",
             f"target:    {found.target}"]
    if found.slurm and found.slurm.get("state") is None and found.state not in ("unknown",):
        lines.append(f"slurm:     job {found.slurm['job_id']}")
    latest = found.latest_attempt
    if latest:
        lines.append(f"attempts:  {found.attempts} (latest: attempt {latest['number']} on {latest['host']}, "
                     f"pid {latest['pid']}, started {latest['started']})")
    else:
        lines.append("attempts:  0 (no attempt marker in logs/rank_0.log)")
    prog = found.progress
    if prog:
        epochs = f"{prog['epoch']}/{prog['epochs']}" if prog["epochs"] else str(prog["epoch"])
        accuracy = f" val_acc={_num(prog['val_acc'])}" if prog["val_acc"] is not None else ""
        text = f"epoch {epochs}  val_loss={_num(prog['val_loss'])}{accuracy}  {_num(prog['samples_per_s'], 0)} samples/s"
        if prog["epoch_s"] is not None:
            text += f"  ({_duration(prog['epoch_s'])}/epoch)"
        if prog["eta_s"] is not None:
            text += f"  eta {_duration(prog['eta_s'])}"
        lines.append(f"progress:  {text}")
    elif found.target == "built-in trainer":
        lines.append("progress:  no epoch finished yet (metrics.jsonl empty or missing)")
    summary = found.summary
    if summary:
        accuracy = f"val_acc={_num(summary['val_acc'])} " if summary.get("val_acc") is not None else ""
        lines.append(f"summary:   {accuracy}val_loss={_num(summary.get('val_loss'))} "
                     f"world_size={summary.get('world_size', '?')} wall {_duration(summary.get('wall_s') or 0)}")
    failure = found.failure
    if failure:
        code = f", exit code {failure['exit_code']}" if failure.get("exit_code") is not None else ""
        lines.append(f"failure:   rank {failure['rank']} on {failure['host']}{code}: {failure['error']}")
        lines.append(f"traceback: {', '.join(failure['traceback_in'])}")
    for rank, info in found.ranks.items():
        lines.append(f"rank {rank}:    {info['log']}")
        lines.extend(f"    | {line}" for line in info["last_lines"])
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launcher.status",
                                     description="State, progress and failure of a run directory.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object, for machines")
    args = parser.parse_args(argv)
    try:
        found = status(args.run_dir)
    except NotARunDir as why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(found), indent=2, default=str))
    else:
        print(format_status(found))
    return 0


# --- logs ----------------------------------------------------------------------------------------

def run_ended(run_dir: Path, job_id: str | None) -> bool:
    if (run_dir / SUMMARY_FILE).exists() or (run_dir / FAILURE_FILE).exists():
        return True
    if launcher_log_verdict(run_dir) is not None:
        return True
    if job_id is not None:
        return job_state(job_id).state in ENDED
    return False


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _follow(files: list[tuple[Path, int]], run_dir: Path, job_id: str | None, quiet_s: float = 2.0,
            poll_s: float = 0.2) -> None:
    """Print what is appended to each file after its offset until interrupted or, once the run has
    ended, until no file has grown for ``quiet_s``."""
    last_growth = time.monotonic()
    next_check, ended = 0.0, False
    with contextlib.ExitStack() as stack:
        opened = []
        for path, offset in files:
            file = stack.enter_context(path.open("rb"))
            file.seek(offset)
            opened.append(file)
        while True:
            grew = False
            for file in opened:
                chunk = file.read(65536)
                if chunk:
                    _write(chunk)
                    grew = True
            if grew:
                last_growth = time.monotonic()
                continue
            now = time.monotonic()
            if not ended and now >= next_check:
                ended = run_ended(run_dir, job_id)
                next_check = now + (1.0 if job_id is None else 5.0)
            if ended and now - last_growth >= quiet_s:
                return
            time.sleep(poll_s)


def logs_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launcher.logs", description="Print a rank's log.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing what is appended (ends by itself once the run has ended)")
    parser.add_argument("--attempt", default="latest", help="N, latest (default) or all")
    args = parser.parse_args(argv)
    if args.attempt not in ("latest", "all") and not args.attempt.isdigit():
        parser.error(f"--attempt {args.attempt}: a number, latest or all")
    run_dir = args.run_dir
    if refused_as_not_a_run_dir(run_dir):
        return 2
    logs, fallback = rank_logs(run_dir), False
    if not logs and (run_dir / LOG_FOLDER).is_dir():
        logs, fallback = submitit_task_logs(run_dir), True
    if args.rank not in logs:
        there = ", ".join(map(str, logs)) or "none"
        where = f"{run_dir / LOG_FOLDER} (submitit's task logs)" if fallback else str(run_dir / LOGS_SUBDIR)
        print(f"error: no log of rank {args.rank} in {where}; ranks there: {there}", file=sys.stderr)
        return 2
    path = logs[args.rank]
    start, end = 0, None
    if fallback:
        if args.attempt != "latest":
            print(f"note: {path} is submitit's task log (no attempt markers): the whole file",
                  file=sys.stderr)
    elif args.attempt != "all":
        found = attempts(path)
        if args.attempt == "latest":
            chosen = found[-1] if found else None
        else:
            matching = [a for a in found if a.number == int(args.attempt)]
            if not matching:
                numbers = ", ".join(sorted({str(a.number) for a in found}, key=int)) or "none"
                print(f"error: no attempt {args.attempt} in {path}; attempts there: {numbers}", file=sys.stderr)
                return 2
            chosen = matching[-1]
            end = None if chosen is found[-1] else chosen.end
        if chosen is not None:
            start = chosen.offset
    # submitit's task log holds the task's stdout; its stderr (logging, tracebacks) is beside it.
    stderr = path.with_name(path.name.removesuffix(".out") + ".err") if fallback else None
    try:
        with path.open("rb") as file:
            file.seek(start)
            data = file.read() if end is None else file.read(end - start)
        _write(data)
        follow = [(path, start + len(data))]
        if stderr is not None and stderr.exists():
            _write(f"==== {stderr.name} (the task's stderr) ====\n".encode())
            err = stderr.read_bytes()
            _write(err)
            follow.append((stderr, len(err)))
        if args.follow and end is None:
            _follow(follow, run_dir, slurm_job_id(run_dir))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --- cancel --------------------------------------------------------------------------------------

def _command_line(pid: int | None) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except OSError:
        return b""


def local_launchers(ranks: list[Attempt]) -> dict[int, list[int]]:
    """The launcher process of each live rank, accepted only where it is alive and the rank's
    parent, or its grandparent through the fork server that warm ranks come from (``launcher.warm``):
    the rank's ``LAUNCHER_PARENT_PID`` (exported by the launcher to its ranks) names it; where the
    server is a fork of the launcher, neither it nor the rank ever started a program of its own
    (``/proc`` shows the environment and command line a process was started with, which are the
    launcher's), so the launcher is the grandparent that has the same command line as both."""
    from launcher.child import PARENT_PID_ENV

    found: dict[int, list[int]] = {}
    for rank in ranks:
        declared = process_env(rank.pid).get(PARENT_PID_ENV, "")
        parent = parent_pid(rank.pid)
        grandparent = parent_pid(parent) if parent else None
        if declared.isdigit() and int(declared) in (parent, grandparent):
            launcher: int | None = int(declared)
        elif _command_line(rank.pid) == _command_line(parent) == _command_line(grandparent) != b"":
            launcher = grandparent
        else:
            launcher = None
        if launcher and process_alive(launcher):
            found.setdefault(launcher, []).append(rank.rank)
    return found


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if process_alive(pid)]
    return left


def cancel_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launcher.cancel",
                                     description="Stop a run: scancel its Slurm job, or SIGTERM its local launcher.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--wait", type=float, default=60.0,
                        help="local runs: seconds to wait for the launcher to stop its ranks (default 60)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir
    if refused_as_not_a_run_dir(run_dir):
        return 2
    job_id = slurm_job_id(run_dir)
    if job_id is not None:
        state = job_state(job_id)
        if state.state in ENDED:
            print(f"Slurm job {job_id} already ended ({state.state}): nothing to cancel")
            return 0
        try:
            done = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired) as why:
            print(f"error: scancel {job_id} failed: {why}", file=sys.stderr)
            return 1
        if done.returncode != 0:
            print(f"error: scancel {job_id}: {done.stderr.strip()}", file=sys.stderr)
            return 1
        print(f"scancel {job_id}: sent (job was {state.state or 'in an unknown state'}); the ranks get "
              "SIGTERM, checkpoint and stop without requeueing")
        return 0
    if (run_dir / SUMMARY_FILE).exists() or (run_dir / FAILURE_FILE).exists():
        ended = SUMMARY_FILE if (run_dir / SUMMARY_FILE).exists() else FAILURE_FILE
        print(f"the run has ended ({ended} written): nothing to cancel")
        return 0
    alive, elsewhere = live_ranks(run_dir)
    if not alive:
        if elsewhere:
            hosts = ", ".join(sorted({a.host for a in elsewhere}))
            print(f"the ranks ran on {hosts}, not here: stop the launcher there (Ctrl-C, or SIGTERM to "
                  "its pid), or run this command on that host")
            return 1
        print("nothing of this run is running on this host: nothing to cancel")
        return 0
    launchers = local_launchers(alive)
    if not launchers:
        pids = ", ".join(f"rank {a.rank}: pid {a.pid}" for a in alive)
        print(f"ranks are running ({pids}) but their launcher could not be identified (not started by "
              "`python -m launcher` on this host, e.g. an srun task); stop the launcher with Ctrl-C or "
              "SIGTERM, which stops every rank", file=sys.stderr)
        return 1
    for pid, ranks in launchers.items():
        os.kill(pid, signal.SIGTERM)
        print(f"sent SIGTERM to the launcher (pid {pid}, parent of rank(s) {', '.join(map(str, ranks))}); "
              "it stops every rank of the job", flush=True)
    left = _wait_gone(list(launchers), args.wait)
    if left:
        print(f"the launcher is still running after {args.wait:.0f}s (pid {', '.join(map(str, left))})",
              file=sys.stderr)
        return 1
    print("stopped")
    return 0
