"""``slurm.cpus_per_task: auto``: the partition's CPUs per node over the tasks per node, asked of
``sinfo`` at submission (``launcher.slurm.cpus``), on both Slurm paths (``launcher=slurm`` and the
sweep preset's ``slurm_cpus`` resolver); 1, said on stderr, where ``sinfo`` cannot tell.

The fast tests give ``sinfo`` as a script on a PATH of its own (or none at all); the slow ones ask
the local test cluster (nodes n1, n2 with 4 CPUs each, partition debug, the default).
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from omegaconf import OmegaConf

from launcher.slurm import cpus
from launcher.slurm.cpus import cpus_per_task_for, parse_sinfo, resolve_cpus_per_task
from launcher.slurm.submit import plan_submission
from tests.composing import composed
from tests.test_real_clusters import fake_tools
from tests.test_slurm import jobs_named, run_launcher_in, slurm, slurm_cluster  # noqa: F401 (fixtures)
from tests.test_submit_safety import config

FALLBACK_WORDS = "asking for 1 CPU per task (set slurm.cpus_per_task=N)"


@pytest.fixture(autouse=True)
def fresh_answers():
    """Every test asks sinfo (and says a fallback) afresh."""
    cpus.clear_cache()
    yield
    cpus.clear_cache()


def fake_sinfo(tmp_path, monkeypatch, body: str) -> None:
    """A ``sinfo`` script on a PATH of its own: shell built-ins only, or absolute paths."""
    fake_tools(tmp_path, monkeypatch, sinfo=body)


# --- the count ---------------------------------------------------------------------------------

# (CPUs per node, tasks per node) -> cpus_per_task
COUNTS = [
    (4, 2, 2),     # the test cluster, gpus=2
    (4, 4, 1),
    (4, 3, 1),     # rounded down
    (7, 2, 3),
    (64, 8, 8),
    (96, 8, 12),
    (1, 1, 1),
    (2, 4, 1),     # fewer CPUs than tasks: still 1
    (1, 8, 1),
]


@pytest.mark.parametrize(("node_cpus", "tasks", "expected"), COUNTS)
def test_cpus_per_task_is_the_node_shared_by_its_tasks(node_cpus, tasks, expected):
    assert cpus_per_task_for(node_cpus, tasks) == expected


# --- what sinfo says ---------------------------------------------------------------------------

# `sinfo -h -N -o '%P %c'`: one line per node and partition; the default partition marked *.
SINFO = """\
gpu 64
gpu 48
gpu 96
debug* 8
debug* 4
big 128+
"""


@pytest.mark.parametrize(("partition", "expected"), [
    ("gpu", 48),          # the smallest node: the job fits on any
    (None, 4),            # the default partition (debug*)
    ("debug", 4),         # named, without the marker
    ("gpu,big", 48),      # several, as sbatch takes them: the fewest over all
    ("big", 128),         # a "+" suffix is read as its count
    ("nope", None),
])
def test_sinfo_lines_give_the_fewest_cpus_of_the_partition(partition, expected):
    assert parse_sinfo(SINFO, partition) == expected


def test_sinfo_without_a_default_or_a_count_gives_nothing():
    assert parse_sinfo("gpu 64\ncpu 32\n", None) is None
    assert parse_sinfo("", "gpu") is None
    assert parse_sinfo("gpu N/A\ngpu\n", "gpu") is None


def test_auto_asks_sinfo_for_the_partition(tmp_path, monkeypatch, capsys):
    asked = tmp_path / "asked"
    fake_sinfo(tmp_path, monkeypatch, f'echo "$@" >> {asked}\necho "gpu 64"\necho "gpu 48"\necho "debug* 4"')
    assert resolve_cpus_per_task("auto", "gpu", 4) == 12
    assert resolve_cpus_per_task("auto", None, 2) == 2
    assert resolve_cpus_per_task("auto", "gpu", 8) == 6  # the partition's answer is asked once
    assert asked.read_text().splitlines() == ["-h -N -o %P %c -p gpu", "-h -N -o %P %c"]
    assert capsys.readouterr().err == ""


def test_an_integer_wins_and_asks_nothing(tmp_path, monkeypatch, capsys):
    asked = tmp_path / "asked"
    fake_sinfo(tmp_path, monkeypatch, f": > {asked}; exit 1")
    assert resolve_cpus_per_task(3, "gpu", 8) == 3
    assert resolve_cpus_per_task(1, None, 2) == 1
    assert not asked.exists() and capsys.readouterr().err == ""


# --- where sinfo cannot tell: 1, said in one line ----------------------------------------------

def fallback_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("slurm.cpus_per_task=auto: ") and lines[0].endswith(FALLBACK_WORDS), lines[0]
    return lines[0]


def test_without_sinfo_auto_is_1_and_says_so(tmp_path, monkeypatch, capsys):
    fake_tools(tmp_path, monkeypatch)  # a PATH with no Slurm tool
    assert resolve_cpus_per_task("auto", None, 2) == 1
    assert resolve_cpus_per_task("auto", None, 2) == 1  # said once
    assert "sinfo is not on PATH" in fallback_line(capsys)


def test_a_sinfo_that_does_not_answer_gives_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpus, "SINFO_TIMEOUT_S", 0.5)
    fake_sinfo(tmp_path, monkeypatch, f"exec {shutil.which('sleep')} 30")
    assert resolve_cpus_per_task("auto", "gpu", 2) == 1
    assert "sinfo did not answer within 0.5 s" in fallback_line(capsys)


def test_a_failing_sinfo_gives_1(tmp_path, monkeypatch, capsys):
    fake_sinfo(tmp_path, monkeypatch,
               "echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2; exit 1")
    assert resolve_cpus_per_task("auto", None, 2) == 1
    assert "sinfo failed: slurm_load_partitions: Unable to contact" in fallback_line(capsys)


def test_an_unknown_partition_gives_1(tmp_path, monkeypatch, capsys):
    fake_sinfo(tmp_path, monkeypatch, "true")
    assert resolve_cpus_per_task("auto", "nope", 2) == 1
    assert "sinfo lists no node of partition nope" in fallback_line(capsys)


# --- both submission paths ---------------------------------------------------------------------

def test_launcher_slurm_counts_auto_for_its_tasks_per_node(tmp_path, monkeypatch):
    fake_sinfo(tmp_path, monkeypatch, 'echo "debug* 16"')
    plan = plan_submission(config(), tmp_path / "run")  # nodes=2 gpus=2, cpus_per_task: auto (conf/)
    assert plan.submission.cpus_per_task == 8
    assert plan.parameters()["cpus_per_task"] == 8
    assert plan_submission(config(cpus_per_task=3), tmp_path / "run").submission.cpus_per_task == 3


def test_the_sweep_preset_counts_auto_through_its_resolver(tmp_path, monkeypatch):
    fake_sinfo(tmp_path, monkeypatch, 'echo "debug* 16"\necho "gpu 32"')
    sweep = ("hydra/launcher=slurm", "nodes=1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert composed(*sweep, "gpus=2").hydra.launcher.cpus_per_task == 8
    assert composed(*sweep, "gpus=4", "slurm.partition=gpu").hydra.launcher.cpus_per_task == 8
    assert composed(*sweep, "gpus=2", "slurm.cpus_per_task=5").hydra.launcher.cpus_per_task == 5


@pytest.mark.parametrize("override", ["+hydra.launcher.additional_parameters.comment='a\nb'", "slurm.job_name='a\rb'"])
def test_a_sweep_refused_before_submission_asks_no_sinfo(tmp_path, monkeypatch, capsys, override):
    """The refusal is the only line: cpus_per_task is counted once the rest is known good."""
    from launcher.errors import ConfigError
    from launcher.slurm.submit import check_slurm_sweep

    cfg = composed("hydra/launcher=slurm", "nodes=1", "gpus=2", f"hydra.sweep.dir={tmp_path / 'sweep'}", override)
    fake_tools(tmp_path, monkeypatch)  # no sinfo: auto would say so
    with pytest.raises(ConfigError):
        check_slurm_sweep(cfg)
    assert capsys.readouterr().err == ""


def test_checking_a_config_asks_no_sinfo(tmp_path, monkeypatch, capsys):
    """Only a submission counts auto: a local run's (or a Slurm task's) config check never runs sinfo."""
    from launcher.validation import check_config

    asked = tmp_path / "asked"
    fake_sinfo(tmp_path, monkeypatch, f": > {asked}")
    check_config(composed("gpus=2", "backend=gloo"))
    check_config(composed("launcher=slurm", "nodes=1", "gpus=2", "backend=gloo"))
    assert not asked.exists()
    assert OmegaConf.select(composed("gpus=2"), "slurm.cpus_per_task") == "auto"


# --- the local test cluster: 4 CPUs per node ----------------------------------------------------

@pytest.mark.slow
def test_launcher_slurm_dry_run_asks_the_cluster(slurm):  # noqa: F811
    done = slurm.launcher("nodes=1", "gpus=2", "dry_run=true", share_nodes=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "#SBATCH --cpus-per-task=2\n" in done.stdout  # 4 CPUs / 2 tasks
    assert "slurm.cpus_per_task=auto" not in done.stderr
    pinned = slurm.launcher("nodes=1", "gpus=2", "dry_run=true", "slurm.cpus_per_task=1", share_nodes=False)
    assert pinned.returncode == 0, pinned.stdout[-2000:] + pinned.stderr[-2000:]
    assert "#SBATCH --cpus-per-task=1\n" in pinned.stdout


@pytest.mark.slow
def test_slurm_sweep_dry_run_asks_the_cluster(slurm):  # noqa: F811
    name = f"dry-{uuid.uuid4().hex[:12]}"
    done = run_launcher_in(slurm, "-m", "hydra/launcher=slurm", "dry_run=true", "nodes=1", "gpus=2",
                           "backend=gloo", f"slurm.job_name={name}", "optim.lr=0.1,0.2",
                           f"hydra.sweep.dir={slurm.workdir / 'sweep'}")
    slurm.jobs += jobs_named(name)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "#SBATCH --cpus-per-task=2\n" in done.stdout and "# nothing was submitted" in done.stdout
    assert jobs_named(name) == []
