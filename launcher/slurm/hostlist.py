"""Slurm's compressed forms, expanded: host lists, tasks per node, and the port a job derives."""

from __future__ import annotations

import re

from launcher.errors import ConfigError


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand Slurm's compressed host list in order: ``n[1-3,7]``, ``gpu-[001-002].cluster``, and
    several bracket groups in one name, ``rack[1-2]-node[01-02]`` (every combination, as Slurm).

    submitit's parser (a dependency, imported only here), else ``scontrol show hostnames``.
    """
    try:
        from submitit.slurm.slurm import _parse_node_list
    except ImportError:  # pragma: no cover - submitit moved its private parser
        return _scontrol_hostnames(hostlist)
    try:
        hosts = list(_parse_node_list(hostlist))
    except Exception as err:
        raise ConfigError("SLURM_JOB_NODELIST", hostlist, f"cannot be expanded ({err})") from err
    if not hosts or any("[" in host or "]" in host for host in hosts):
        raise ConfigError("SLURM_JOB_NODELIST", hostlist, "cannot be expanded into host names")
    return hosts


def _scontrol_hostnames(hostlist: str) -> list[str]:
    import subprocess

    try:
        done = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError("SLURM_JOB_NODELIST", hostlist, f"cannot be expanded: no host list "
                          f"parser (submitit) and no scontrol ({err})") from err
    if done.returncode or not done.stdout.split():
        raise ConfigError("SLURM_JOB_NODELIST", hostlist, f"scontrol cannot expand it: {done.stderr.strip()}")
    return done.stdout.split()


def expand_tasks_per_node(spec: str) -> list[int]:
    """Expand ``SLURM_TASKS_PER_NODE`` (``2(x3),1``) into one count per node."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ConfigError("SLURM_TASKS_PER_NODE", spec, "expected a form like '2(x3),1'")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def port_from_job_id(job_id: int) -> int:
    """A port every task of a Slurm job derives alike, without talking: 15000–34999."""
    return 15000 + job_id % 20000
