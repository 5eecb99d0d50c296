"""The command line before Hydra: torchrun's flags, a positional script, -m, --help, misspelt keys."""

import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from launcher.__main__ import CONFIG_DIR, main
from launcher.cli import FLAGS, CommandLineError, hydra_quote, parse_command_line
from tests.conftest import REPO, Launcher


def parse(*argv: str) -> list[str]:
    return parse_command_line(list(argv), config_dir=CONFIG_DIR).hydra_args


def refusal(*argv: str) -> str:
    with pytest.raises(CommandLineError) as caught:
        parse_command_line(list(argv), config_dir=CONFIG_DIR)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def hydra_value(override: str):
    """The value an override gives its key, through Hydra's parser and OmegaConf's resolution."""
    value = OverridesParser.create().parse_override(override).value()
    return OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]


def as_dict(hydra_args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in hydra_args if not arg.startswith("-"))


# --- quoting -----------------------------------------------------------------------------------------

@pytest.mark.slow  # 3000 strings through Hydra's parser: over a second
def test_hydra_quote_round_trips_any_string():
    rng = random.Random(1234)
    alphabet = "ab \\'\"${},=[]:\t"
    texts = ["", "\\", "'", "${", "${x}", "\\${x}", "a\\", "\\'", "$", "{}", "[a,b]"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 14))) for _ in range(3000)]
    for text in texts:
        assert hydra_value(f"script={hydra_quote(text)}") == text, repr(text)
    values = texts[:200]
    listed = "script_args=[" + ",".join(hydra_quote(text) for text in values) + "]"
    assert hydra_value(listed) == values


# --- torchrun's flags --------------------------------------------------------------------------------

MAPPED = [
    ("--nnodes", "2", "nodes=2"),
    ("--nnodes", "3:3", "nodes=3"),
    ("--nproc-per-node", "4", "gpus=4"),
    ("--nproc-per-node", "auto", "gpus=auto"),
    ("--node-rank", "1", "node_rank=1"),
    ("--master-addr", "10.0.0.1", "master_addr='10.0.0.1'"),
    ("--master-port", "29500", "master_port=29500"),
    ("--local-addr", "node7.cluster", "local_addr='node7.cluster'"),
    ("--max-restarts", "3", "launcher.max_restarts=3"),
    ("--monitor-interval", "0.5", "launcher.monitor_interval_s=0.5"),
    ("--monitor-interval", "2", "launcher.monitor_interval_s=2.0"),
    ("--rdzv-backend", "c10d", "launcher.rdzv=c10d"),
    ("--rdzv-backend", "static", "launcher.rdzv=static"),
    ("--rdzv-endpoint", "head:29400", "launcher.rdzv_endpoint='head:29400'"),
    ("--rdzv-id", "job7", "launcher.rdzv_id='job7'"),
    ("--rdzv-id", "123", "launcher.rdzv_id='123'"),
    ("--local-ranks-filter", "0,2", "console_local_ranks=[0,2]"),
    ("--local-ranks-filter", "1", "console_local_ranks=[1]"),
]


