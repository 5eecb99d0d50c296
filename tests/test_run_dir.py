"""The run directory: a rerun never loses an earlier run, two launches never share one, and a
``resume=`` file that is no checkpoint of the built-in trainer is one line before anything starts."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launcher.config import check_run_dir, checkpoint_problem, outputs_to_replace, pickled_dict_keys
from launcher.errors import ConfigError
from launcher.jobs import launcher_log_verdict
from tests.conftest import assert_ok, run_for_module

TINY_RUN = ["trainer.epochs=1", "data.dataset.num_samples=256", "trainer.curves=false"]
TRAINER_KEYS = {"model": {}, "optimizer": {}, "scheduler": None, "scaler": {}, "progress": {"epoch": 1},
                "rng": [], "world_size": 2, "seed": 0}
# A Slurm step on one node, seen from its second task (rank 1: it hosts no rendezvous store).
SLURM_TASK_1 = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                "SLURM_NTASKS": "2", "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "2",
                "SLURM_JOB_NODELIST": "127.0.0.1"}


def snapshot(run_dir: Path) -> dict[Path, tuple[int, bytes]]:
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in run_dir.rglob("*") if path.is_file()}


def assert_one_line_error(launch, *texts: str) -> str:
    assert launch.returncode == 2, launch.stderr
    lines = launch.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{launch.stderr}"
    assert lines[0].startswith("error: invalid config: "), lines[0]
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run (2 epochs), made once for the module; beside it, ``pristine``, a copy of it
    as it ended."""
    directory = tmp_path_factory.mktemp("previous_run")
    run_dir = directory / "earlier"
    assert_ok(run_for_module(directory, "trainer.epochs=2", "data.dataset.num_samples=256", run_dir=run_dir))
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "checkpoints/last.pt", ".hydra/config.yaml",
                 "curves.png"):  # drawn by default
        assert (run_dir / name).exists(), name
    shutil.copytree(run_dir, directory / "pristine", symlinks=True)
    return run_dir


@pytest.fixture
def previous_run(finished_run) -> Path:
    """A finished run in its own directory, as a user would find it later: the module's run, put
    back as it ended (same path, files and times) for each test."""
    shutil.rmtree(finished_run)
    shutil.copytree(finished_run.parent / "pristine", finished_run, symlinks=True)
    return finished_run


# --- 1. a rerun into a run directory that holds a run ----------------------------------------------

@pytest.mark.slow  # a real job first (previous_run)
def test_rerun_without_resume_or_overwrite_is_refused_and_touches_nothing(launcher, previous_run):
    before = snapshot(previous_run)
    launch = launcher.run(*TINY_RUN, run_dir=previous_run)
    assert_one_line_error(launch, f"hydra.run.dir='{previous_run}'", "resume=auto", "overwrite=true")
    assert "Traceback" not in launch.stderr
    # .hydra/ (which Hydra rewrites once a run starts), checkpoints, summary: all as they were.
    assert snapshot(previous_run) == before
    assert any(path.parent.name == ".hydra" for path in before)


@pytest.mark.slow  # a real job first (previous_run)
def test_dry_run_into_a_previous_run_is_refused_too(launcher, previous_run):
    before = snapshot(previous_run)
    assert_one_line_error(launcher.run("dry_run=true", run_dir=previous_run), "overwrite=true")
    assert snapshot(previous_run) == before


