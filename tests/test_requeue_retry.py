"""`scontrol requeue` is retried with back-off: slurmctld under load answers with a timeout now and
then. A failing slurmctld cannot be produced on demand here, so `scontrol` is a script on PATH that
fails a given number of times, as a busy controller would."""

import os
from pathlib import Path

import pytest

from trainer import preemption

FLAKY_SCONTROL = """#!/bin/sh
count=$(cat "$CALLS" 2>/dev/null || echo 0)
echo $((count + 1)) > "$CALLS"
echo "$@" >> "$CALLS.args"
if [ "$count" -lt "$FAILURES" ]; then
    echo "slurm_requeue error: Socket timed out on send/recv operation" >&2
    exit 1
fi
"""


@pytest.fixture
def flaky_scontrol(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(FLAKY_SCONTROL)
    script.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setattr(preemption, "REQUEUE_BACKOFF_S", (0.01, 0.01, 0.01))
    return calls


def calls_made(calls: Path) -> int:
    return int(calls.read_text())


def test_requeue_succeeds_after_transient_failures(flaky_scontrol, monkeypatch):
    monkeypatch.setenv("FAILURES", "2")
    assert preemption.requeue_this_job(max_requeues=3) is True
    assert calls_made(flaky_scontrol) == 3
    assert Path(f"{flaky_scontrol}.args").read_text().splitlines() == ["requeue 4242"] * 3


def test_requeue_gives_up_after_four_tries(flaky_scontrol, monkeypatch):
    monkeypatch.setenv("FAILURES", "99")
    assert preemption.requeue_this_job(max_requeues=3) is False
    assert calls_made(flaky_scontrol) == 4
