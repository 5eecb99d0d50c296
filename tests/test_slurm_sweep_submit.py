"""``-m hydra/launcher=slurm_submit``: a Slurm sweep that submits its points and returns at once.

In-process (fast): the option is a Slurm sweep to every check, a dry run prints its script, it
submits the very script Hydra's submitit launcher submits, and it returns without waiting. Against
the real local cluster (slow): the command returns while the points are still queued or running,
and the points train and write the sweep report with nobody waiting for them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext

from launcher.report import REPORT_NAME
from launcher.slurm.sweep import SubmitAndExitSlurmLauncher
from tests.composing import composed
from tests.conftest import TINY, wait_for
from tests.test_slurm import CPU_ONLY, JOB_TIMEOUT_S, TERMINAL, slurm, slurm_cluster  # noqa: F401 (fixtures)

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def sweep_config(tmp_path: Path, *overrides: str):
    """A sweep for in-process checks: CPUs per task given, so nothing asks a cluster (``auto``
    would run ``sinfo``, and without a cluster warn after its 5 s timeout)."""
    return composed("hydra/launcher=slurm_submit", "nodes=2", "gpus=1", CPU_ONLY,
                             f"hydra.sweep.dir={tmp_path / 'sweep'}", "slurm.partition=debug",
                             "slurm.cpus_per_task=1", *overrides, multirun=True)


@pytest.fixture
def restored_hydra_config(monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)


@pytest.fixture
def accepting_sbatch(tmp_path, monkeypatch) -> Path:
    """``srun`` and an ``sbatch`` that keeps the script and answers as Slurm does, job 4242; no
    ``squeue``/``sacct``: anything that waited for the job would fail or hang."""
    fake_bin = tmp_path / "fake-slurm"
    fake_bin.mkdir()
    kept = tmp_path / "submitted.sh"
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" '{kept}'\necho 'Submitted batch job 4242'\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    return kept


def test_submit_and_exit_is_a_slurm_sweep_to_every_check(tmp_path, capsys, restored_hydra_config):
    from launcher.hydra_callbacks import ValidateBeforeStart
    from launcher.slurm.submit import check_slurm_sweep, is_slurm_sweep

    cfg = sweep_config(tmp_path, "optim.lr=0.1,0.2")
    assert is_slurm_sweep(cfg) and is_slurm_sweep(composed("hydra/launcher=slurm"))
    assert not is_slurm_sweep(composed())
    printed = check_slurm_sweep(cfg).describe([2])
    assert "#SBATCH --array=0-1%2" in printed and "#SBATCH --nodes=2" in printed

    refused = sweep_config(tmp_path, "+hydra.launcher.additional_parameters.comment='x\ntouch PWNED'")
    with pytest.raises(SystemExit) as stop:
        ValidateBeforeStart().on_multirun_start(refused)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(
        "error: invalid config: hydra.launcher.additional_parameters.comment=")

    with pytest.raises(SystemExit) as stop:  # the dry run: the script, and nothing submitted
        ValidateBeforeStart().on_multirun_start(sweep_config(tmp_path, "optim.lr=0.1,0.2", "dry_run=true"))
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("# nothing was submitted") and "#SBATCH --array=0-1%2" in out, out
    assert "#SBATCH --partition=debug" in out and "#SBATCH --nodes=2" in out
    assert not (tmp_path / "sweep").exists()


class Submitted(Exception):
    """Raised where the plugin's launch() would start waiting for the points' results."""


def test_it_submits_the_plugins_script_and_returns_without_waiting(tmp_path, accepting_sbatch, capsys):
    import submitit
    from hydra.utils import instantiate

    points = [["optim.lr=0.1"], ["optim.lr=0.2"]]
    cfg = sweep_config(tmp_path)
    # As Hydra's sweeper gets it (Hydra takes a launcher only from the hydra_plugins package).
    ours = Plugins.instance().instantiate_launcher(hydra_context=HydraContext(None, None),  # type: ignore[arg-type]
                                                   task_function=print, config=cfg)
    assert isinstance(ours, SubmitAndExitSlurmLauncher)
    returns = ours.launch(points, 0)  # no squeue/sacct on PATH: waiting would fail
    assert [ret.status for ret in returns] == [JobStatus.COMPLETED] * 2
    assert [ret.return_value for ret in returns] == [None, None]
    assert [ret.overrides for ret in returns] == points
    out = capsys.readouterr().out
    sweep = (tmp_path / "sweep").absolute()
    for line in ("submitted 2 sweep point(s) to Slurm (job 4242); not waiting for them:",
                 "  point 0: Slurm job 4242_0  optim.lr=0.1\n", "  point 1: Slurm job 4242_1  optim.lr=0.2\n",
                 f"  report:    {sweep / REPORT_NAME}.md (.csv, .png), rewritten as each point ends",
                 "  follow:    squeue -j 4242\n", f"python -m launcher.status {sweep}/N\n"):
        assert line in out, out
    ours_script = accepting_sbatch.read_text()
    assert "#SBATCH --array=0-1%2" in ours_script and "#SBATCH --partition=debug" in ours_script

    # Hydra's submitit launcher itself, same config: it submits the same script (then would wait).
    cfg = sweep_config(tmp_path, "hydra/launcher=slurm")
    plugin = instantiate(cfg.hydra.launcher)
    plugin_class = f"{type(plugin).__module__}.{type(plugin).__qualname__}"
    assert plugin_class == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # (by name: Hydra's plugin scan executes the plugin modules again, making new class objects)
    assert plugin_class in [f"{cls.__module__}.{cls.__qualname__}" for cls in type(ours).__mro__]
    plugin.setup(hydra_context=None, task_function=print, config=cfg)
    accepting_sbatch.unlink()
    submitted: list = []
    map_array = submitit.AutoExecutor.map_array

    def submit_only(self, fn, *args):
        submitted.extend(map_array(self, fn, *args))
        raise Submitted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submitit.AutoExecutor, "map_array", submit_only)
        with pytest.raises(Submitted):
            plugin.launch(points, 0)
    assert [job.job_id for job in submitted] == ["4242_0", "4242_1"]
    assert accepting_sbatch.read_text() == ours_script


def test_a_sweeper_that_needs_results_is_refused(tmp_path, capsys):
    from hydra.utils import instantiate
    from omegaconf import open_dict

    cfg = sweep_config(tmp_path)
    with open_dict(cfg):
        cfg.hydra.sweeper = {"_target_": OPTUNA, "n_trials": 3}
    ours = instantiate(cfg.hydra.launcher)
    with pytest.raises(SystemExit) as stop:
        ours.setup(hydra_context=None, task_function=print, config=cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid config: hydra.sweeper='{OPTUNA}': hydra/launcher=slurm_submit")
    assert err.count("\n") == 1 and "use hydra/launcher=slurm" in err
    assert not (tmp_path / "sweep").exists()


# --- against the local Slurm cluster ---------------------------------------------------------------

def queued(job_id: str) -> list[str]:
    """The array's elements squeue still lists (pending or running)."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True,
                          timeout=30).stdout.split("\n")[:-1]