@pytest.mark.slow  # real jobs
def test_overwrite_true_replaces_the_previous_run_without_mixing(launcher, previous_run):
    old_summary = (previous_run / "summary.json").read_text()
    leftovers = [previous_run / "checkpoints" / "old.pt", previous_run / "tensorboard" / "events.old",
                 previous_run / "logs" / "rank_7.log", previous_run / "failure.json"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from the earlier run")
    launch = launcher.run(*TINY_RUN, "overwrite=true", run_dir=previous_run)
    assert_ok(launch)
    assert not [path for path in leftovers if path.exists()], "outputs of the earlier run survived"
    assert (previous_run / "summary.json").read_text() != old_summary
    # One epoch now: the earlier run's two metrics records are gone, not appended to.
    assert len((previous_run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (previous_run / "checkpoints" / "last.pt").exists()
    assert not (previous_run / "curves.png").exists(), "the earlier run's curves.png survived trainer.curves=false"
    # launcher.log is the directory's history (README): both launches, the latest one finished.
    assert (previous_run / "launcher.log").read_text().count(" INFO starting ") == 2
    assert launcher_log_verdict(previous_run) == ("finished", "launcher.log: all ranks finished")


@pytest.mark.slow  # real jobs
def test_resume_auto_continues_the_previous_run(launcher, previous_run):
    launch = launcher.run("trainer.epochs=3", "data.dataset.num_samples=256", "resume=auto",
                          run_dir=previous_run)
    assert_ok(launch)
    assert "resumed at epoch 2" in launch.stderr
    assert len((previous_run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow  # a real job first (previous_run)
def test_overwrite_and_resume_together_are_refused(launcher, previous_run):
    before = snapshot(previous_run)
    assert_one_line_error(launcher.run("overwrite=true", "resume=auto", run_dir=previous_run),
                          "overwrite=True", "resume=auto")
    assert snapshot(previous_run) == before


@pytest.mark.slow  # a launcher process; in-process: tests/test_validation.py
def test_overwrite_must_be_a_bool(launcher):
    launch = launcher.run("overwrite=maybe", "dry_run=true")
    assert_one_line_error(launch, "overwrite='maybe'")


@pytest.mark.slow  # a launcher process; in-process: tests/test_validation.py
def test_empty_run_dir_is_refused(launcher, tmp_path):
    proc = launcher.run_command([sys.executable, "-m", "launcher", "hydra.run.dir=", *TINY_RUN],
                                launcher.env(launcher.new_job_id()), timeout_s=120)
    assert_one_line_error(proc, "hydra.run.dir=''")
    assert sorted(os.listdir(tmp_path)) == [], "a refused run wrote into the current directory"


@pytest.mark.slow  # real jobs
def test_two_launches_started_together_get_their_own_run_dirs(launcher, tmp_path):
    """No hydra.run.dir: both take the default outputs/DATE/TIME..., started in the same second."""
    time.sleep(1.02 - time.time() % 1)  # at the start of a second: both resolve it in that second
    procs = [launcher.popen([sys.executable, "-m", "launcher", *TINY_RUN, "launcher=mp_spawn", "gpus=1"],
                            launcher.env(launcher.new_job_id()))
             for _ in range(2)]
    results = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    run_dirs = sorted(path.parent for path in (tmp_path / "outputs").rglob("config.yaml")
                      if path.parent.name != ".hydra")
    assert len(run_dirs) == 2, run_dirs
    for run_dir in run_dirs:
        assert (run_dir / "summary.json").exists()
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1, "two runs wrote into one dir"
        # Readable and sortable: DATE/TIME, then what keeps it unique.
        assert re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d\S*", str(run_dir.relative_to(tmp_path / "outputs")))


# --- Slurm: the tasks of one step share the run dir; a requeue re-enters it ------------------------

def cfg(**keys):
    return OmegaConf.create({"resume": None, "overwrite": False, **keys})


def test_tasks_of_one_slurm_step_share_the_run_dir(tmp_path):
    """Task 1 wrote config.yaml a moment ago: task 2 of the same step must still start. Training
    outputs only appear once every rank joined, i.e. after every task passed this check."""
    (tmp_path / "config.yaml").write_text("written by another task of this step")
    (tmp_path / "logs").mkdir()
    check_run_dir(cfg(), tmp_path, shared=True)
    with pytest.raises(ConfigError):  # a single-node run started by hand: config.yaml is an earlier run's
        check_run_dir(cfg(), tmp_path, shared=False)


def test_slurm_requeue_reenters_its_run_dir(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_run_dir(cfg(), tmp_path, shared=True)  # a second srun in the same allocation
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    check_run_dir(cfg(), tmp_path, shared=True)
    check_run_dir(cfg(), tmp_path, shared=False)  # a batch script that runs the launcher itself
    # overwrite=true on the command line of a requeued job: the requeue continues, nothing is removed.
    assert outputs_to_replace(cfg(overwrite=True), tmp_path, shared=True) == []


@pytest.mark.slow  # three launcher processes; in-process: the two tests above
def test_slurm_task_dry_run_in_a_run_dir_another_task_started(launcher, tmp_path):
    run_dir = tmp_path / "outputs" / "slurm-4242"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("written by task 0 a moment ago")
    launch = launcher.run("dry_run=true", run_dir=run_dir, env=SLURM_TASK_1)
    assert launch.returncode == 0, launch.stderr
    (run_dir / "summary.json").write_text("{}")  # a finished earlier step of this job
    assert_one_line_error(launcher.run("dry_run=true", run_dir=run_dir, env=SLURM_TASK_1), "overwrite=true")
    requeued = launcher.run("dry_run=true", run_dir=run_dir, env={**SLURM_TASK_1, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0, requeued.stderr


# --- 2. resume= a file that is no checkpoint of the built-in trainer -------------------------------

def torch_zip(payload: bytes, member: str = "last/data.pkl") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, payload)
        archive.writestr("last/version", "3\n")
    return buffer.getvalue()


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


NOT_CHECKPOINTS = {
    "random-bytes": os.urandom(4096),
    "empty": b"",
    "yaml": b"model: {}\nprogress: {}\n",
    "zip-without-pickle": torch_zip(b"", member="other/thing.txt"),
    "zip-with-garbage-pickle": torch_zip(b"\x80\x02garbage that is not a pickle"),
    "list": torch_zip(pickle.dumps([1, 2, 3], protocol=2)),
    "dict-without-progress": torch_zip(pickle.dumps({"model": {}, "optimizer": {}}, protocol=2)),
    "code-not-data": torch_zip(pickle.dumps(Boom(), protocol=2)),
}


@pytest.mark.parametrize("content", NOT_CHECKPOINTS.values(), ids=NOT_CHECKPOINTS.keys())
def test_not_a_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    assert checkpoint_problem(path, ("model", "progress")) is not None
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_checkpoint_keys_are_read_without_executing_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pickled_dict_keys(pickle.dumps(Boom(), protocol=2)) is None
    assert pickled_dict_keys(pickle.dumps({"a": 1, "b": {"a": [1, 2]}, "c": "b"}, protocol=2)) == {"a", "b", "c"}
    # Memoised strings (a key seen before, inside a value) and protocol 4 frames count as well.
    shared = {"epoch": 1}
    nested = {"progress": shared, "inner": {"progress": shared, "x": "progress"}, "model": {}}
    for protocol in (2, 4, 5):
        assert pickled_dict_keys(pickle.dumps(nested, protocol=protocol)) == {"progress", "inner", "model"}
    assert not (tmp_path / "PWNED").exists()


def test_real_checkpoints_pass(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "last.pt"
    torch.save({**TRAINER_KEYS, "model": {"w": torch.zeros(3)}}, good)
    assert checkpoint_problem(good, tuple(TRAINER_KEYS)) is None
    state_dict = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state_dict)
    assert "bare state_dict" in checkpoint_problem(state_dict, ("model", "progress"))
    legacy = tmp_path / "legacy.pt"
    torch.save(TRAINER_KEYS, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(legacy, ("model",)) is not None


@pytest.mark.slow  # a launcher process a case; in-process: test_not_a_checkpoint_is_named
@pytest.mark.parametrize("name", ["random-bytes", "empty", "state-dict"])
def test_resume_from_a_file_that_is_no_checkpoint_is_one_line(launcher, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    if name == "state-dict":
        torch = pytest.importorskip("torch")
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    else:
        path.write_bytes(NOT_CHECKPOINTS[name])
    launch = launcher.run(*TINY_RUN, f"resume={path}")
    assert_one_line_error(launch, f"resume='{path}'")
    assert "Traceback" not in launch.stderr and "KeyError" not in launch.stderr
    assert not launch.run_dir.exists()


@pytest.mark.slow  # real jobs
def test_resume_from_the_trainers_own_checkpoint_is_accepted(launcher, previous_run, tmp_path):
    launch = launcher.run("trainer.epochs=3", "data.dataset.num_samples=256",
                          f"resume={previous_run / 'checkpoints' / 'last.pt'}", run_dir=tmp_path / "next")
    assert_ok(launch)
    assert "resumed at epoch 2" in launch.stderr


@pytest.mark.slow  # a launcher process; in-process: test_not_a_checkpoint_is_named
def test_eval_of_a_file_that_is_no_checkpoint_is_one_line(launcher, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    assert_one_line_error(launcher.run("trainer.mode=eval", f"checkpoint={path}", "dry_run=true"),
                          f"checkpoint='{path}'")

