"""Checkpoints written in the background (trainer/writer.py): a snapshot the training thread may
change at once, at most one write in flight, errors raised in the training thread, the files in the
order ``Checkpoints`` always wrote them, and a process killed mid-write keeping the previous one."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from tests.conftest import REPO
from trainer import checkpoint
from trainer.checkpoint import Checkpoints
from trainer.writer import BackgroundWriter

TIMEOUT_S = 30.0


def held_writes(monkeypatch):
    """``save_atomic`` in the writer blocks until the returned event is set."""
    release = threading.Event()
    real = checkpoint.save_atomic

    def held(state, path):
        assert release.wait(TIMEOUT_S), "the test never released the writer"
        real(state, path)

    monkeypatch.setattr(checkpoint, "save_atomic", held)
    return release


def test_the_written_state_is_the_one_at_submit_not_the_live_tensors_later(tmp_path, monkeypatch):
    release = held_writes(monkeypatch)
    weights = torch.zeros(4)
    state = {"model": {"w": weights}, "history": [torch.ones(2)], "step": 1}
    checkpoints = Checkpoints(tmp_path)
    checkpoints.submit(state, global_step=1)
    weights.add_(5.0)  # the next optimizer step, while the writer has not written yet
    state["history"][0].zero_()
    state["history"].append(torch.ones(1))
    release.set()
    checkpoints.wait()
    saved = checkpoint.load(checkpoints.last)
    assert torch.equal(saved["model"]["w"], torch.zeros(4))
    assert len(saved["history"]) == 1 and torch.equal(saved["history"][0], torch.ones(2))


def test_a_new_checkpoint_waits_for_the_previous_write(tmp_path):
    writer = BackgroundWriter()
    order: list[str] = []
    release = threading.Event()

    def first() -> None:
        order.append("first starts")
        assert release.wait(TIMEOUT_S), "the test never released the first write"
        order.append("first ends")

    writer.submit(first)
    submitter = threading.Thread(target=writer.submit, args=(lambda: order.append("second"),))
    submitter.start()
    submitter.join(timeout=0.5)
    assert submitter.is_alive(), "submit returned while the previous write was still in flight"
    assert order == ["first starts"]
    release.set()
    submitter.join(timeout=TIMEOUT_S)
    assert not submitter.is_alive(), f"submit still blocked {TIMEOUT_S} s after the first write ended"
    writer.wait()
    assert order == ["first starts", "first ends", "second"]


def test_a_failed_write_is_raised_at_the_next_checkpoint_and_at_the_end(tmp_path):
    writer = BackgroundWriter()

    def failing() -> None:
        raise OSError("disk full")

    writer.submit(failing)
    with pytest.raises(RuntimeError, match="writing a checkpoint failed: disk full") as raised:
        writer.submit(lambda: None)
    assert isinstance(raised.value.__cause__, OSError)
    writer.wait()  # reported once: the next checkpoint may succeed

    writer.submit(failing)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.wait()


def test_a_checkpoint_that_cannot_be_written_fails_at_wait(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    checkpoints = Checkpoints(tmp_path)
    checkpoints.submit({"w": torch.zeros(1)}, global_step=1)
    with pytest.raises(RuntimeError, match="writing a checkpoint failed"):
        checkpoints.wait()


def test_rotation_and_best_link_in_the_background(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep_last=2)
    for step in (3, 6, 9):
        checkpoints.submit({"step": step}, global_step=step, best=step == 6)
    checkpoints.wait()
    assert sorted(path.name for path in checkpoints.folder.glob("step-*.pt")) == \
        ["step-000000006.pt", "step-000000009.pt"]
    assert checkpoint.load(checkpoints.last)["step"] == 9
    assert os.path.samefile(checkpoints.last, checkpoints.folder / "step-000000009.pt")
    assert checkpoint.load(checkpoints.best)["step"] == 6  # its own name: survives the rotation

    checkpoints.submit({"step": 10}, global_step=10, last=False, best=True)  # best only
    checkpoints.wait()
    assert checkpoint.load(checkpoints.best)["step"] == 10
    assert checkpoint.load(checkpoints.last)["step"] == 9
    assert not os.path.samefile(checkpoints.last, checkpoints.best)


# A process that writes checkpoint 1, then starts checkpoint 2 whose write stops half way (a
# slow file system): it says so with a marker file and keeps training; the test SIGKILLs it there.
CRASHING_WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    import torch
    from trainer.checkpoint import Checkpoints

    run_dir = Path(sys.argv[1])
    checkpoints = Checkpoints(run_dir)
    weights = torch.zeros(1000)
    checkpoints.submit({"step": 1, "w": weights}, global_step=1)
    checkpoints.wait()

    real_save = torch.save

    def half_written(state, file):
        real_save(state, run_dir / "whole")
        data = (run_dir / "whole").read_bytes()
        file.write(data[:len(data) // 2])
        file.flush()
        (run_dir / "inside-write").write_text("")
        threading.Event().wait(120)  # SIGKILLed before this ends

    torch.save = half_written
    weights.add_(1.0)
    checkpoints.submit({"step": 2, "w": weights}, global_step=2)
    weights.add_(1.0)  # training goes on while the writer writes
    (run_dir / "training-goes-on").write_text("")
    threading.Event().wait(120)
""")


@pytest.mark.slow
def test_a_process_killed_mid_write_keeps_the_previous_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], env=env,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        markers = [tmp_path / "inside-write", tmp_path / "training-goes-on"]
        while not all(marker.exists() for marker in markers):
            assert child.poll() is None, f"the writer process ended early:\n{child.stderr.read().decode()}"
            assert time.monotonic() < deadline, f"no {[m.name for m in markers if not m.exists()]} in 60 s"
            time.sleep(0.05)
        partial = list((tmp_path / "checkpoints").glob(".last.pt.*.tmp"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0, "the write was not under way"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved["step"] == 1 and torch.equal(saved["w"], torch.zeros(1000))


def test_the_fingerprint_that_tells_ranks_they_see_rank_0s_file(tmp_path):
    """Files of the same state match, of another state (one element changed) do not; a file of
    another format is hashed whole."""
    first, same, changed, other = (tmp_path / name for name in ("a.pt", "b.pt", "c.pt", "d.pt"))
    checkpoint.save_atomic({"w": torch.ones(8)}, first)
    checkpoint.save_atomic({"w": torch.ones(8)}, same)
    checkpoint.save_atomic({"w": torch.ones(8).index_fill_(0, torch.tensor([7]), 2.0)}, changed)
    assert first.stat().st_size == changed.stat().st_size
    with open(first, "rb") as file:
        fingerprint = checkpoint._fingerprint(file)
        assert file.tell() == 0
    for seen in (first, same):
        with checkpoint._sees(seen, seen.stat().st_size, fingerprint) as file:
            assert torch.load(file, weights_only=True)["w"].sum() == 8
    assert checkpoint._sees(changed, changed.stat().st_size, fingerprint) is None
    other.write_bytes(b"not a zip file")
    with open(other, "rb") as file:
        whole = checkpoint._fingerprint(file)
    other.write_bytes(b"not a zip filE")
    with open(other, "rb") as file:
        assert checkpoint._fingerprint(file) != whole