def wait_until_ended(job_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while queued(job_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"the sweep's Slurm job {job_id} was still queued or running after "
                                 f"{timeout_s:.0f}s: {queued(job_id)}")
        time.sleep(2)


@pytest.mark.slow
def test_a_submitted_sweep_returns_at_once_and_its_points_report_themselves(slurm):  # noqa: F811
    sweep = slurm.workdir / "sweep"
    array_id = None
    try:
        done = slurm.run_module(["launcher", "-m", "hydra/launcher=slurm_submit", "optim.lr=0.1,0.03", "nodes=2",
                                 "gpus=1", CPU_ONLY, "slurm.time=10", f"hydra.sweep.dir={sweep}", *TINY], 120)
        summaries = [sweep / point / "summary.json" for point in ("0", "1")]
        trained_at_return = [path.exists() for path in summaries]
        lines = [line.split() for line in done.stdout.splitlines() if line.startswith("  point ")]
        job_ids = [words[4] for words in lines]  # "point 0: Slurm job 123_0 optim.lr=0.1 ..."
        array_id = job_ids[0].split("_")[0] if job_ids else None
        slurm.jobs += [array_id] if array_id else []
        in_queue = queued(array_id) if array_id else []
        print(done.stdout, done.stderr, sep="\n")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr
        assert job_ids == [f"{array_id}_0", f"{array_id}_1"], done.stdout
        assert [words[5] for words in lines] == ["optim.lr=0.1", "optim.lr=0.03"], done.stdout
        assert f"{sweep / REPORT_NAME}.md" in done.stdout and f"squeue -j {array_id}" in done.stdout
        # It returned before the points ended: they are still queued, and neither has trained.
        assert in_queue, f"the points had already left the queue when the command returned:\n{done.stdout}"
        assert trained_at_return == [False, False]

        wait_until_ended(array_id, JOB_TIMEOUT_S)

        def accounted() -> list[str]:
            return sorted(subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", array_id],
                                         capture_output=True, text=True, timeout=30).stdout.split())

        states: list[str] = []

        def both_accounted_as_ended() -> bool:
            states[:] = accounted()
            return len(states) == 2 and all(line.split("|")[1] in TERMINAL for line in states)

        # slurmdbd records a job's end a moment after squeue has forgotten it (seen: RUNNING there)
        wait_for(both_accounted_as_ended, 30, f"sacct to record the end of both points of {array_id}")
        assert states == [f"{array_id}_0|COMPLETED", f"{array_id}_1|COMPLETED"], states
        for path in summaries:
            summary = json.loads(path.read_text())
            assert summary["world_size"] == 2 and summary["nodes"] == 2
        table = (sweep / f"{REPORT_NAME}.md").read_text()
        assert "| 0 | optim.lr=0.1 | completed |" in table and "| 1 | optim.lr=0.03 | completed |" in table, table
        assert (sweep / f"{REPORT_NAME}.png").stat().st_size > 10_000
    finally:
        if array_id:  # a failed test leaves nothing in the queue (the fixture cancels it too)
            subprocess.run(["scancel", array_id], capture_output=True, timeout=30)
