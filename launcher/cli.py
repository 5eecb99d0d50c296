"""The command line before Hydra sees it: torchrun's flags and a positional script, as overrides.

    python -m launcher [key=value ...] [flags] SCRIPT [script args ...]
    python -m launcher [key=value ...] [flags] -m MODULE [args ...]

Tokens are read left to right. ``key=value`` (and Hydra's other override forms) and flags may come
in any order; the first token that is neither is the SCRIPT, and it and everything after it are
taken verbatim and handed to Hydra as ``script=...`` and ``script_args=[...]``. torchrun's flags
map onto config keys (``FLAGS``); the ones this launcher does not offer are refused with the
reason, never ignored. Keys are checked against ``conf/`` before Hydra runs, so a misspelt key is
an error instead of a silently added one.

Standard library only at import: Hydra's and torch's modules are imported when needed (torch only
to recognise one of its flags that is not in the tables below).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# An override's key path (before the first '='): key=value, +key=value, ++key=value, ~key,
# ~key=value, group/sub=value, key@pkg=value.
OVERRIDE_KEY = re.compile(r"[+~]*[A-Za-z_][\w./@:-]*")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
GROUPS = ("launcher", "model", "data", "optim", "sched", "loss", "hydra")
# Keys under these prefixes belong to the user's classes (or Hydra): not checked.
USER_KEYS = ("model", "data", "optim", "sched", "hydra", "slurm.extra")
CHECKED_SECTIONS = ("trainer", "slurm", "save")


class CommandLineError(Exception):
    """A command line that cannot work: reported as ``error: MESSAGE``, exit code 2."""


@dataclass(frozen=True)
class CommandLine:
    hydra_args: list[str] = field(default_factory=list)  # what Hydra's own parser gets
    show_help: bool = False
    show_version: bool = False


def hydra_quote(text: str) -> str:
    """``text`` as a quoted Hydra override value that parses and resolves back to exactly ``text``."""
    text = re.sub(r"(\\+)(?='|\$\{|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


# --- torchrun's flags ------------------------------------------------------------------------------

def _integer(flag: str, value: str) -> str:
    if not re.fullmatch(r"-?\d+", value):
        raise CommandLineError(f"{flag} expects an integer, got {value!r}")
    return str(int(value))


def _integer_or_auto(flag: str, value: str) -> str:
    return "auto" if value == "auto" else _integer(flag, value)


def _string(flag: str, value: str) -> str:
    return hydra_quote(value)


def _nodes(flag: str, value: str) -> str:
    low, sep, high = value.partition(":")
    if not re.fullmatch(r"\d+", low) or (sep and not re.fullmatch(r"\d+", high)):
        raise CommandLineError(f"{flag} expects a number of nodes, got {value!r}")
    if sep and int(low) != int(high):
        raise CommandLineError(f"{flag}={value}: elastic ranges are not offered: give one number of nodes")
    return str(int(low))


def _nproc(flag: str, value: str) -> str:
    if value == "auto":
        return "auto"
    if value in ("gpu", "cpu", "xpu"):
        raise CommandLineError(f"{flag}={value} is not supported: use {flag}=auto (gpus=auto: one "
                               "process per CUDA device, else 2 CPU processes) or a number")
    if not re.fullmatch(r"\d+", value):
        raise CommandLineError(f"{flag} expects a number of processes or auto, got {value!r}")
    return str(int(value))


def _seconds(flag: str, value: str) -> str:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise CommandLineError(f"{flag} expects a positive number of seconds, got {value!r}")
    return repr(seconds)


def _rdzv_backend(flag: str, value: str) -> str:
    if value not in ("c10d", "static"):
        raise CommandLineError(f"{flag}={value} is not supported: allowed: c10d, static")
    return value


def _local_ranks(flag: str, value: str) -> str:
    ranks = value.split(",")
    if not all(re.fullmatch(r"\d+", rank) for rank in ranks):
        raise CommandLineError(f"{flag} expects local ranks like 0 or 0,2, got {value!r}")
    return "[" + ",".join(str(int(rank)) for rank in ranks) + "]"


def _constant(text: str) -> Callable[[str, str], str]:
    return lambda flag, value: text


@dataclass(frozen=True)
class Flag:
    key: str  # the config key the flag sets
    convert: Callable[[str, str], str]  # (flag as spelled, value) -> the override's value
    metavar: str | None  # None: the flag takes no value
    help: str


FLAGS: dict[str, Flag] = {
    "--nnodes": Flag("nodes", _nodes, "N", "nodes=N (N:N too; elastic ranges are not offered)"),
    "--nproc-per-node": Flag("gpus", _nproc, "N|auto", "gpus=N|auto: processes per node"),
    "--node-rank": Flag("node_rank", _integer_or_auto, "K", "node_rank=K: this machine's index"),
    "--master-addr": Flag("master_addr", _string, "HOST", "master_addr=HOST: address of node 0"),
    "--master-port": Flag("master_port", _integer_or_auto, "PORT", "master_port=PORT"),
    "--local-addr": Flag("local_addr", _string, "ADDR", "local_addr=ADDR: this node's address"),
    "--max-restarts": Flag("launcher.max_restarts", _integer, "K",
                           "launcher.max_restarts=K: restart all ranks up to K times"),
    "--monitor-interval": Flag("launcher.monitor_interval_s", _seconds, "S",
                               "launcher.monitor_interval_s=S"),
    "--rdzv-backend": Flag("launcher.rdzv", _rdzv_backend, "c10d|static", "launcher.rdzv=..."),
    "--rdzv-endpoint": Flag("launcher.rdzv_endpoint", _string, "HOST:PORT",
                            "launcher.rdzv_endpoint=HOST:PORT (c10d)"),
    "--rdzv-id": Flag("launcher.rdzv_id", _string, "ID", "launcher.rdzv_id=ID (c10d)"),
    "--standalone": Flag("nodes", _constant("1"), None, "nodes=1 (no other node flags with it)"),
    "--module": Flag("script_module", _constant("true"), None,
                     "-m MODULE, --module MODULE: run `python -m MODULE` (script_module=true)"),
    "--no-python": Flag("no_python", _constant("true"), None,
                        "no_python=true: SCRIPT is an executable, run without python"),
    "--local-ranks-filter": Flag("console_local_ranks", _local_ranks, "R[,R...]",
                                 "console_local_ranks=[R,...]: local ranks the console shows"),
    "--local-rank-arg": Flag("launcher.local_rank_arg", _constant("true"), None,
                             "launcher.local_rank_arg=true: append --local_rank=N (ours; for "
                             "torch.distributed.launch scripts)"),
}
# --standalone cannot be combined with these (nodes only when other than 1).
STANDALONE_CONFLICTS = ("nodes", "node_rank", "master_addr", "master_port", "launcher.rdzv_endpoint")

_LOGS = ("per-rank logs always go to RUN_DIR/logs/rank_N.log and the console shows every rank, "
         "each line prefixed with its rank; filter the console with console_ranks=0 or "
         "console_local_ranks=[0,1] (--local-ranks-filter)")
# Why torchrun's other flags are refused; any flag of torchrun's not named here gets GENERIC.
REFUSED: dict[str, str] = {
    "--log-dir": _LOGS,
    "--tee": _LOGS,
    "--redirects": _LOGS,
    "--log-line-prefix-template": "the console prefixes every line with its rank; " + _LOGS,
    "--duplicate-stdout-filters": _LOGS,
    "--duplicate-stderr-filters": _LOGS,
    "--rdzv-conf": "the timeouts are init_timeout=S (joining) and collective_timeout=S (each "
                   "collective); the rendezvous is set by launcher.rdzv, launcher.rdzv_endpoint "
                   "and launcher.rdzv_id",
    "--shutdown-timeout": "the SIGTERM-to-SIGKILL grace is launcher.shutdown_grace_s=S",
}
GENERIC = "not supported by this launcher (python -m launcher --help lists what is)"
TORCHRUN_SHORT = {"-t": "--tee", "-r": "--redirects"}  # -r alone is Hydra's --run (below)
# torchrun's -r takes a redirect spec: 0-3, or local_rank:0-3 pairs.
_REDIRECTS = re.compile(r"[0-3]|\d+:[0-3](,\d+:[0-3])*")


@dataclass(frozen=True)
class HydraFlag:
    short: str | None
    value: str  # "none" | "one" | "optional"
    choices: tuple[str, ...] = ()


HYDRA_FLAGS: dict[str, HydraFlag] = {
    "--cfg": HydraFlag("-c", "one", ("job", "hydra", "all")),
    "--package": HydraFlag("-p", "one"),
    "--resolve": HydraFlag(None, "none"),
    "--info": HydraFlag("-i", "optional",
                        ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")),
    "--config-path": HydraFlag("-cp", "one"),
    "--config-name": HydraFlag("-cn", "one"),
    "--config-dir": HydraFlag("-cd", "one"),
    "--shell-completion": HydraFlag("-sc", "none"),
    "--hydra-help": HydraFlag(None, "none"),
    "--run": HydraFlag("-r", "none"),
    "--multirun": HydraFlag(None, "none"),  # -m: see parse_command_line
    "--experimental-rerun": HydraFlag(None, "one"),
}
HYDRA_SHORT = {flag.short: name for name, flag in HYDRA_FLAGS.items() if flag.short}
OWN_FLAGS = ("--help", "-h", "--version", "-m")


@functools.cache
def torchrun_option_strings() -> frozenset[str]:
    """Every option string torchrun's parser accepts (imports torch: only for an unknown flag)."""
    try:
        from torch.distributed.run import get_args_parser
    except ImportError:  # pragma: no cover - torch is a dependency
        return frozenset()
    return frozenset(option for action in get_args_parser()._actions for option in action.option_strings)


