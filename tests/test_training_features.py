"""Training options that must change the arithmetic exactly as documented (not just "it runs")."""

from __future__ import annotations

import json
import math
import shlex
import subprocess

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import Launcher, assert_ok, wait_for_no_leftovers
from trainer.schedules import warmup_cosine_factor

pytestmark = pytest.mark.slow  # real jobs: several processes each

# 2560 samples, 20 % held out: 1024 per rank, so batches of 32 and 64 both tile an epoch exactly.
EVEN = ["data.dataset.num_samples=2560", "trainer.epochs=2", "launcher=mp_spawn", "gpus=2", "trainer.curves=false"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """EVEN with every default (fp32, batch 64, lr 0.1, eager): the run most tests compare with."""
    runner = Launcher(tmp_path_factory.mktemp("baseline"))
    launch = runner.run(*EVEN, run_dir=runner.workdir / "run")
    runner.kill_leftovers()
    assert_ok(launch)
    return launch


def final_weights(launch) -> dict[str, torch.Tensor]:
    return torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_accumulating_two_half_batches_equals_one_full_batch(launcher, tmp_path, baseline):
    full = baseline  # batch 64
    halves = launcher.run(*EVEN, "data.batch_size=32", "trainer.accumulate=2", run_dir=tmp_path / "halves")
    assert_ok(halves)
    assert full.summary()["global_step"] == halves.summary()["global_step"] == 32  # optimizer steps
    assert halves.summary()["accumulate"] == 2
    assert max_difference(final_weights(full), final_weights(halves)) < 1e-5
    plain_half = launcher.run(*EVEN, "data.batch_size=32", run_dir=tmp_path / "plain")
    assert_ok(plain_half)
    assert max_difference(final_weights(full), final_weights(plain_half)) > 1e-3, "the check cannot tell"


def test_bf16_autocast_on_cpu_trains_and_changes_the_arithmetic(launcher, tmp_path, baseline):
    fp32 = baseline
    bf16 = launcher.run(*EVEN, "trainer.precision=bf16", run_dir=tmp_path / "bf16")
    assert_ok(bf16)
    assert bf16.summary()["precision"] == "bf16"
    assert bf16.summary()["weights_sha256"] != fp32.summary()["weights_sha256"], "autocast had no effect"
    assert abs(bf16.summary()["val_acc"] - fp32.summary()["val_acc"]) < 0.05


def test_clipping_to_a_tiny_norm_leaves_the_weights_where_no_learning_would(launcher, tmp_path):
    common = [*EVEN, "trainer.epochs=1", "save.every_epochs=1"]
    frozen = launcher.run(*common, "optim.lr=0", run_dir=tmp_path / "frozen")
    clipped = launcher.run(*common, "trainer.clip_grad_norm=1e-9", "optim.weight_decay=0",
                           run_dir=tmp_path / "clipped")
    assert_ok(frozen)
    assert_ok(clipped)
    assert max_difference(final_weights(frozen), final_weights(clipped)) < 1e-7


def scalars(run_dir, tag: str) -> dict[int, float]:
    """One TensorBoard tag as {step: value}, read the way `tensorboard --logdir` reads it."""
    files = [path for path in run_dir.rglob("events.out.tfevents.*")]
    assert len(files) == 1, f"expected one event file (rank 0's), found {files}"
    events = EventAccumulator(str(files[0].parent))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_warmup_cosine_moves_every_step_and_tensorboard_shows_it(launcher, tmp_path):
    # 32 optimizer steps (16 per epoch): 8 of linear warm-up, then the cosine down to 0.
    launch = launcher.run(*EVEN, "sched=cosine", "sched.scheduler.warmup=8", "trainer.tensorboard_every_steps=1",
                          run_dir=tmp_path / "run")
    assert_ok(launch)
    lrs = scalars(launch.run_dir, "train/lr")  # the lr each optimizer step used
    assert sorted(lrs) == list(range(1, 33))
    for step, lr in lrs.items():
        assert lr == pytest.approx(0.1 * warmup_cosine_factor(step - 1, 32, 8, 0.01, 0.0), rel=1e-6, abs=1e-9)
    assert lrs[1] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.1)  # warm-up, then the peak
    assert all(lrs[s] < lrs[s + 1] for s in range(1, 9)) and all(lrs[s] > lrs[s + 1] for s in range(9, 32))
    records = metrics(launch.run_dir)
    val_acc = scalars(launch.run_dir, "epoch/val_acc")
    assert val_acc == pytest.approx({r["global_step"]: r["val_acc"] for r in records}, abs=1e-6)
    for tag in ("train/batch_loss", "epoch/train_loss", "epoch/val_loss", "epoch/samples_per_s"):
        assert scalars(launch.run_dir, tag), f"no {tag} in TensorBoard"
    assert all(r["samples_per_s"] > 0 for r in records)
    assert "%|" not in launch.stderr, "a progress bar was drawn into a pipe"


