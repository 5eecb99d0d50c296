"""``python -m launcher.check [key=value ...] [flags]``: a pre-flight check of a cluster.

It is ``python -m launcher`` with the same keys and flags, run with ``launcher.probe`` as every
rank's target instead of a training job: the same modes (torchrun, mp_spawn, several nodes, inside
``srun``, ``launcher=slurm``), the same rendezvous, interfaces and timeouts, the same failure
report and clean-up. Whatever the check finds, a training run on this command line would meet too.

Rank 0 prints one row per rank and a verdict and writes ``RUN_DIR/check.json``; the exit code is 0
only for the verdict OK (1 otherwise, 2 for a config error). Two things the probe cannot say are
added here: which node is missing when the job never assembles (the launcher reports how many
joined; this process knows which node it is), and, after ``launcher=slurm``, the table the job's
rank 0 wrote, since its console is a Slurm log file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from launcher.__main__ import main as launcher_main
from launcher.cli import CommandLineError, override_key, parse_command_line
from launcher.environments import SlurmEnvironment
from launcher.errors import CONFIG_ERROR_EXIT_CODE

PROBE_MODULE = "launcher.probe"
# Defaults for a check, before the user's keys (which win): wait for a submitted job's verdict.
CHECK_DEFAULTS = ("slurm.wait=true", "slurm.job_name=ddp-check")
# The probe on every rank, with the backend the user's config asks for (auto: the trainer's rule).
PROBE_TARGET = (f"script={PROBE_MODULE}", "script_module=true", "script_args=[--backend,${backend}]")
TARGET_KEYS = frozenset({"script", "script_args", "script_module", "no_python"})
# Hydra instantiates it by name (this module, imported as launcher.check, not as __main__).
NAMING_CALLBACK = "+hydra.callbacks.check_missing_nodes._target_=launcher.check.NameMissingNodes"
# How the launcher reports a job that never assembled (launcher/modes/torchrun.py, failures.py).
NOT_ALL_JOINED = re.compile(r"only (\d+) of (\d+) (?:nodes|ranks) joined|(?:not all|fewer than) \d+ nodes joined")
MASTER_UNREACHED = re.compile(r"could not (?:reach the rendezvous store|join the process group) at (\S+?):?\s")
USAGE = """usage: python -m launcher.check [key=value ...] [flags]

A pre-flight check: every rank joins the job as a training run would, checks a small all-reduce,
times a large one (bus bandwidth) and a barrier; rank 0 prints a table and a verdict and writes
RUN_DIR/check.json. Exit code 0 for the verdict OK, 1 otherwise, 2 for a config error.
The keys and flags are python -m launcher's (python -m launcher --help), less a SCRIPT.
$LAUNCHER_CHECK_SIZE_MIB sets the size of the timed all-reduce (default 64 MiB on GPU, 4 on CPU)."""


def _node_list(nodes: Sequence[int], hosts: Sequence[str]) -> str:
    named = [f"{node} ({hosts[node]})" if node < len(hosts) else str(node) for node in nodes]
    return f"node {named[0]}" if len(named) == 1 else "nodes " + ", ".join(named)


def missing_nodes(message: str, nodes: int, node_rank: int | None, init_timeout: Any,
                  hosts: Sequence[str] = ()) -> str | None:
    """The verdict for a launcher error that says the job never assembled, naming the nodes that
    can be missing as seen from this one (``node_rank`` None: assigned at the rendezvous, unknown;
    ``hosts``: the nodes' host names, where known)."""
    within = f"within init_timeout={init_timeout}s"
    unreached = MASTER_UNREACHED.search(message)
    if unreached and node_rank not in (None, 0):
        return (f"FAIL: node 0 did not answer at {unreached.group(1)} {within}: is it started, with "
                "the same nodes, master_addr and master_port, and reachable from here?")
    joined = NOT_ALL_JOINED.search(message)
    if joined is None:
        return None
    others = [node for node in range(nodes) if node != node_rank]
    count = f" ({joined.group(0)})" if joined.group(1) else ""
    if node_rank is None:
        what = f"not all {nodes} nodes joined"
    elif len(others) == 1:
        what = f"{_node_list(others, hosts)} did not join"
    else:
        what = f"not every one of {_node_list(others, hosts)} joined"
    return f"FAIL: {what} {within}{count}: start every node, with the same nodes and rendezvous address and port"


class _MissingNodeReporter(logging.Handler):
    """Prints the verdict naming the missing node as the launcher logs that the job never
    assembled: at once, since a launcher whose rendezvous thread is stuck leaves with os._exit."""

    def __init__(self, nodes: int, node_rank: int | None, init_timeout: Any, hosts: Sequence[str] = ()) -> None:
        super().__init__(logging.ERROR)
        self.facts = (nodes, node_rank, init_timeout, hosts)

    def emit(self, record: logging.LogRecord) -> None:
        found = missing_nodes(record.getMessage(), *self.facts)
        if found is not None:
            print(f"check: {found}", file=sys.stderr, flush=True)


class NameMissingNodes(Callback):
    """Hydra callback: once Hydra has set up the launcher's logging, listen to its errors."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hosts: list[str] = []
        node_rank: int | None
        if SlurmEnvironment.detect(os.environ):  # the step says how many nodes, and which this is
            slurm = SlurmEnvironment(os.environ)
            nodes, node_rank, hosts = slurm.nodes(), slurm.node_rank(), slurm.hosts()
        else:
            nodes, node_rank = config.get("nodes"), config.get("node_rank")
            if node_rank == "auto":
                node_rank = 0
        if not isinstance(nodes, int) or nodes < 2:
            return  # one node: none can be missing
        if config.launcher.get("rdzv") == "c10d":  # assigned by the rendezvous as nodes arrive
            node_rank = None
        logging.getLogger("launcher").addHandler(
            _MissingNodeReporter(nodes, node_rank, config.get("init_timeout"), hosts))


def refuse_own_target(args: Sequence[str]) -> None:
    """The ranks run the probe: a SCRIPT or a script key on the command line is refused, not
    silently replaced (a malformed command line is left for the launcher to report)."""
    try:
        command = parse_command_line(list(args))
    except CommandLineError:
        return
    if command.show_help:
        print(USAGE)
        sys.exit(0)
    given = sorted(TARGET_KEYS & {override_key(item) for item in command.hydra_args})
    if given:
        print(f"error: launcher.check runs {PROBE_MODULE} on every rank; it takes no script "
              f"({', '.join(given)} given)", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT_CODE)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def show_submitted_result(started: float) -> None:
    """After ``launcher=slurm``: rank 0's table, from the check.json the job wrote (if it got there)."""
    from hydra.core.hydra_config import HydraConfig

    from launcher.probe import REPORT_FILE, render  # imports torch: only when a job was submitted

    if not HydraConfig.initialized() or HydraConfig.get().runtime.choices.get("launcher") != "slurm":
        return
    report = Path(str(HydraConfig.get().run.dir)).absolute() / REPORT_FILE
    if report.is_file() and report.stat().st_mtime >= started:  # not an earlier run's
        print(render(json.loads(report.read_text())), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the launcher on the user's keys with the probe as the target; exit with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    refuse_own_target(args)
    started = time.time()
    code = 0
    try:
        launcher_main([*CHECK_DEFAULTS, NAMING_CALLBACK, *PROBE_TARGET, *args])
    except SystemExit as stop:
        code = _exit_code(stop.code)
    if code != CONFIG_ERROR_EXIT_CODE:
        show_submitted_result(started)
    sys.exit(code)


if __name__ == "__main__":
    main()
