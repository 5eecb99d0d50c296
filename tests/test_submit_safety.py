"""What reaches sbatch (``launcher=slurm`` and ``-m hydra/launcher=slurm``) is data, checked before
anything is submitted; a dry run never submits. No Slurm cluster needed: the command-line runs
have no Slurm command on their PATH, so nothing could be submitted even by mistake."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from launcher.errors import ConfigError
from launcher.slurm.submit import plan_submission, sbatch_script, submission_from_config
from tests.composing import composed
from tests.conftest import REPO, Launcher

# The venv's bin: python and the launcher's own tools, but no sbatch, srun or squeue.
NO_SLURM = {"PATH": str(Path(sys.executable).parent)}
SLURM_DEFAULTS = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["slurm"]


def config(**slurm: object) -> OmegaConf:
    return OmegaConf.create({"nodes": 2, "gpus": 2, "backend": "gloo", "dry_run": False,
                             "slurm": {**SLURM_DEFAULTS, **slurm}})


def parameter_lines(script: str) -> list[str]:
    lines = script.splitlines()
    return [line for line in lines[lines.index("# Parameters") + 1: lines.index("# command")] if line]


def only_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    return lines[0]


# --- the sbatch text ---------------------------------------------------------------------------

def test_values_and_run_dir_reach_the_script_only_as_data(tmp_path):
    """Hostile single-line values everywhere; the script, run by bash, executes none of them."""
    pwned = tmp_path / "PWNED"
    hostile = f"x$(touch {pwned});`touch {pwned}`;'\"; touch {pwned} #"
    run_dir = tmp_path / f"it's [a] $(touch {pwned}) ; touch {pwned}"
    plan = plan_submission(config(job_name=hostile, partition=hostile, account=hostile, qos=hostile,
                                  constraint=hostile, extra={"comment": hostile, "mail-type": "END",
                                                             "exclusive": True},
                                  cpus_per_task=1), run_dir)  # a number: no sinfo asked
    script = sbatch_script(plan.folder, plan.parameters())
    options = {}
    for line in parameter_lines(script):
        assert line.startswith("#SBATCH --"), line
        (option,) = shlex.split(line.removeprefix("#SBATCH "))  # one argument for sbatch
        name, _, value = option.partition("=")
        options[name] = value
    for name in ("--job-name", "--partition", "--account", "--qos", "--constraint", "--comment"):
        assert options[name] == hostile, name
    assert options["--output"] == f"{plan.folder}/%j_0_log.out" and "--exclusive" in options

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    srun = fake_bin / "srun"
    srun.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(tmp_path / 'srun_args'))}\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "job.sh").write_text(script)
    ran = subprocess.run(["bash", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{fake_bin}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    assert not pwned.exists(), "a configuration value was executed by the batch script"
    srun_args = (tmp_path / "srun_args").read_text().splitlines()
    assert srun_args[srun_args.index("--output") + 1] == f"{plan.folder}/%j_%t_log.out"
    assert srun_args[-1] == str(plan.folder)


@pytest.mark.parametrize("char", ["\n", "\r", "\0"], ids=["newline", "carriage-return", "NUL"])
@pytest.mark.parametrize("key", ["job_name", "partition", "account", "qos", "constraint", "extra.comment"])
def test_a_value_with_a_line_break_is_refused(key, char):
    value = f"x{char}touch /tmp/pwned{char}#"
    section, _, option = key.partition(".")
    cfg = config(extra={option: value}) if option else config(**{key: value})
    with pytest.raises(ConfigError) as refused:
        submission_from_config(cfg)
    assert refused.value.key == f"slurm.{key}"
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)


@pytest.mark.parametrize("name", ["a b", "a;b", "x\ntouch /tmp/pwned", "", "a=b", "$(id)", "mail.type"])
def test_extra_option_names_are_letters_digits_underscore_dash(name):
    with pytest.raises(ConfigError) as refused:
        submission_from_config(config(extra={name: "1"}))
    assert refused.value.key == "slurm.extra" and refused.value.value == name
    assert "\n" not in str(refused.value)


def test_extra_values_are_single_values():
    with pytest.raises(ConfigError) as refused:
        submission_from_config(config(extra={"mail": {"type": "END"}}))
    assert refused.value.key == "slurm.extra.mail"


@pytest.mark.parametrize("name", ["a\ntouch x", "a\rb", "a,b", "a${b}"])
def test_a_run_dir_that_cannot_be_passed_on_is_refused(tmp_path, name):
    with pytest.raises(ConfigError) as refused:
        plan_submission(config(), tmp_path / name / "run")
    assert refused.value.key == "hydra.run.dir"


@pytest.fixture
def refusing_sbatch(tmp_path, monkeypatch) -> Path:
    """``srun`` and an ``sbatch`` that keeps the script it is given and refuses it; returns where
    the script is kept."""
    fake_bin = tmp_path / "fake-slurm"
    fake_bin.mkdir()
    kept = tmp_path / "submitted.sh"
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {shlex.quote(str(kept))}\n"
                                     "echo 'sbatch: error: refused by the test' >&2\nexit 1\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    return kept


def test_the_printed_script_is_the_submitted_one_and_needs_no_slurm_command(tmp_path, monkeypatch,
                                                                            refusing_sbatch):
    from hydra.core.hydra_config import HydraConfig

    cfg = composed("launcher=slurm", "nodes=2", "gpus=2", "slurm.partition=debug", "slurm.mem_gb=1.5",
                   "slurm.cpus_per_task=1",  # a number: no sinfo asked
                   "+slurm.extra.exclusive=true", "+slurm.extra.comment='a b'")
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # restored after
    HydraConfig.instance().set_config(cfg)  # submit() reads the overrides from it
    plan = plan_submission(cfg, tmp_path / "run")
    with monkeypatch.context() as no_slurm:
        no_slurm.setenv("PATH", str(tmp_path / "empty"))
        rendered = sbatch_script(plan.folder, plan.parameters())
    for line in ("#SBATCH --partition=debug", "#SBATCH --mem=1536MB", "#SBATCH --exclusive",
                 "#SBATCH --comment='a b'", "#SBATCH --ntasks-per-node=2"):
        assert line in rendered
    with pytest.raises(Exception, match="refused by the test"):
        plan.submit()
    assert refusing_sbatch.read_text() == rendered


def test_the_sweep_dry_run_prints_the_script_hydras_submitit_launcher_submits(tmp_path, refusing_sbatch):
    from hydra.utils import instantiate

    from launcher.slurm.submit import check_slurm_sweep

    cfg = composed("hydra/launcher=slurm", "nodes=2", "gpus=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   "slurm.partition=debug", "slurm.mem_gb=2", "slurm.cpus_per_task=1")  # no sinfo
    printed = check_slurm_sweep(cfg).describe([3])
    plugin = instantiate(cfg.hydra.launcher)
    plugin.setup(hydra_context=None, task_function=print, config=cfg)
    with pytest.raises(Exception, match="refused by the test"):
        plugin.launch([["optim.lr=0.1"], ["optim.lr=0.2"], ["optim.lr=0.3"]], 0)
    submitted = refusing_sbatch.read_text().rstrip()
    assert printed.startswith(submitted + "\n# ") and "#SBATCH --array=0-2%3" in submitted
    assert printed.endswith("\n# nothing was submitted")


# What a Slurm sweep hands Hydra's submitit launcher, and the key its refusal names.
HOSTILE_SWEEP_VALUES = [
    ("slurm.job_name='x\ntouch PWNED'", "slurm.job_name"),
    ("+hydra.launcher.additional_parameters.comment='x\ntouch PWNED\n#'",
     "hydra.launcher.additional_parameters.comment"),
    ("+hydra.launcher.additional_parameters={a b:1}", "hydra.launcher.additional_parameters"),
    ("hydra.launcher.setup=['echo x\rtouch PWNED']", "hydra.launcher.setup"),
]
HOSTILE_SWEEP_IDS = ["job-name-newline", "additional-value-newline", "additional-key-space", "setup-cr"]


@pytest.mark.parametrize(("override", "key"), HOSTILE_SWEEP_VALUES, ids=HOSTILE_SWEEP_IDS)
def test_a_slurm_sweep_option_that_would_break_its_line_is_refused(tmp_path, override, key):
    from launcher.slurm.submit import check_slurm_sweep

    cfg = composed("hydra/launcher=slurm", "nodes=1", "gpus=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   override)
    with pytest.raises(ConfigError) as refused:
        check_slurm_sweep(cfg)
    assert refused.value.key == key, str(refused.value)
    assert str(refused.value).startswith(f"invalid config: {key}="), str(refused.value)
    assert not (tmp_path / "sweep").exists()


def test_a_dry_run_plan_cannot_submit(tmp_path, monkeypatch):
    import launcher.slurm.submit as submit

    plan = plan_submission(OmegaConf.merge(config(cpus_per_task=1), {"dry_run": True}), tmp_path / "run")
    monkeypatch.setattr(submit, "slurm_executor", lambda *args, **kwargs: pytest.fail("reached submitit"))
    with pytest.raises(RuntimeError, match="dry run"):
        plan.submit()
    assert not (tmp_path / "run").exists()


# --- the command line, with no Slurm command on PATH ------------------------------------------
# Slow: a launcher process (or two) per case, about a second each. What they check is tested
# in-process above (the printed script in tests/test_golden.py too), except the refusal of
# `-m launcher=slurm`, which Hydra's multirun callback makes.

@pytest.mark.slow
def test_slurm_dry_run_prints_the_script_without_slurm_commands(launcher):
    done = launcher.run("launcher=slurm", "nodes=2", "gpus=2", "dry_run=true", env=NO_SLURM)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "# nothing was submitted"):
        assert line in done.stdout, done.stdout
    assert not done.run_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("override", "key"), [
    ("+slurm.extra.comment='x\ntouch PWNED\n#'", "slurm.extra.comment"),
    ("slurm.job_name='x\rtouch PWNED'", "slurm.job_name"),
    ("slurm.partition='debug\ntouch PWNED'", "slurm.partition"),
    ("+slurm.extra={a b:1}", "slurm.extra"),
], ids=["extra-value-newline", "job-name-cr", "partition-newline", "extra-key-space"])
def test_launcher_slurm_refuses_hostile_values_with_exit_2(launcher, override, key):
    for dry_run in ("true", "false"):
        done = launcher.run("launcher=slurm", "nodes=1", "gpus=1", f"dry_run={dry_run}", override,
                            env=NO_SLURM)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
        assert only_error_line(done.stderr).startswith(f"error: invalid config: {key}="), done.stderr
        assert "#SBATCH" not in done.stdout and not done.run_dir.exists()
    assert not (launcher.workdir / "PWNED").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a\ntouch PWNED", "a,b", "a${b}"], ids=["newline", "comma", "interpolation"])
def test_launcher_slurm_refuses_a_run_dir_the_tasks_could_not_parse(tmp_path, name):
    workdir = tmp_path / name
    workdir.mkdir()
    runner = Launcher(workdir)
    done = runner.run("launcher=slurm", "nodes=1", "gpus=1", "dry_run=true", run_dir=Path("out"), env=NO_SLURM)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert only_error_line(done.stderr).startswith("error: invalid config: hydra.run.dir="), done.stderr
    assert not (workdir / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["launcher=slurm", "launcher=torchrun,slurm"])
def test_multirun_with_launcher_slurm_is_refused(launcher, tmp_path, choice):
    sweep = tmp_path / "sweep"
    done = launcher.run("-m", choice, "dry_run=true", "optim.lr=0.1,0.2", f"hydra.sweep.dir={sweep}",
                        env=NO_SLURM)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    line = only_error_line(done.stderr)
    assert line.startswith("error: invalid config: launcher=") and "hydra/launcher=slurm" in line, line
    assert not sweep.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("override", "key"), HOSTILE_SWEEP_VALUES, ids=HOSTILE_SWEEP_IDS)
def test_slurm_sweep_refuses_hostile_values_with_exit_2(launcher, tmp_path, override, key):
    sweep = tmp_path / "sweep"
    done = launcher.run("-m", "hydra/launcher=slurm", "nodes=1", "gpus=1", "optim.lr=0.1,0.2",
                        f"hydra.sweep.dir={sweep}", override, env=NO_SLURM)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert only_error_line(done.stderr).startswith(f"error: invalid config: {key}="), done.stderr
    assert not sweep.exists() and not (launcher.workdir / "PWNED").exists()


@pytest.mark.slow
def test_slurm_sweep_refuses_a_sweep_dir_with_a_line_break(launcher, tmp_path):
    sweep = tmp_path / "a\ntouch PWNED"
    done = launcher.run("-m", "hydra/launcher=slurm", "nodes=1", "gpus=1", "optim.lr=0.1,0.2",
                        f"hydra.sweep.dir='{sweep}'", env=NO_SLURM)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert only_error_line(done.stderr).startswith("error: invalid config: hydra.sweep.dir="), done.stderr
    assert not sweep.exists()


@pytest.mark.slow
def test_slurm_sweep_dry_run_prints_the_array_script_and_submits_nothing(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    done = launcher.run("-m", "hydra/launcher=slurm", "dry_run=true", "nodes=2", "gpus=1", "slurm.time=9",
                        "optim.lr=0.1,0.2,0.3", f"hydra.sweep.dir={sweep}", env=NO_SLURM)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --time=9", "#SBATCH --requeue", f"#SBATCH --output={sweep}/.submitit/%A_%a/%A_%a_0_log.out",
                 "# nothing was submitted"):
        assert line in done.stdout, done.stdout
    assert not sweep.exists()