def test_multistep_schedule_per_epoch(launcher, tmp_path):
    launch = launcher.run(*EVEN, "sched=multistep", "sched.scheduler.milestones=[1]", run_dir=tmp_path / "run")
    assert_ok(launch)
    lrs = scalars(launch.run_dir, "train/lr")  # every 10th step by default
    assert lrs == pytest.approx({10: 0.1, 20: 0.01, 30: 0.01})
    assert [r["lr"] for r in metrics(launch.run_dir)] == pytest.approx([0.01, 0.01])


def test_linear_lr_scaling_equals_the_scaled_lr_given_by_hand(launcher, tmp_path, baseline):
    by_hand = baseline  # lr 0.1
    scaled = launcher.run(*EVEN, "optim.lr=0.05", "optim.scale_lr=linear", run_dir=tmp_path / "scaled")
    sqrt = launcher.run(*EVEN, "trainer.epochs=1", "optim.lr=0.05", "optim.scale_lr=sqrt",
                        run_dir=tmp_path / "sqrt")
    assert_ok(scaled)
    assert_ok(sqrt)
    assert scaled.summary()["lr"] == pytest.approx(0.1)
    assert scaled.summary()["weights_sha256"] == by_hand.summary()["weights_sha256"]
    assert sqrt.summary()["lr"] == pytest.approx(0.05 * math.sqrt(2))


def test_deterministic_mode_refuses_an_op_without_a_deterministic_kernel(launcher, tmp_path):
    plugin = ["model._target_=tests.plugins.PutMLP", "trainer.epochs=1", "data.dataset.num_samples=512"]
    strict = launcher.run(*plugin, "deterministic=true", run_dir=tmp_path / "strict")
    assert strict.returncode != 0
    assert "put_ does not have a deterministic implementation" in strict.stderr, strict.stderr[-3000:]
    assert "rank 0" in strict.stderr
    relaxed = launcher.run(*plugin, "cudnn_benchmark=true", run_dir=tmp_path / "relaxed")
    assert_ok(relaxed)
    assert relaxed.summary()["deterministic"] is False and relaxed.summary()["cudnn_benchmark"] is True


def test_eval_mode_reproduces_the_training_metrics_at_any_world_size(launcher, tmp_path, baseline):
    trained = baseline
    last = trained.run_dir / "checkpoints" / "last.pt"
    for world_size in (3, 1):  # 512 validation samples: 3 ranks get unequal shards
        evaluated = launcher.run("trainer.mode=eval", f"checkpoint={last}", f"gpus={world_size}",
                                 "data.dataset.num_samples=2560", "launcher=mp_spawn",
                                 run_dir=tmp_path / f"eval{world_size}")
        assert_ok(evaluated)
        result = evaluated.summary()
        assert result["mode"] == "eval" and result["world_size"] == world_size
        assert result["val_samples"] == 512 and result["checkpoint_global_step"] == 32
        assert result["weights_sha256"] == trained.summary()["weights_sha256"]
        assert result["val_acc"] == trained.summary()["val_acc"]
        assert result["val_loss"] == pytest.approx(trained.summary()["val_loss"], abs=1e-6)
        assert not (evaluated.run_dir / "checkpoints").exists(), "evaluation wrote a checkpoint"


def test_progress_bar_on_a_terminal_only_from_rank_0(launcher, tmp_path):
    """`script` gives the launcher a pseudo-terminal, as an interactive shell would."""
    job_id = launcher.new_job_id()
    command = launcher.command(tmp_path / "run", ("trainer.epochs=1", "data.dataset.num_samples=2560",
                                                  "data.batch_size=16"))
    # A fresh pseudo-terminal is 0 columns wide; a real one has a size (tqdm draws to fit it).
    shell = f"stty cols 120 rows 40; exec {shlex.join(command)}"
    result = subprocess.run(["script", "-qefc", shell, "/dev/null"], cwd=launcher.workdir,
                            env=launcher.env(job_id), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    wait_for_no_leftovers(job_id)
    lines = [line.removeprefix("[rank 0] ") for line in result.stdout.replace("\r", "\n").splitlines()]
    bar = [line for line in lines if line.startswith("epoch 1/1:")]
    assert bar, f"no progress bar on the terminal:\n{result.stdout[-2000:]}"
    assert any("100%" in line and "64/64" in line for line in bar), bar[-3:]  # 1024 samples / 16 per batch
    assert any("loss=" in line for line in bar), bar[-3:]
    assert sum("| 0/64 [" in line for line in bar) == 1, f"not exactly one bar was started: {bar}"


def test_compile_runs_the_model_through_inductor(launcher, tmp_path, baseline):
    cache = tmp_path / "inductor"
    compiled = launcher.run(*EVEN, "trainer.compile=true", run_dir=tmp_path / "compiled",
                            env={"TORCHINDUCTOR_CACHE_DIR": str(cache)})
    eager = baseline
    assert_ok(compiled)
    assert compiled.summary()["compiled"] is True
    assert any(path.suffix == ".py" for path in cache.rglob("*")), "inductor generated no kernels"
    assert compiled.summary()["val_loss"] == pytest.approx(eager.summary()["val_loss"], abs=1e-4)
