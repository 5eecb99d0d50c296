"""Files the trainer writes: atomically (temporary file, fsync, rename, fsync of the directory),
under temporary names no other process on any host can pick, and read back leniently."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from trainer.logs import get_logger

log = get_logger("files")


def temporary_path(path: Path, suffix: str = ".tmp") -> Path:
    """``.NAME.HOST.PID.RANDOM.tmp`` next to ``path``: unique per host and process (ranks of several
    nodes share a run directory on a network file system), and per call."""
    host = socket.gethostname().replace(os.sep, "_") or "host"
    return path.with_name(f".{path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into a temporary file, fsync, rename over ``path``: a crash leaves either the
    old content or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def link_atomic(source: Path, path: Path) -> None:
    """``path`` becomes another name of ``source``'s file (a hard link, no copy), replacing what
    was there in one rename: a reader sees the old file or the new one."""
    tmp = temporary_path(path)
    os.link(source, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda file: file.write(text.encode()))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line that does not parse (the torn last line of a
    process killed while appending) is skipped with a warning."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s: line %d is not a complete JSON record (torn by a crash?): skipped", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            log.warning("%s: line %d is not a JSON object: skipped", path, number)
    return records
