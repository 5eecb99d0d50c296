"""A job's scratch directory (`launcher.scratch`): a killed launcher's is removed by the next
launcher, a live one's never. The end-to-end case (a launcher killed mid-training, then a resume in
the same TMPDIR) is in tests/test_resume.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from launcher.scratch import LOCK_NAME, scratch_directory
from tests.conftest import REPO

HOLDER = """
import sys
from launcher.scratch import scratch_directory
with scratch_directory() as scratch:
    print(scratch.directory, flush=True)
    sys.stdin.read()  # until the test closes it
"""


def holder(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A process holding a scratch directory in ``tmp_path``, as a launcher does while its job runs."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # EOF (empty) if it failed: the assert says so
    assert line, f"the holder did not start: exit {process.wait(timeout=30)}"
    return process, Path(line)


def test_a_killed_launchers_scratch_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed, abandoned = holder(tmp_path)
    alive, held = holder(tmp_path)
    older = tmp_path / "launcher-errors-abcd1234"  # an older launcher's, without a lock: not ours to judge
    older.mkdir()
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert abandoned.is_dir() and (abandoned / LOCK_NAME).exists(), "SIGKILL removed nothing: still there"
    try:
        with scratch_directory() as mine:
            assert not abandoned.exists(), "a killed launcher's scratch directory was kept"
            assert held.is_dir() and (held / "errors").is_dir(), "a live launcher's scratch directory was removed"
            assert older.is_dir()
            assert mine.errors.is_dir() and mine.cwd.is_dir()
        assert not mine.directory.exists()
    finally:
        alive.communicate("", timeout=30)
    assert alive.returncode == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [older.name], "left behind"


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failing_job_removes_its_scratch_directory(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(failure), scratch_directory() as scratch:
        (scratch.errors / "rank_0.attempt_0.json").write_text("{}")
        raise failure()
    assert list(tmp_path.iterdir()) == []
