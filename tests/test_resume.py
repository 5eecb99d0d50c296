"""A job killed and resumed ends with exactly the weights of one that was never interrupted."""

import pytest
import torch

from tests.conftest import (
    assert_no_litter,
    assert_ok,
    litter,
    run_for_module,
    wait_for_no_leftovers,
)

pytestmark = pytest.mark.slow  # real jobs: several processes each

# 2048 samples, 20% held out, 64 per rank per step: 13 steps per epoch, 3 epochs = 39 steps.
SMALL = ["data.dataset.num_samples=2048", "trainer.epochs=3", "model._target_=tests.plugins.FaultyMLP",
         "trainer.curves=false"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``uninterrupted(ranks)``: the summary of the SMALL job run without a stop on that many
    ranks, made once for the module. The weights do not depend on the launch mode, the checkpoint
    cadence or Slurm's stop check, so every kill-and-resume test of a world size compares with
    the same run (and the torchrun case also with an mp_spawn run)."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    summaries: dict[int, dict] = {}

    def summary(ranks: int) -> dict:
        if ranks not in summaries:
            launch = run_for_module(directory, *SMALL, "launcher=mp_spawn", f"gpus={ranks}",
                                    run_dir=directory / f"ranks{ranks}")
            assert_ok(launch)
            summaries[ranks] = launch.summary()
        return summaries[ranks]

    return summary


def killed_then_resumed(launcher, tmp_path, overrides, fault_step):
    run_dir = tmp_path / "interrupted"
    marker = tmp_path / "fault_marker"
    fault = [f"+model.fault_step={fault_step}", "+model.action=kill_job", f"+model.marker={marker}"]
    killed = launcher.run(*SMALL, *overrides, *fault, run_dir=run_dir)
    assert killed.returncode == -9, f"the job was not killed:\n{killed.stderr[-3000:]}"
    assert marker.exists() and not (run_dir / "summary.json").exists()
    (run_dir / "failure.json").write_text("{}")  # a report from an earlier attempt
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=15)
    progress = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["progress"]
    resumed = launcher.run(*SMALL, *overrides, *fault, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert "resumed at epoch" in resumed.stderr
    assert not (run_dir / "failure.json").exists(), "a stale failure report survived a good run"
    return progress, resumed.summary()


@pytest.mark.parametrize(
    ("mode", "ranks", "checkpointing", "fault_step", "expect_mid_epoch", "total_steps"),
    [
        ("torchrun", 2, ["save.every_epochs=1"], 20, False, 39),  # last checkpoint: end of epoch 1
        ("mp_spawn", 2, ["save.every_steps=5"], 23, True, 39),    # last checkpoint: step 20, mid-epoch
        # Four ranks (7 steps per epoch): with more than two, the gradient sum's order depends on
        # DDP's bucket layout, which a resumed process must not lay out differently.
        ("mp_spawn", 4, ["save.every_steps=5"], 12, True, 21),
    ],
    ids=["epoch-boundary", "mid-epoch", "mid-epoch-4-ranks"],
)
def test_resume_after_kill_gives_identical_weights(launcher, tmp_path, uninterrupted, mode, ranks, checkpointing,
                                                   fault_step, expect_mid_epoch, total_steps):
    overrides = [f"launcher={mode}", f"gpus={ranks}", *checkpointing]
    reference = uninterrupted(ranks)
    progress, resumed = killed_then_resumed(launcher, tmp_path, overrides, fault_step)
    assert (progress["step_in_epoch"] > 0) == expect_mid_epoch, progress
    assert progress["global_step"] < fault_step
    assert resumed["global_step"] == reference["global_step"] == total_steps
    assert resumed["weights_sha256"] == reference["weights_sha256"]
    assert resumed["val_loss"] == reference["val_loss"]


def test_resume_auto_without_checkpoint_starts_fresh(launcher):
    launch = launcher.run("data.dataset.num_samples=512", "trainer.epochs=1", "trainer.curves=false", "resume=auto")
    assert_ok(launch)
    assert "resumed" not in launch.stderr and launch.summary()["global_step"] > 0


def test_checkpoint_holds_what_resume_needs_and_loads_safely(launcher):
    launch = launcher.run("data.dataset.num_samples=512", "trainer.epochs=1", "trainer.curves=false")
    assert_ok(launch)
    state = torch.load(launch.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert set(state) >= {"model", "optimizer", "scheduler", "progress", "rng", "world_size"}
    assert len(state["rng"]) == 2 and state["progress"]["epoch"] == 1
    assert not any(key.startswith("module.") for key in state["model"]), "saved the DDP wrapper"
    assert not list((launch.run_dir / "checkpoints").glob(".*tmp")), "temporary file left behind"


def test_resume_with_another_world_size_restarts_the_epoch(launcher, tmp_path, short_tmpdir):
    """Also: the killed launcher's scratch directory (`launcher.scratch`) is removed by the next."""
    run_dir, marker = tmp_path / "run", tmp_path / "fault_marker"
    common = [*SMALL, "trainer.epochs=1", "save.every_steps=3", "+model.fault_step=5",
              "+model.action=kill_job", f"+model.marker={marker}"]
    own_tmpdir = {"TMPDIR": str(short_tmpdir)}
    assert launcher.run(*common, "gpus=2", run_dir=run_dir, env=own_tmpdir).returncode == -9
    wait_for_no_leftovers(launcher.job_ids[-1], timeout_s=15)
    left = litter(short_tmpdir)
    assert len(left) == 1 and left[0].startswith("launcher-"), left
    resumed = launcher.run(*common, "gpus=1", "resume=auto", run_dir=run_dir, env=own_tmpdir)
    assert_ok(resumed)
    assert_no_litter(short_tmpdir)
    assert "checkpoint from world size 2, now 1" in resumed.stderr
    assert "epoch 0 restarts from its beginning" in resumed.stderr
    # 3 steps at world size 2, then the whole epoch at world size 1: 1638 samples / 64 = 26 steps.
    assert resumed.summary()["global_step"] == 3 + 26


def test_time_limit_signal_stops_every_rank_at_one_step_and_resumes_exactly(launcher, tmp_path, uninterrupted):
    """Slurm's USR1 reaches one rank during step 9: all four stop after the same step (the next
    agreement, step 12), checkpoint, and a resumed run ends as if never stopped. Outside a real
    job the requeue fails, so the job ends non-zero with the checkpoint written."""
    overrides = [*SMALL, "launcher=mp_spawn", "gpus=4", "trainer.stop_check_steps=4",
                 "save.every_epochs=0"]
    slurm_job = {"SLURM_JOB_ID": "424242"}
    run_dir, marker = tmp_path / "stopped", tmp_path / "signal_marker"
    # Forward 10 is step 9: each process's first forward is DDP's bucket-settling pass.
    signal_once = ["+model.fault_step=10", "+model.rank=2", "+model.action=usr1", f"+model.marker={marker}"]
    stopped = launcher.run(*overrides, *signal_once, run_dir=run_dir, env=slurm_job)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert "stopping after step checkpoint: SIGUSR1 received" in stopped.stderr
    assert "scontrol requeue 424242 failed" in stopped.stderr
    progress = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["progress"]
    assert progress["global_step"] == 12 and progress["step_in_epoch"] == 5, progress
    resumed = launcher.run(*overrides, *signal_once, "resume=auto", run_dir=run_dir, env=slurm_job)
    assert_ok(resumed)
    assert resumed.summary()["weights_sha256"] == uninterrupted(4)["weights_sha256"]


def test_time_limit_signal_after_max_requeues_stops_without_requeueing(launcher, tmp_path):
    overrides = [*SMALL, "launcher=mp_spawn", "trainer.stop_check_steps=2", "slurm.max_requeues=2",
                 "+model.fault_step=3", "+model.action=usr1", f"+model.marker={tmp_path / 'marker'}"]
    third_attempt = {"SLURM_JOB_ID": "424242", "SLURM_RESTART_COUNT": "2"}
    stopped = launcher.run(*overrides, env=third_attempt)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert "slurm.max_requeues=2 reached: not requeued" in stopped.stderr
    assert "scontrol" not in stopped.stderr, "no requeue may be attempted"
    assert (stopped.run_dir / "checkpoints" / "last.pt").exists()
