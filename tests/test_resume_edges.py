"""Resume edge cases: no pickles between ranks, metrics and TensorBoard after a resume, resuming with
another configuration, exact resume with DataLoader workers and random augmentation, and the
files the trainer writes."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, assert_ok, run_for_module, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # real jobs: several processes each

# TINY: 1024 samples, 20% held out: 819 to train, 410 per rank, 64 per step: 7 steps per epoch,
# 2 epochs = 14 steps. FaultyMLP's forward N is optimizer step N - 1 (forward 1 settles DDP).
FAULTY = "model._target_=tests.plugins.FaultyMLP"
PICKLE_FREE = "data.dataset._target_=tests.plugins.PickleFreeSynthetic"
NOISY = "data.dataset._target_=tests.plugins.NoisySynthetic"
TORN = '{"epoch": 1, "global_step": 1'


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The TINY job with FaultyMLP, never stopped, run once for the module: its weights and
    records do not depend on the checkpoint cadence, nor on the data set refusing pickles (the
    same samples), so the exact-resume tests of those compare with this one run."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    launch = run_for_module(directory, *TINY, FAULTY, run_dir=directory / "run")
    assert_ok(launch)
    return launch


def kill_at(launcher, run_dir, marker, fault_step, *overrides):
    """Run until rank 0 SIGKILLs the launcher during training forward ``fault_step``."""
    fault = [f"+model.fault_step={fault_step}", "+model.action=kill_job", f"+model.marker={marker}"]
    killed = launcher.run(*TINY, FAULTY, *overrides, *fault, run_dir=run_dir)
    assert killed.returncode == -9, f"the job was not killed:\n{killed.stderr[-3000:]}"
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=15)
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scalars(run_dir, tag):
    """One TensorBoard tag as [(step, value)], read the way `tensorboard --logdir` reads it."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


# --- A: no pickles between ranks ------------------------------------------------------------------

