"""``slurm.cpus_per_task: auto``: the CPUs of a node of the job's partition, shared by its tasks.

At submission (``launcher=slurm``'s ``plan_submission``, and the sweep preset through the
``slurm_cpus`` resolver), ``auto`` becomes the CPUs per node of the partition (``slurm.partition``,
or the cluster's default one, which ``sinfo`` marks with ``*``) divided by the tasks per node,
rounded down, at least 1. The count is the smallest over the partition's nodes, so the job fits on
any of them. ``sinfo`` is asked once per process and partition; where it is missing or does not
answer within ``SINFO_TIMEOUT_S`` (a laptop doing a dry run, a broken controller) the answer is 1,
said in one line on stderr.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys

SINFO_TIMEOUT_S = 5.0
FALLBACK = 1
_said: set[str] = set()  # the fallbacks already said on stderr (once per reason and process)


def cpus_per_task_for(cpus_per_node: int, tasks_per_node: int) -> int:
    """A node's CPUs shared by its tasks: floor(cpus / tasks), at least 1."""
    return max(1, cpus_per_node // max(1, tasks_per_node))


def parse_sinfo(text: str, partition: str | None) -> int | None:
    """The fewest CPUs of a node in ``partition`` (None: the default one, marked ``*``), from
    ``sinfo -h -N -o '%P %c'`` lines (``PARTITION CPUS``, one per node and partition). ``partition``
    may name several, comma-separated (as sbatch takes them): the fewest over all. None where no
    line is of the partition or none has a count."""
    wanted = None if partition is None else {name.strip() for name in partition.split(",") if name.strip()}
    counts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        name, cpus = fields[0], fields[1].rstrip("+")
        is_default = name.endswith("*")
        name = name.rstrip("*")
        if (is_default if wanted is None else name in wanted) and cpus.isdigit() and int(cpus) > 0:
            counts.append(int(cpus))
    return min(counts) if counts else None


@functools.cache
def _node_cpus(partition: str | None, sinfo: str | None) -> tuple[int | None, str]:
    """(CPUs per node, why not) from ``sinfo`` at the path ``sinfo``; cached per process (a sweep
    resolves its launcher config more than once)."""
    where = f"partition {partition}" if partition else "the default partition"
    if sinfo is None:
        return None, "sinfo is not on PATH"
    command = [sinfo, "-h", "-N", "-o", "%P %c", *(["-p", partition] if partition else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"sinfo did not answer within {SINFO_TIMEOUT_S:g} s"
    except OSError as error:
        return None, f"sinfo could not run ({error})"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return None, f"sinfo failed: {said}"
    cpus = parse_sinfo(done.stdout, partition)
    return cpus, "" if cpus else f"sinfo lists no node of {where}"


def node_cpus(partition: str | None) -> tuple[int | None, str]:
    return _node_cpus(partition or None, shutil.which("sinfo"))


def auto_cpus_per_task(partition: str | None, tasks_per_node: int) -> int:
    """``auto``'s value: the partition's CPUs per node / tasks per node, or 1 (said on stderr)."""
    cpus, why = node_cpus(partition)
    if cpus is None:
        if why not in _said:
            _said.add(why)
            print(f"slurm.cpus_per_task=auto: {why}; asking for {FALLBACK} CPU per task "
                  "(set slurm.cpus_per_task=N)", file=sys.stderr, flush=True)
        return FALLBACK
    return cpus_per_task_for(cpus, tasks_per_node)


def resolve_cpus_per_task(spec: object, partition: object, tasks_per_node: object) -> object:
    """``slurm.cpus_per_task`` as sbatch gets it: ``auto`` counted (tasks per node not an
    integer >= 1, which the caller refuses: 1 task), anything else as given."""
    if spec != "auto":
        return spec
    tasks = tasks_per_node if isinstance(tasks_per_node, int) and not isinstance(tasks_per_node, bool) else 1
    return auto_cpus_per_task(None if partition is None else str(partition), max(1, tasks))


def clear_cache() -> None:
    """Ask ``sinfo`` again, and say a fallback again (tests)."""
    _node_cpus.cache_clear()
    _said.clear()
