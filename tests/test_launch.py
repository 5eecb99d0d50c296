"""Real 2-process gloo jobs on this machine, in both launch modes."""

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import DDP_SCRIPT, TINY, assert_ok, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # real jobs: several processes each

MODES = ["torchrun", "mp_spawn"]


@pytest.mark.parametrize("mode", MODES)
def test_user_script_gets_the_environment_contract(launcher, tmp_path, mode):
    out = tmp_path / "ranks"
    launch = launcher.run(f"launcher={mode}", f"script={DDP_SCRIPT}", f"script_args=[{out}]")
    assert_ok(launch)
    records = [json.loads((out / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    for rank, record in enumerate(records):
        assert record["RANK"] == str(rank) and record["LOCAL_RANK"] == str(rank)
        assert record["WORLD_SIZE"] == "2" and record["LOCAL_WORLD_SIZE"] == "2"
        assert record["NODE_RANK"] == "0" and record["MASTER_ADDR"] == "127.0.0.1"
        assert record["sum"] == 3.0  # all_reduce of rank+1 over both ranks really happened
    assert records[0]["MASTER_PORT"] == records[1]["MASTER_PORT"]
    wait_for_no_leftovers(launcher.job_ids[-1])


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The default job (no overrides but the run dir), once per mode."""
    from tests.conftest import Launcher

    runs = {}
    for mode in MODES:
        runner = Launcher(tmp_path_factory.mktemp(mode))
        runs[mode] = runner.run(f"launcher={mode}")
        runner.kill_leftovers()
    return runs


def test_default_run_trains_to_stated_accuracy(default_runs):
    launch = default_runs["torchrun"]
    assert_ok(launch)
    summary = launch.summary()
    assert summary["val_acc"] >= 0.9, summary
    assert summary["world_size"] == 2 and summary["gpus_per_node"] == [2] and summary["nodes"] == 1
    assert summary["backend"] == "gloo" and summary["launcher"] == "torchrun"
    assert summary["epochs"] == 6 and summary["global_step"] > 0
    assert summary["train_samples_per_s"] > 0 and summary["wall_s"] > 0


def test_modes_give_identical_weights(default_runs):
    for launch in default_runs.values():
        assert_ok(launch)
    hashes = {mode: launch.summary()["weights_sha256"] for mode, launch in default_runs.items()}
    assert hashes["torchrun"] == hashes["mp_spawn"], hashes
    assert default_runs["mp_spawn"].summary()["launcher"] == "mp_spawn"


def test_logs_from_rank0_only_with_rank_prefix(default_runs):
    launch = default_runs["mp_spawn"]
    info_lines = [line for line in launch.stderr.splitlines() if " INFO " in line]
    assert any(line.startswith("[rank 0]") for line in info_lines)
    assert not [line for line in info_lines if line.startswith("[rank 1]")]
    train_log = (launch.run_dir / "train.log").read_text().splitlines()
    assert train_log and all(line.startswith("[rank 0]") for line in train_log)
    metrics = [json.loads(line) for line in (launch.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in metrics] == list(range(6))
    assert metrics[-1]["val_acc"] == launch.summary()["val_acc"]


def test_one_run_dir_shared_by_all_ranks(default_runs):
    launch = default_runs["torchrun"]
    workdir = launch.run_dir.parent
    assert sorted(path.name for path in workdir.iterdir()) == ["data", "run"], "no second output dir"
    config = (launch.run_dir / "config.yaml").read_text()
    assert "${" not in config and "run_dir: " + str(launch.run_dir) in config
    assert (launch.run_dir / "checkpoints" / "last.pt").exists()


def prepare_calls(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "prepare_calls").read_text().splitlines()]


@pytest.mark.parametrize("scope", ["global", "node"])
def test_data_prepared_exactly_once_per_scope(launcher, tmp_path, scope):
    root = tmp_path / "cache"
    common = [*TINY, "data.dataset._target_=tests.plugins.CountingSynthetic", f"data.root={root}",
              f"data.cache_scope={scope}", "launcher=mp_spawn"]
    assert_ok(launcher.run(*common, run_dir=tmp_path / "first"))
    assert_ok(launcher.run(*common, run_dir=tmp_path / "second"))
    calls = prepare_calls(root)
    assert [(call["rank"], call["cached"]) for call in calls] == [(0, False), (0, True)]
    assert len(list(root.glob("synthetic-*.npz"))) == 1


def test_waiting_ranks_outlast_the_collective_timeout_while_data_is_prepared(launcher, tmp_path):
    # Rank 0 prepares for 10 s; collectives time out after 4 s. The others must keep waiting.
    launch = launcher.run(*TINY, "collective_timeout=4", "data.dataset._target_=tests.plugins.CountingSynthetic",
                          "+data.dataset.delay_s=10", f"data.root={tmp_path / 'cache'}")
    assert_ok(launch)
    assert launch.summary()["global_step"] > 0


def test_sampler_shards_are_disjoint_cover_the_data_and_reshuffle_each_epoch(launcher, tmp_path):
    root = tmp_path / "cache"
    # 1000 samples, 20% held out: 800 training samples, 400 per rank per epoch.
    launch = launcher.run("data.dataset.num_samples=1000", "trainer.epochs=2", f"data.root={root}",
                          "data.dataset._target_=tests.plugins.IndexRecordingSynthetic")
    assert_ok(launch)
    seen = {rank: [int(i) for i in (root / f"train_indices_rank{rank}").read_text().split()]
            for rank in (0, 1)}
    assert all(len(indices) == 800 for indices in seen.values())
    for epoch in (0, 1):
        shards = [set(seen[rank][epoch * 400:(epoch + 1) * 400]) for rank in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == 400
        assert not shards[0] & shards[1], "ranks saw the same sample in one epoch"
        assert shards[0] | shards[1] == set(range(800)), "the epoch did not cover the data set"
    assert seen[0][:400] != seen[0][400:], "same order in both epochs: set_epoch was not called"


def test_a_single_run_is_checked_once(launcher, tmp_path):
    """The callback's check is the task's: one validation, one port pick, one CUDA probe."""
    program = f"""
import sys
import launcher.app as app
from launcher.__main__ import main
calls = []
checked = app.load_checked
app.load_checked = lambda *args: calls.append(1) or checked(*args)
sys.argv = ["launcher", "hydra.run.dir={tmp_path / 'run'}", "trainer.epochs=1", "data.dataset.num_samples=256"]
try:
    main()
finally:
    print("checks:", len(calls))
"""
    proc = launcher.run_command([sys.executable, "-c", program], launcher.env(launcher.new_job_id()), timeout_s=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "checks: 1"