def test_resume_exact_with_no_pickling_collective_and_the_checkpoint_sent_as_tensors(launcher, tmp_path,
                                                                                   uninterrupted):
    """Every collective that pickles raises in the ranks; rank 1 does not see the checkpoint file,
    so rank 0 sends it as tensors. The resumed run still ends with the uninterrupted weights."""
    overrides = [PICKLE_FREE, "+data.dataset.hide_checkpoint=true", "save.every_steps=3"]
    run_dir = tmp_path / "run"
    state = kill_at(launcher, run_dir, tmp_path / "marker", 6, *overrides)  # checkpoint: step 3
    assert state["progress"]["step_in_epoch"] == 3
    assert len(state["rng"]) == 2
    for rank_state in state["rng"]:  # byte tensors of a fixed layout, no pickled tuples
        assert set(rank_state) == {"torch", "numpy", "python"}
        assert all(value.dtype == torch.uint8 for value in rank_state.values())
    resumed = launcher.run(*TINY, FAULTY, *overrides, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert "rank 0 sends the checkpoint as tensors" in resumed.stderr
    assert resumed.summary()["weights_sha256"] == uninterrupted.summary()["weights_sha256"]


# --- B: metrics.jsonl and TensorBoard after a resume ----------------------------------------------

def test_resume_keeps_the_last_epochs_points_and_skips_a_torn_metrics_line(launcher, tmp_path):
    run_dir = tmp_path / "run"
    tensorboard = ["trainer.tensorboard_every_steps=1"]
    state = kill_at(launcher, run_dir, tmp_path / "marker", 11, *tensorboard)  # step 10; checkpoint: 7
    assert state["progress"] == {**state["progress"], "epoch": 1, "step_in_epoch": 0, "global_step": 7}
    with (run_dir / "metrics.jsonl").open("a") as metrics:
        metrics.write(TORN)  # killed while appending
    resumed = launcher.run(*TINY, FAULTY, *tensorboard, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert "not a complete JSON record" in resumed.stderr
    assert [record["epoch"] for record in records(run_dir)] == [0, 1]
    # The epoch the checkpoint completed keeps its point (purge_step is the step after it).
    assert [step for step, _ in scalars(run_dir, "epoch/val_loss")] == [7, 14]
    assert [step for step, _ in scalars(run_dir, "train/batch_loss")] == list(range(1, 15))

    # The curves and the sweep report read a torn line as the trainer does: skipped, no crash.
    from launcher.report import _curve
    from trainer.curves import plot_curves

    with (run_dir / "metrics.jsonl").open("a") as metrics:
        metrics.write(TORN)
    plot_curves(run_dir / "metrics.jsonl", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert [record["epoch"] for record in _curve(run_dir)] == [0, 1]


def test_a_rerun_that_fails_at_start_leaves_metrics_alone_and_a_resume_drops_records_past_the_checkpoint(
        launcher, tmp_path, uninterrupted):
    checkpointing = ["save.every_steps=3", "save.every_epochs=0"]
    reference = uninterrupted
    run_dir = tmp_path / "run"
    # Killed in step 8: the checkpoint is at step 6 (epoch 0), epoch 0's record is logged (step 7).
    state = kill_at(launcher, run_dir, tmp_path / "marker", 9, *checkpointing)
    assert state["progress"]["epoch"] == 0 and state["progress"]["global_step"] == 6
    before = (run_dir / "metrics.jsonl").read_text()
    assert [record["epoch"] for record in records(run_dir)] == [0]
    failed = launcher.run(*TINY, FAULTY, *checkpointing, "+model.fault_step=1", "resume=auto", run_dir=run_dir)
    assert failed.returncode != 0
    assert "deliberate fault" in failed.stderr
    assert (run_dir / "metrics.jsonl").read_text() == before, "metrics.jsonl changed before training resumed"
    resumed = launcher.run(*TINY, FAULTY, *checkpointing, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert resumed.summary()["weights_sha256"] == reference.summary()["weights_sha256"]
    keys = ("epoch", "global_step", "train_loss", "val_loss", "val_acc", "lr")
    assert [{key: record[key] for key in keys} for record in records(run_dir)] == \
           [{key: record[key] for key in keys} for record in records(reference.run_dir)]
    assert [step for step, _ in scalars(run_dir, "epoch/val_loss")] == [7, 14]


def test_metrics_and_checkpoint_agree_after_a_crash_between_them(launcher, tmp_path, uninterrupted):
    """From step 6 on, metrics.jsonl cannot be written (a directory in its place): the run dies at
    the end of epoch 0, where it writes the epoch's record and its checkpoint. Whichever comes
    first, the resumed run logs every epoch exactly once."""
    checkpointing = ["save.every_steps=3"]
    reference = uninterrupted
    run_dir = tmp_path / "run"
    blocking = ["model._target_=tests.plugins.MetricsBlockingMLP", "+model.fault_step=7",
                f"+model.marker={run_dir / 'metrics.jsonl'}"]
    crashed = launcher.run(*TINY, *blocking, *checkpointing, run_dir=run_dir)
    assert crashed.returncode != 0
    assert "IsADirectoryError" in crashed.stderr
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=15)
    (run_dir / "metrics.jsonl").rmdir()
    progress = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["progress"]
    resumed = launcher.run(*TINY, FAULTY, *checkpointing, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert [record["epoch"] for record in records(run_dir)] == [0, 1], progress
    assert [record["val_loss"] for record in records(run_dir)] == \
           [record["val_loss"] for record in records(reference.run_dir)]
    assert [step for step, _ in scalars(run_dir, "epoch/val_loss")] == [7, 14]


# --- C: resuming with another configuration -------------------------------------------------------

def test_more_epochs_after_the_end_rederive_the_schedule(launcher, tmp_path):
    run_dir = tmp_path / "run"
    first = launcher.run(*TINY, "trainer.tensorboard_every_steps=1", run_dir=run_dir)
    assert_ok(first)
    first_weights = first.summary()["weights_sha256"]
    extended = launcher.run(*TINY, "trainer.epochs=3", "trainer.tensorboard_every_steps=1", "resume=auto",
                            run_dir=run_dir)
    assert_ok(extended)
    assert "trainer.epochs 2 in the checkpoint, 3 now" in extended.stderr
    assert "schedule is re-derived" in extended.stderr
    # Cosine over 21 steps, at step 14 of it: 0.1 * (1 + cos(2 pi / 3)) / 2 = 0.025, not lr 0.
    lrs = dict(scalars(run_dir, "train/lr"))
    assert lrs[15] == pytest.approx(0.025, rel=1e-5)
    assert all(lrs[step] > 0 for step in range(15, 21))
    assert extended.summary()["global_step"] == 21
    assert extended.summary()["weights_sha256"] != first_weights, "the third epoch did not train"
    assert [record["epoch"] for record in records(run_dir)] == [0, 1, 2]


def test_another_sample_order_is_refused_mid_epoch_and_allowed_at_an_epoch_boundary(launcher, tmp_path):
    run_dir = tmp_path / "run"
    checkpointing = ["save.every_steps=3"]
    state = kill_at(launcher, run_dir, tmp_path / "marker", 6, *checkpointing)  # checkpoint: step 3
    assert state["progress"]["step_in_epoch"] == 3
    refused = launcher.run(*TINY, FAULTY, *checkpointing, "data.batch_size=32", "seed=5", "resume=auto",
                           run_dir=run_dir)
    assert refused.returncode != 0
    assert "failed first: ValueError: cannot resume mid-epoch (epoch 0, micro-batch 3)" in refused.stderr
    error = json.loads((run_dir / "failure.json").read_text())["error"]
    assert "seed 0 in the checkpoint, 5 now" in error and "data.batch_size 64 in the checkpoint, 32 now" in error
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=15)
    resumed = launcher.run(*TINY, FAULTY, *checkpointing, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert resumed.summary()["global_step"] == 14
    # At an epoch boundary (the end of the run), another batch size is allowed, with a warning.
    more = launcher.run(*TINY, FAULTY, *checkpointing, "trainer.epochs=3", "data.batch_size=32", "resume=auto",
                        run_dir=run_dir)
    assert_ok(more)
    assert "resuming at the start of epoch 2 with another sample order" in more.stderr
    assert "data.batch_size 64 in the checkpoint, 32 now" in more.stderr
    assert more.summary()["global_step"] == 14 + 13  # 410 samples per rank, 32 per step


# --- D: exact resume with DataLoader workers and random augmentation ------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_random_augmentation_resumes_exactly(launcher, tmp_path, workers):
    overrides = [NOISY, f"data.num_workers={workers}", "save.every_steps=3"]
    reference = launcher.run(*TINY, FAULTY, *overrides, run_dir=tmp_path / "reference")
    assert_ok(reference)
    run_dir = tmp_path / "run"
    state = kill_at(launcher, run_dir, tmp_path / "marker", 11, *overrides)  # checkpoint: step 9
    assert state["progress"]["epoch"] == 1 and state["progress"]["step_in_epoch"] == 2
    resumed = launcher.run(*TINY, FAULTY, *overrides, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert resumed.summary()["weights_sha256"] == reference.summary()["weights_sha256"]


# --- E: files ------------------------------------------------------------------------------------

def test_temporary_files_are_unique_per_host_and_process_and_written_with_fsync(tmp_path, monkeypatch):
    from trainer import checkpoint, train
    from trainer.data import SyntheticClassification
    from trainer.monitor import Monitor

    renamed, synced = [], []
    replace, fsync = os.replace, os.fsync

    def recording_replace(source, destination):
        renamed.append(Path(source).name)
        return replace(source, destination)

    def recording_fsync(descriptor):
        synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")).name)
        return fsync(descriptor)

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    checkpoint.save_atomic({"x": torch.zeros(1)}, tmp_path / "last.pt")
    checkpoint.save_atomic({"x": torch.ones(1)}, tmp_path / "last.pt")
    train.write_summary(tmp_path, {"mode": "train"})
    SyntheticClassification(str(tmp_path), 64, 4, 2, 1.0, 0.25, 0).prepare()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    monitor = Monitor(tmp_path, False, False, 10, resumed_step=5, keep_epochs_before=1)
    monitor.end_epoch({"epoch": 1, "global_step": 10, "train_loss": 1.0, "val_loss": 1.0, "val_acc": 0.5,
                       "samples_per_s": 1.0})

    unique = f".{socket.gethostname()}.{os.getpid()}."
    assert len(renamed) == 5 and len(set(renamed)) == 5, renamed
    assert all(unique in name for name in renamed), renamed
    assert set(renamed) <= set(synced), "a file was renamed into place without fsync"
    assert json.loads((tmp_path / "summary.json").read_text()) == {"mode": "train"}
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"