def spellings(flag: str) -> list[str]:
    return [flag, "--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [flag]


@pytest.mark.parametrize(("flag", "value", "override"), MAPPED, ids=[f"{f} {v}" for f, v, _ in MAPPED])
def test_valued_flag_maps_to_its_key(flag, value, override):
    for spelled in spellings(flag):
        for argv in ([f"{spelled}={value}"], [spelled, value]):
            assert parse(*argv) == [override], argv
    hydra_value(override)  # Hydra's parser takes it


def test_string_values_stay_strings():
    assert hydra_value("master_addr='10.0.0.1'") == "10.0.0.1"
    assert hydra_value(parse("--rdzv-id", "123")[0]) == "123"
    assert hydra_value(parse("--master-addr", "a b'${x}")[0]) == "a b'${x}"
    assert hydra_value(parse("--master-port", "29500")[0]) == 29500
    assert hydra_value(parse("--local-ranks-filter", "0,2")[0]) == [0, 2]


BOOLEAN = [
    ("--standalone", "nodes=1"),
    ("--local-rank-arg", "launcher.local_rank_arg=true"),
]


@pytest.mark.parametrize(("flag", "override"), BOOLEAN)
def test_boolean_flag_maps_to_its_key(flag, override):
    for spelled in spellings(flag):
        assert parse(spelled) == [override]


def test_no_python_runs_the_script_as_an_executable():
    for spelled in ("--no-python", "--no_python"):
        assert as_dict(parse(spelled, "./run.sh", "x")) == {
            "no_python": "true", "script": "'./run.sh'", "script_args": "['x']"}


def test_standalone_agrees_with_nnodes_1():
    assert parse("--standalone", "--nnodes=1") == ["nodes=1"]
    assert parse("--nnodes", "1", "--standalone") == ["nodes=1"]


def test_flags_overrides_and_script_together():
    args = parse("trainer.epochs=3", "--nproc-per-node=2", "+model.width=64", "--max_restarts", "1",
                 "train.py", "--epochs", "5")
    assert args == ["trainer.epochs=3", "+model.width=64", "gpus=2", "launcher.max_restarts=1",
                    "script='train.py'", "script_args=['--epochs','5']"]


# --- the script and its arguments --------------------------------------------------------------------

SCRIPT_ARGS = ["--lr=0.1", "a b", "it's", 'say "hi"', "gpus=4", "+x=1", "~y", "${x}", "${oc.env:HOME}",
               "back\\slash", "trail\\", "\\'", "--nproc-per-node=2", "-m", "--help", "--version",
               "x=${y}", "[1,2]", "{a: b}", "", "\t", "a,b", "--tee", "3"]


def test_script_args_are_kept_verbatim():
    args = as_dict(parse("--nproc-per-node=2", "path/to/train.py", *SCRIPT_ARGS))
    assert hydra_value(f"script={args['script']}") == "path/to/train.py"
    assert hydra_value(f"script_args={args['script_args']}") == SCRIPT_ARGS
    assert args["gpus"] == "2" and "script_module" not in args


def test_script_with_no_args():
    assert parse("train.py") == ["script='train.py'", "script_args=[]"]


def test_double_dash_ends_the_options():
    args = as_dict(parse("gpus=2", "--", "odd=name.py", "--x"))
    assert hydra_value(f"script={args['script']}") == "odd=name.py"
    assert hydra_value(f"script_args={args['script_args']}") == ["--x"]


def test_module_form_with_dash_m():
    args = parse("--nproc-per-node", "2", "-m", "mypkg.train", *SCRIPT_ARGS)
    assert args[:2] == ["gpus=2", "script='mypkg.train'"]
    assert hydra_value(args[2]) == SCRIPT_ARGS
    assert args[3] == "script_module=true" and "--multirun" not in args


def test_module_form_with_dash_dash_module():
    args = parse("--module", "--nproc-per-node", "2", "mypkg.train", "--x=1")
    assert args == ["gpus=2", "script='mypkg.train'", "script_args=['--x=1']", "script_module=true"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["-m", "optim.lr=0.1,0.01"], ["--multirun", "optim.lr=0.1,0.01"]),
    (["-m"], ["--multirun"]),
    (["optim.lr=0.1,0.01", "-m"], ["--multirun", "optim.lr=0.1,0.01"]),
    (["-m", "--nproc-per-node=2", "train.py"],
     ["--multirun", "gpus=2", "script='train.py'", "script_args=[]"]),
    (["--multirun", "train.py"], ["--multirun", "script='train.py'", "script_args=[]"]),
    (["-m", "~resume"], ["--multirun", "~resume"]),
    (["-m", "-m", "mypkg.train"],
     ["--multirun", "script='mypkg.train'", "script_args=[]", "script_module=true"]),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_dash_m_is_multirun_unless_a_module_follows(argv, expected):
    assert parse(*argv) == expected


# --- Hydra's flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (["--cfg", "job"], ["--cfg=job"]),
    (["-c", "hydra"], ["--cfg=hydra"]),
    (["--cfg=all", "--resolve"], ["--cfg=all", "--resolve"]),
    (["--cfg", "job", "--package", "trainer"], ["--cfg=job", "--package=trainer"]),
    (["-p", "trainer", "-c", "job"], ["--package=trainer", "--cfg=job"]),
    (["--info"], ["--info=all"]),
    (["--info", "gpus=2"], ["--info=all", "gpus=2"]),
    (["-i", "defaults"], ["--info=defaults"]),
    (["--info=plugins"], ["--info=plugins"]),
    (["--hydra-help"], ["--hydra-help"]),
    (["-r", "gpus=2"], ["--run", "gpus=2"]),
    (["--run"], ["--run"]),
    (["-cd", "/my/confs"], ["--config-dir=/my/confs"]),
    (["-cn", "mine", "anything=1"], ["--config-name=mine", "anything=1"]),
    (["--config-path", "/p", "--config-name=c", "+x=1"], ["--config-path=/p", "--config-name=c", "+x=1"]),
    (["-cp", "/p", "y=2"], ["--config-path=/p", "y=2"]),
    (["-sc", "install=bash"], ["--shell-completion", "install=bash"]),
    (["--experimental-rerun", "x.pickle"], ["--experimental-rerun=x.pickle"]),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_hydra_flags_pass_through(argv, expected):
    assert parse(*argv) == expected


# --- keys --------------------------------------------------------------------------------------------

ACCEPTED_OVERRIDES = ["gpus=2", "+model.width=64", "model.hidden=8", "data.batch_size=8", "optim.lr=0.1",
                      "sched=none", "sched.interval=step", "slurm.extra.exclusive=true",
                      "+slurm.extra.mail-type=END", "hydra.run.dir=/tmp/x", "launcher=slurm",
                      "hydra/launcher=slurm", "++trainer.epochs=3", "~resume", "~checkpoint=null",
                      "launcher.rdzv=c10d", "launcher.local_rank_arg=true", "save.every_steps=3",
                      "slurm.partition=gpu", "model@model=mlp", "trainer.precision=bf16",
                      "console_local_ranks=[0,1]", "script_module=true", "no_python=false"]


def test_known_keys_are_accepted():
    assert parse(*ACCEPTED_OVERRIDES) == ACCEPTED_OVERRIDES


# --- refusals ----------------------------------------------------------------------------------------

LOGS = "RUN_DIR/logs/rank_N.log"
REFUSED = [
    (["--nnodes", "1:4"], "--nnodes=1:4: elastic ranges are not offered: give one number of nodes"),
    (["--nnodes=2:3"], "elastic ranges are not offered"),
    (["--nnodes=x"], "--nnodes expects a number of nodes"),
    (["--nproc-per-node=gpu"], "--nproc-per-node=gpu is not supported: use --nproc-per-node=auto"),
    (["--nproc_per_node", "cpu"], "--nproc_per_node=cpu is not supported"),
    (["--nproc-per-node=xpu"], "or a number"),
    (["--nproc-per-node=two"], "expects a number of processes or auto"),
    (["--node-rank=first"], "--node-rank expects an integer"),
    (["--max-restarts=many"], "--max-restarts expects an integer"),
    (["--monitor-interval=0"], "--monitor-interval expects a positive number of seconds"),
    (["--local-ranks-filter=a"], "--local-ranks-filter expects local ranks"),
    (["--rdzv-backend=etcd"], "--rdzv-backend=etcd is not supported: allowed: c10d, static"),
    (["--rdzv_backend", "etcd-v2"], "allowed: c10d, static"),
    (["--rdzv-backend=zeus"], "allowed: c10d, static"),
    (["--standalone", "--nnodes=2"], "--standalone cannot be combined with --nnodes=2"),
    (["--nnodes", "2", "--standalone"], "--standalone cannot be combined with --nnodes=2"),
    (["--standalone", "--node-rank=0"], "--standalone cannot be combined with --node-rank=0"),
    (["--standalone", "--master-addr=h"], "--standalone cannot be combined with --master-addr=h"),
    (["--standalone", "--master_port", "1234"], "--standalone cannot be combined with --master_port=1234"),
    (["--standalone", "--rdzv-endpoint=h:1"], "--standalone cannot be combined with --rdzv-endpoint=h:1"),
    (["--standalone", "master_port=1234"], "--standalone cannot be combined with master_port=1234"),
    (["--standalone", "nodes=1"], "nodes is given twice: by --standalone and by nodes=1"),
    (["--standalone=yes"], "--standalone takes no value"),
    (["--no-python", "-m", "mypkg.train"], "--no-python cannot be combined with -m"),
    (["--no-python", "--module", "mypkg.train"], "--no-python cannot be combined with --module"),
    (["--no-python"], "--no-python needs a SCRIPT"),
    (["script=a.py", "train.py"], "script is given twice: by the positional train.py and by script=a.py"),
    (["script_args=[x]", "train.py"], "script_args is given twice"),
    (["--nnodes=2", "--nnodes=3"], "nodes is given twice: by --nnodes=2 and by --nnodes=3"),
    (["--nproc-per-node=2", "--nproc_per_node=2"], "gpus is given twice"),
    (["--nproc-per-node=2", "gpus=4"], "gpus is given twice: by --nproc-per-node=2 and by gpus=4"),
    (["+gpus=4", "--nproc-per-node", "2"], "gpus is given twice"),
    (["--max-restarts=1", "launcher.max_restarts=2"], "launcher.max_restarts is given twice"),
    (["--local-rank-arg", "--local_rank_arg"], "launcher.local_rank_arg is given twice"),
    (["--cfg", "job", "--cfg", "all"], "--cfg and --cfg both given"),
    (["-m", "-m"], "-m and -m both given"),
    (["--cfg=everything"], "--cfg=everything: allowed: job, hydra, all"),
    (["--resolve=1"], "--resolve takes no value"),
    (["-m=mypkg"], "-m takes no value"),
    (["--nnodes"], "--nnodes needs a value"),
    (["--master-addr="], "--master-addr needs a value"),
    (["--cfg"], "--cfg needs a value"),
    (["--module"], "--module needs a module name"),
    (["--module", "gpus=2", "mypkg.train"], "--module needs a module name, got 'gpus=2'"),
    (["--module", "train.py/x"], "--module needs a module name"),
    (["--log-dir=/tmp/logs"], "torchrun's --log-dir is not supported: " + "per-rank logs always go to " + LOGS),
    (["--log_dir", "/tmp/logs"], "torchrun's --log_dir (--log-dir) is not supported"),
    (["--tee", "3", "x.py"], "torchrun's --tee is not supported: per-rank logs"),
    (["-t", "3", "x.py"], "torchrun's -t (--tee) is not supported"),
    (["-t3", "x.py"], "torchrun's -t (--tee) is not supported"),
    (["--redirects=3"], "torchrun's --redirects is not supported: per-rank logs"),
    (["-r", "3", "x.py"], "torchrun's -r (--redirects) is not supported"),
    (["-r", "0:3,1:1", "x.py"], "torchrun's -r (--redirects) is not supported"),
    (["-r=3"], "torchrun's -r (--redirects) is not supported"),
    (["--rdzv-conf", "timeout=60"], "torchrun's --rdzv-conf is not supported: the timeouts are init_timeout"),
    (["--shutdown-timeout=5"], "launcher.shutdown_grace_s"),
    (["--role", "trainer"], "torchrun's --role is not supported: not supported by this launcher"),
    (["--start-method=fork"], "torchrun's --start-method is not supported"),
    (["--run-path", "x.py"], "torchrun's --run-path is not supported"),
    (["--logs-specs=x"], "torchrun's --logs-specs is not supported"),
    (["--foo"], "unknown flag --foo"),
    (["--nproc", "2"], "unknown flag --nproc: did you mean --nproc-per-node?"),
    (["--nodes=2"], "unknown flag --nodes: did you mean --nnodes?"),
    (["-x"], "unknown flag -x"),
    (["gpu=2"], "unknown key gpu: did you mean gpus?"),
    (["+gpu=2"], "unknown key gpu: did you mean gpus?"),
    (["++gpu=2"], "unknown key gpu: did you mean gpus?"),
    (["~gpu"], "unknown key gpu: did you mean gpus?"),
    (["+trainer.epoch=3"], "unknown key trainer.epoch: did you mean trainer.epochs?"),
    (["trainer.epoch=3"], "unknown key trainer.epoch: did you mean trainer.epochs?"),
    (["slurm.partitoin=gpu"], "unknown key slurm.partitoin: did you mean slurm.partition?"),
    (["save.every_epoch=1"], "unknown key save.every_epoch: did you mean save.every_epochs?"),
    (["+launcher.foo=1"], "unknown key launcher.foo (see --help)"),
    (["launcher.max_restart=1"], "unknown key launcher.max_restart: did you mean launcher.max_restarts?"),
    (["zzzz=1"], "unknown key zzzz (see --help)"),
    (["modle=resnet18"], "unknown key modle: did you mean model?"),
    (["hydar/launcher=slurm"], "unknown key hydar: did you mean hydra?"),
    (["-m", "optim.lr=0.1,0.01", "epochs=3"], "unknown key epochs"),
]


@pytest.mark.parametrize(("argv", "message"), REFUSED, ids=[" ".join(argv) for argv, _ in REFUSED])
def test_refused(argv, message):
    assert message in refusal(*argv)


def test_every_torchrun_flag_is_mapped_or_refused_by_name():
    from torch.distributed.run import get_args_parser

    samples = {"--rdzv-backend": "c10d", "--rdzv_backend": "c10d"}
    seen = 0
    for action in get_args_parser()._actions:
        for option in action.option_strings:
            seen += 1
            canonical = "--" + option[2:].replace("_", "-") if option.startswith("--") else option
            if option in ("-h", "--help"):
                assert parse_command_line([option], config_dir=CONFIG_DIR).show_help
                continue
            if option in ("-m", "--module"):
                assert "script_module=true" in parse(option, "mypkg.train")
                continue
            if option == "-r":  # Hydra's --run, unless a redirect spec follows (torchrun's -r)
                assert parse(option) == ["--run"]
                assert "-r (--redirects)" in refusal(option, "3", "x.py")
                continue
            argv = [option] if action.nargs == 0 else [option, samples.get(option, "1")]
            try:
                args = parse(*argv, "x.py")
            except CommandLineError as error:
                assert f"torchrun's {option}" in str(error), (option, str(error))
                assert canonical not in FLAGS, f"{option} is in FLAGS but refused: {error}"
                continue
            assert canonical in FLAGS, f"{option} was accepted without a mapping: {args}"
            assert any(arg.startswith(FLAGS[canonical].key + "=") for arg in args), (option, args)
    assert seen > 40


def test_parsing_imports_neither_torch_nor_hydra():
    code = ("import sys; from pathlib import Path; from launcher.cli import parse_command_line; "
            f"parse_command_line(['--nproc-per-node=2', 'seed=1', '-m', 'a.b'], "
            f"config_dir=Path({str(CONFIG_DIR)!r})); "
            "print(sorted(m for m in ('torch', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- main() and real runs ----------------------------------------------------------------------------

def test_main_in_process(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == "ddp-launcher 0.1.0"
    with pytest.raises(SystemExit) as exit_info:
        main(["gpu=2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: unknown key gpu: did you mean gpus?\n"


def run_launcher(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    runner = Launcher(tmp_path)
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=tmp_path,
                          env=runner.env(runner.new_job_id()), capture_output=True, text=True, timeout=120)


def test_help(tmp_path):
    out = run_launcher(tmp_path, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m launcher [key=value ...] [flags] [SCRIPT")
    assert "-m MODULE" in out.stdout
    assert "gpus=auto" in out.stdout and "processes per node" in out.stdout  # from config.yaml
    examples = out.stdout.split("\nexamples:\n", 1)[1]
    assert len([line for line in examples.splitlines() if line.startswith("  $ ")]) == 6
    for flag in ("--nproc-per-node", "--nnodes", "--max-restarts", "--standalone"):
        assert flag in out.stdout
    assert "--cfg job" in out.stdout and "--hydra-help" in out.stdout
    assert out.stderr == ""


def test_version(tmp_path):
    out = run_launcher(tmp_path, "--version")
    assert out.returncode == 0 and out.stdout == "ddp-launcher 0.1.0\n"


# One real command line in the fast tier; the others' messages are checked in-process (test_refused).
@pytest.mark.parametrize(("argv", "line"), [
    (["gpu=2"], "error: unknown key gpu: did you mean gpus?"),
    pytest.param(["+gpu=2"], "error: unknown key gpu: did you mean gpus?", marks=pytest.mark.slow),
    pytest.param(["--tee", "3", "x.py"], "error: torchrun's --tee is not supported: ", marks=pytest.mark.slow),
])
def test_refused_in_a_real_run(tmp_path, argv, line):
    out = run_launcher(tmp_path, *argv)
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(line), out.stderr
    assert out.stdout == "" and not (tmp_path / "outputs").exists()


@pytest.mark.slow  # a launcher process (~3 s); in-process: tests/test_golden.py
def test_torchrun_style_dry_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hello')\n")
    run_dir = tmp_path / "run"
    out = run_launcher(tmp_path, "--nproc-per-node=2", "--max-restarts=0", "dry_run=true",
                       f"hydra.run.dir={run_dir}", "train.py", "--lr=0.1", "a b")
    assert out.returncode == 0, out.stderr
    command = next(line for line in out.stdout.splitlines() if line.strip().startswith("command:"))
    assert "--nproc-per-node=2" in command and "--max-restarts=0" in command
    assert command.endswith(" " + shlex.join([str(script.resolve()), "--lr=0.1", "a b"])), command
    assert not run_dir.exists()