def _canonical(name: str) -> str:
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def _refusal(spelled: str) -> CommandLineError:
    canonical = TORCHRUN_SHORT.get(spelled, _canonical(spelled))
    shown = spelled if canonical == spelled else f"{spelled} ({canonical})"
    return CommandLineError(f"torchrun's {shown} is not supported: {REFUSED.get(canonical, GENERIC)}")


def _unknown_flag(spelled: str) -> CommandLineError:
    known = sorted({*FLAGS, *HYDRA_FLAGS, *HYDRA_SHORT, *OWN_FLAGS, *torchrun_option_strings()})
    canonical = _canonical(spelled)
    # An abbreviation (argparse, so torchrun, accepts them): the flags it starts, ours first.
    started = [flag for flag in [*FLAGS, *known] if len(canonical) > 3 and flag.startswith(canonical)]
    close = started[:1] or difflib.get_close_matches(spelled, known, n=1)
    hint = f": did you mean {close[0]}?" if close else " (see --help)"
    return CommandLineError(f"unknown flag {spelled}{hint}")


def is_override(token: str) -> bool:
    key, eq, _ = token.partition("=")
    return bool(OVERRIDE_KEY.fullmatch(key)) and (bool(eq) or token.startswith("~"))


def override_key(override: str) -> str:
    """The config key an override sets: ``+trainer.epochs=3`` -> ``trainer.epochs``."""
    return override.partition("=")[0].lstrip("+~").partition("@")[0]


