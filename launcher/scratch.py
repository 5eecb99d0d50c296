"""A job's scratch directory in TMPDIR, which outlives no launcher for long.

A job needs a few files only while it runs: the ranks' error reports and the file store
(``errors/``), an empty working directory for the fork server (``cwd/``), and multiprocessing's
sockets: the fork server's, and any that the processes started during the job make through
multiprocessing (a DataLoader worker handing a batch over by file descriptor, a user's own). A
launcher removes them when the job ends, but one killed with SIGKILL (by the OOM killer, a
scheduler, a user) cannot, and they used to pile up in TMPDIR as ``launcher-errors-*``,
``launcher-warm-*`` and ``pymp-*``, three per killed launcher.

So they live in one directory, ``launcher-XXXXXXXX``, whose ``.lock`` the launcher holds with
``flock`` (and so do the processes forked from it: a fork server forked from the launcher, and its
ranks). The kernel drops the lock when the last of them ends, however it ends. Each launcher,
before making its own, removes every ``launcher-*`` directory whose lock it can take: nobody is
left to use it. A directory without a lock (from an older launcher, or not ours) is left alone.
A process id in the name would not do: ids are reused, and a job spans several processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing.process
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "launcher-"
LOCK_NAME = ".lock"
# Made under another name, locked, then renamed into view: no other launcher can see it unlocked.
_UNLOCKED_PREFIX = ".launcher-new-"
log = logging.getLogger("launcher")


@dataclass(frozen=True)
class Scratch:
    """A job's scratch directory and what is in it."""

    directory: Path

    @property
    def errors(self) -> Path:
        """The ranks' error reports and the file store."""
        return self.directory / "errors"

    @property
    def cwd(self) -> Path:
        """The fork server's empty working directory."""
        return self.directory / "cwd"


def remove_abandoned(parent: Path) -> list[Path]:
    """Remove the scratch directories in ``parent`` that no live process holds; returns them."""
    removed = []
    for directory in sorted(parent.glob(PREFIX + "*")):
        try:
            lock = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no lock: not a scratch directory of this kind, or not ours to read
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a process of that job is alive
            os.close(lock)
            continue
        try:
            shutil.rmtree(directory)
            removed.append(directory)
        except OSError as error:  # another user's, say; never a reason to stop a launch
            log.debug("could not remove the abandoned %s: %s", directory, error)
        finally:
            os.close(lock)
    return removed


@contextlib.contextmanager
def scratch_directory() -> Iterator[Scratch]:
    """A new scratch directory, locked until it is removed at the end; meanwhile multiprocessing
    makes its sockets there."""
    parent = Path(tempfile.gettempdir())
    removed = remove_abandoned(parent)
    if removed:
        log.info("removed %d scratch director%s left in %s by killed launchers",
                 len(removed), "y" if len(removed) == 1 else "ies", parent)
    unlocked = Path(tempfile.mkdtemp(prefix=_UNLOCKED_PREFIX, dir=parent))
    lock = os.open(unlocked / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # nobody else knows this directory yet: at once
        directory = parent / (PREFIX + unlocked.name.removeprefix(_UNLOCKED_PREFIX))
        os.rename(unlocked, directory)
    except BaseException:
        os.close(lock)
        shutil.rmtree(unlocked, ignore_errors=True)
        raise
    try:
        scratch = Scratch(directory)
        scratch.errors.mkdir()
        scratch.cwd.mkdir()
        with _multiprocessing_temp_dir(directory):
            yield scratch
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(lock)


@contextlib.contextmanager
def _multiprocessing_temp_dir(directory: Path) -> Iterator[None]:
    """Where multiprocessing makes its sockets while inside, in this process and in the processes
    it starts meanwhile (which copy the setting): a private field, which
    ``multiprocessing.util.get_temp_dir`` reads before it makes a ``pymp-*`` directory."""
    config: dict[str, object] = multiprocessing.process.current_process()._config  # type: ignore[attr-defined]
    before = config.get("tempdir")
    config["tempdir"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            config.pop("tempdir", None)
        else:
            config["tempdir"] = before