# --- the parser ------------------------------------------------------------------------------------

def parse_command_line(argv: list[str], config_dir: Path | None = None) -> CommandLine:
    """Hydra's arguments for this command line, or ``CommandLineError`` saying what is wrong.

    ``config_dir`` is where ``config.yaml`` lives (default: the launcher's own); override keys are
    checked against it unless the command line names another primary config.
    """
    hydra_flags: list[str] = []
    hydra_seen: dict[str, str] = {}  # canonical Hydra flag -> as given
    overrides: list[str] = []
    settings: list[tuple[str, str, str]] = []  # (key, value, what set it) from flags and SCRIPT
    script: str | None = None
    script_args: list[str] = []
    module_form: str | None = None  # "-m" or "--module" (as spelled) when SCRIPT is a module
    module_flag_pending: str | None = None  # --module given, its module not yet read

    def hydra_flag(name: str, spelled: str, value: str | None) -> None:
        if name in hydra_seen:
            raise CommandLineError(f"{hydra_seen[name]} and {spelled} both given")
        hydra_seen[name] = spelled
        flag = HYDRA_FLAGS[name]
        if flag.choices and value is not None and value not in flag.choices:
            raise CommandLineError(f"{spelled}={value}: allowed: {', '.join(flag.choices)}")
        if value is None and flag.value == "optional":
            value = flag.choices[0]  # explicit: a bare --info would take the next override as its value
        hydra_flags.append(name if value is None else f"{name}={value}")

    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":  # what follows is the SCRIPT, whatever it looks like
            if index < len(argv):
                script, script_args = argv[index], list(argv[index + 1:])
            break
        if not token.startswith("-") or token == "-":
            if module_flag_pending is not None:
                if not MODULE_NAME.fullmatch(token):
                    raise CommandLineError(f"{module_flag_pending} needs a module name, got {token!r}")
                module_form, script, script_args = module_flag_pending, token, list(argv[index:])
                break
            if is_override(token):
                overrides.append(token)
                continue
            script, script_args = token, list(argv[index:])
            break

        name, eq, value = token.partition("=")
        given: str | None = value if eq else None
        if name in ("--help", "-h"):
            return CommandLine(show_help=True)
        if name == "--version":
            return CommandLine(show_version=True)
        if name == "-m":
            if eq:
                raise CommandLineError("-m takes no value: -m MODULE, or -m alone for a multirun")
            following = argv[index] if index < len(argv) else ""
            if MODULE_NAME.fullmatch(following):  # torchrun's -m MODULE
                module_form, script, script_args = "-m", following, list(argv[index + 1:])
                break
            hydra_flag("--multirun", token, None)
            continue
        if name == "-r" and (eq or (index < len(argv) and _REDIRECTS.fullmatch(argv[index]))):
            raise _refusal(name)  # torchrun's -r SPEC, not Hydra's --run
        canonical = _canonical(name)

        if canonical in FLAGS:
            flag = FLAGS[canonical]
            if flag.metavar is None:
                if eq:
                    raise CommandLineError(f"{name} takes no value")
                given_as = name
            else:
                if given is None:
                    if index >= len(argv):
                        raise CommandLineError(f"{name} needs a value ({flag.metavar})")
                    given = argv[index]
                    index += 1
                if given == "":
                    raise CommandLineError(f"{name} needs a value ({flag.metavar})")
                given_as = f"{name}={given}"
            if canonical == "--module":
                module_flag_pending = name
                continue
            settings.append((flag.key, flag.convert(name, given or ""), given_as))
            continue

        hydra_name = HYDRA_SHORT.get(name, canonical)
        if hydra_name in HYDRA_FLAGS:
            flag_spec = HYDRA_FLAGS[hydra_name]
            if flag_spec.value == "none":
                if eq:
                    raise CommandLineError(f"{name} takes no value")
            elif given is None and flag_spec.value == "one":
                if index >= len(argv):
                    raise CommandLineError(f"{name} needs a value")
                given = argv[index]
                index += 1
            elif given is None and index < len(argv) and argv[index] in flag_spec.choices:
                given = argv[index]  # --info's optional value
                index += 1
            hydra_flag(hydra_name, name, given)
            continue

        if name in TORCHRUN_SHORT or canonical in REFUSED:
            raise _refusal(name)
        if name[:2] in TORCHRUN_SHORT and not name.startswith("--"):  # -t3: torchrun's -t 3
            raise _refusal(name[:2])
        if name in torchrun_option_strings() or canonical in torchrun_option_strings():
            raise _refusal(name)
        raise _unknown_flag(name)

    if module_flag_pending is not None and script is None:
        raise CommandLineError(f"{module_flag_pending} needs a module name")
    if script is not None:
        settings.append(("script", hydra_quote(script), f"the positional {script}"))
        settings.append(("script_args", "[" + ",".join(hydra_quote(a) for a in script_args) + "]",
                         f"the positional {script}"))
        if module_form is not None:
            settings.append(("script_module", "true", module_form))
    settings = _checked_combinations(settings, overrides, script, module_form)

    own_config = any(name in hydra_seen for name in
                     ("--config-name", "--config-path", "--config-dir", "--shell-completion",
                      "--experimental-rerun"))
    if not own_config:
        check_keys(overrides, config_dir or _default_config_dir())
    hydra_args = [*hydra_flags, *overrides, *(f"{key}={value}" for key, value, _ in settings)]
    return CommandLine(hydra_args=hydra_args)


def _checked_combinations(settings: list[tuple[str, str, str]], overrides: list[str],
                          script: str | None, module_form: str | None) -> list[tuple[str, str, str]]:
    """``settings`` (less a --standalone that --nnodes=1 repeats), or the error of a combination
    that cannot work: a key set twice, --standalone with another node's flags, ..."""
    by_key: dict[str, list[tuple[str, str]]] = {}  # key -> (value, what set it)
    for key, value, source in settings:
        by_key.setdefault(key, []).append((value, source))
    for override in overrides:
        by_key.setdefault(override_key(override), []).append((override.partition("=")[2], override))

    standalone = next((source for _, _, source in settings if source.startswith("--standalone")), None)
    if standalone is not None:
        for key in STANDALONE_CONFLICTS:
            for value, source in by_key.get(key, []):
                if source != standalone and not (key == "nodes" and value == "1"):
                    raise CommandLineError(f"{standalone} cannot be combined with {source}")
        if any(key == "nodes" and source != standalone for key, _, source in settings):
            # --nnodes=1 says the same: keep one of the two
            settings = [item for item in settings if item[2] != standalone]
            by_key["nodes"] = [(value, source) for value, source in by_key["nodes"] if source != standalone]
    no_python = next((source for key, _, source in settings if key == "no_python"), None)
    if no_python is not None and module_form is not None:
        raise CommandLineError(f"{no_python} cannot be combined with {module_form} (a module runs in python)")
    if no_python is not None and script is None:
        raise CommandLineError(f"{no_python} needs a SCRIPT (the executable to run)")

    flag_keys = {key for key, _, _ in settings}
    for key, given in by_key.items():
        if key in flag_keys and len(given) > 1:
            sources = list(dict.fromkeys(source for _, source in given))
            first, second = (sources + sources)[:2]
            raise CommandLineError(f"{key} is given twice: by {first} and by {second}")
    return settings


# --- config keys -----------------------------------------------------------------------------------

def _default_config_dir() -> Path:
    from launcher.__main__ import CONFIG_DIR

    return CONFIG_DIR


@functools.cache
def known_keys(config_dir: Path) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    """The top-level keys and groups, and the keys of the checked sections (and ``launcher``)."""
    import yaml

    config = yaml.safe_load((config_dir / "config.yaml").read_text()) or {}
    top = frozenset(key for key in config if key != "defaults") | frozenset(GROUPS)
    sections = {name: tuple(config.get(name) or {}) for name in CHECKED_SECTIONS}
    launcher_keys: dict[str, None] = {}
    for path in sorted((config_dir / "launcher").glob("*.yaml")):
        launcher_keys.update(dict.fromkeys(yaml.safe_load(path.read_text()) or {}))
    sections["launcher"] = tuple(launcher_keys)
    return top, sections


def _unknown_key(key: str, candidates: Iterable[str], prefix: str = "") -> CommandLineError:
    close = difflib.get_close_matches(key.removeprefix(prefix), sorted(candidates), n=1)
    hint = f": did you mean {prefix}{close[0]}?" if close else " (see --help)"
    return CommandLineError(f"unknown key {key}{hint}")


def check_keys(overrides: list[str], config_dir: Path) -> None:
    """Refuse an override of a key the config does not have (Hydra would add a ``+key`` silently)."""
    top, sections = known_keys(config_dir)
    for override in overrides:
        key = override_key(override)
        if "/" in key:  # a config group path: hydra/launcher=..., launcher/...
            head = key.split("/")[0]
            if head not in GROUPS:
                raise _unknown_key(head, GROUPS)
            continue
        parts = key.split(".")
        if parts[0] not in top:
            raise _unknown_key(parts[0], top)
        if len(parts) < 2 or parts[0] not in sections:
            continue
        if any(key == user or key.startswith(user + ".") for user in USER_KEYS):
            continue
        section = parts[0]
        if parts[1] not in sections[section]:
            raise _unknown_key(f"{section}.{parts[1]}", sections[section], prefix=f"{section}.")


# --- help ------------------------------------------------------------------------------------------

EXAMPLES = (
    ("one node, 4 processes, the built-in trainer", "{prog} gpus=4 trainer.epochs=10"),
    ("your script on two nodes (run this on each, with --node-rank=1 on the second)",
     "{prog} --nnodes=2 --nproc-per-node=8 --node-rank=0 --master-addr=10.0.0.1 "
     "--master-port=29500 train.py --lr 0.1"),
    ("your model and data in the built-in trainer",
     "{prog} model=mypkg.MyNet data=mypkg.MyData +model.width=64"),
    ("submit to Slurm (2 nodes x 4 GPUs)",
     "{prog} launcher=slurm nodes=2 gpus=4 backend=nccl slurm.partition=gpu slurm.time=120"),
    ("a sweep: one job per value", "{prog} -m optim.lr=0.1,0.01"),
    ("dry run: each rank's place and the exact command, nothing started",
     "{prog} dry_run=true nodes=2 gpus=4 node_rank=1 master_addr=10.0.0.1 master_port=29500"),
)
_TOP_KEY = re.compile(r"([A-Za-z_]\w*):(.*)")
_SECTION_TITLE = re.compile(r"#\s*-+\s*(.*?)\s*-+\s*$")


def _config_keys_help(config_dir: Path) -> list[str]:
    """The top-level keys of config.yaml with their defaults and trailing comments."""
    lines: list[str] = []
    sections: list[str] = []
    for line in (config_dir / "config.yaml").read_text().splitlines():
        title = _SECTION_TITLE.fullmatch(line)
        if title:
            lines.append(f"  {title.group(1)}:")
            continue
        match = _TOP_KEY.fullmatch(line)
        if not match or match.group(1) in ("defaults", "hydra"):
            continue
        value, _, comment = match.group(2).partition("#")
        name, value, comment = match.group(1), value.strip(), comment.strip()
        if not value:  # a section: its keys are name.KEY
            keys = ", ".join(known_keys(config_dir)[1].get(name, ()))
            sections.append(f"    {name + '.KEY':<24} {comment or keys}")
            continue
        lines.append(f"    {name + '=' + value:<24} {comment}".rstrip())
    return [*lines, "  sections (name.KEY=value):", *sections]


def _group_choices(config_dir: Path) -> list[str]:
    lines = []
    for group in GROUPS[:-1]:
        names = sorted(path.stem for path in (config_dir / group).glob("*.yaml"))
        lines.append(f"    {group + '=':<24} {' | '.join(names)}")
    return lines


def _flags_help() -> list[str]:
    lines = []
    for name, flag in FLAGS.items():
        if name == "--module":
            continue
        shown = name if flag.metavar is None else f"{name} {flag.metavar}"
        lines.append(f"  {shown:<32} {flag.help}")
    return lines


def help_text(config_dir: Path, prog: str = "python -m launcher") -> str:
    examples = []
    for what, command in EXAMPLES:
        examples += [f"  # {what}", f"  $ {command.format(prog=prog)}"]
    return "\n".join([
        f"usage: {prog} [key=value ...] [flags] [SCRIPT [script args ...]]",
        f"       {prog} [key=value ...] [flags] -m MODULE [args ...]",
        "",
        "Launch a PyTorch DDP job: the built-in trainer, or SCRIPT (or MODULE) on every rank the way",
        "torchrun would. Everything after SCRIPT goes to it verbatim. Without a SCRIPT, -m is Hydra's",
        "multirun (a sweep); with a module name after it, torchrun's -m.",
        "",
        "main keys (key=value; the defaults shown):",
        *_config_keys_help(config_dir),
        "  config groups (group=choice, or group.KEY=value; your own class by _target_):",
        *_group_choices(config_dir),
        "",
        "torchrun flags (--flag=value or --flag value; --x-y or --x_y):",
        "  -m MODULE, --module MODULE       script_module=true: run `python -m MODULE`",
        *_flags_help(),
        "  other torchrun flags are refused with the reason (--log-dir, --tee, --redirects: every",
        "  rank's log is RUN_DIR/logs/rank_N.log and the console shows each rank's lines prefixed)",
        "",
        "Hydra flags: -m/--multirun, --cfg job|hydra|all, --resolve, --package/-p, --info/-i,",
        "  --config-path/-cp, --config-name/-cn, --config-dir/-cd, --run/-r, --shell-completion/-sc,",
        "  --experimental-rerun; --version prints this launcher's version.",
        "",
        "examples:",
        *examples,
        "",
        "--cfg job shows the full composed config; --hydra-help shows Hydra's own help.",
    ])
