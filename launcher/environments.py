"""Cluster environments: who set this process's rank, and what they say it is.

Each class answers the same questions from its own variables only, like Lightning's cluster
environments. ``detect()`` probes them in a fixed order (torchelastic, then a Slurm step, then the
plain local machine) and cross-checks every environment that is present, so a process started by
torchrun inside a Slurm step fails at once when the two disagree instead of hanging at init.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.errors import ConfigError
from launcher.slurm.hostlist import expand_hostlist, expand_tasks_per_node, port_from_job_id


class EnvironmentMismatch(ConfigError):
    """Two launchers' variables describe different ranks for this process."""

    def __init__(self, detail: str) -> None:
        super().__init__("environment", detail, "the rank variables of torchrun and Slurm must agree")


@dataclass(frozen=True)
class ClusterEnvironment:
    """Base: the rank facts one launcher exported into this process's environment."""

    environ: Mapping[str, str]

    name = "base"

    @staticmethod
    def detect(environ: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def world_size(self) -> int:
        raise NotImplementedError

    def global_rank(self) -> int:
        raise NotImplementedError

    def local_rank(self) -> int:
        raise NotImplementedError

    def local_world_size(self) -> int:
        raise NotImplementedError

    def node_rank(self) -> int:
        raise NotImplementedError

    def main_address(self) -> str:
        raise NotImplementedError

    def main_port(self) -> int:
        raise NotImplementedError

    def _int(self, key: str) -> int:
        try:
            return int(self.environ[key])
        except KeyError as missing:
            raise ConfigError(key, None, f"{self.name} did not set it") from missing
        except ValueError as bad:
            raise ConfigError(key, self.environ[key], "must be an integer") from bad


class TorchElasticEnvironment(ClusterEnvironment):
    """Started by torchrun / torch.distributed.elastic, or by hand with torchrun's variables."""

    name = "torchelastic"
    REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

    @staticmethod
    def detect(environ: Mapping[str, str]) -> bool:
        return "TORCHELASTIC_RUN_ID" in environ or all(
            key in environ for key in TorchElasticEnvironment.REQUIRED
        )

    def world_size(self) -> int:
        return self._int("WORLD_SIZE")

    def global_rank(self) -> int:
        return self._int("RANK")

    def local_rank(self) -> int:
        return self._int("LOCAL_RANK")

    def local_world_size(self) -> int:
        return self._int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in self.environ else 1

    def node_rank(self) -> int:
        for key in ("GROUP_RANK", "NODE_RANK"):
            if key in self.environ:
                return self._int(key)
        return 0

    def main_address(self) -> str:
        return self.environ["MASTER_ADDR"]

    def main_port(self) -> int:
        return self._int("MASTER_PORT")


class SlurmEnvironment(ClusterEnvironment):
    """A task of a Slurm job step (``srun``): one task is one rank."""

    name = "slurm"

    @staticmethod
    def detect(environ: Mapping[str, str]) -> bool:
        in_step = "SLURM_STEP_ID" in environ or "SLURM_STEPID" in environ
        return in_step and "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ

    def world_size(self) -> int:
        return self._int("SLURM_NTASKS")

    def global_rank(self) -> int:
        return self._int("SLURM_PROCID")

    def local_rank(self) -> int:
        return self._int("SLURM_LOCALID")

    def tasks_per_node(self) -> list[int]:
        return expand_tasks_per_node(self.tasks_per_node_spec())

    def local_world_size(self) -> int:
        return self.tasks_per_node()[self.node_rank()]

    def nodes(self) -> int:
        return len(self.tasks_per_node())

    def tasks_per_node_spec(self) -> str:
        return self.environ.get("SLURM_STEP_TASKS_PER_NODE") or self.environ.get("SLURM_TASKS_PER_NODE", "")

    def node_rank(self) -> int:
        return self._int("SLURM_NODEID")

    def hosts(self) -> list[str]:
        """The step's nodes in node-rank order (SLURM_NODEID indexes this list)."""
        nodelist = self.environ.get("SLURM_STEP_NODELIST") or self.environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise ConfigError("SLURM_JOB_NODELIST", None, "Slurm did not set it")
        return expand_hostlist(nodelist)

    def main_address(self) -> str:
        if "MASTER_ADDR" in self.environ:
            return self.environ["MASTER_ADDR"]
        return self.hosts()[0]

    def main_port(self) -> int:
        if "MASTER_PORT" in self.environ:
            return self._int("MASTER_PORT")
        return port_from_job_id(self._int("SLURM_JOB_ID"))


class LocalEnvironment(ClusterEnvironment):
    """Nothing assigned a rank: the launcher starts the ranks itself."""

    name = "local"

    @staticmethod
    def detect(environ: Mapping[str, str]) -> bool:
        return True

    def world_size(self) -> int:
        return 1

    def global_rank(self) -> int:
        return 0

    def local_rank(self) -> int:
        return 0

    def local_world_size(self) -> int:
        return 1

    def node_rank(self) -> int:
        return 0

    def main_address(self) -> str:
        return "127.0.0.1"

    def main_port(self) -> int:
        return 0


PROBE_ORDER: tuple[type[ClusterEnvironment], ...] = (
    TorchElasticEnvironment,
    SlurmEnvironment,
    LocalEnvironment,
)


def _check_agreement(elastic: ClusterEnvironment, slurm: ClusterEnvironment) -> None:
    """torchrun inside a Slurm step: when both count one rank per task they must agree.

    With one Slurm task per node running torchrun, Slurm counts nodes and torchrun counts
    processes; those are different layers and are not compared.
    """
    if elastic.world_size() != slurm.world_size():
        return
    pairs = [
        ("RANK", elastic.global_rank(), "SLURM_PROCID", slurm.global_rank()),
        ("LOCAL_RANK", elastic.local_rank(), "SLURM_LOCALID", slurm.local_rank()),
    ]
    for ours, our_value, theirs, their_value in pairs:
        if our_value != their_value:
            raise EnvironmentMismatch(
                f"{ours}={our_value} but {theirs}={their_value} (WORLD_SIZE=SLURM_NTASKS="
                f"{elastic.world_size()})"
            )


def detect(environ: Mapping[str, str] | None = None) -> ClusterEnvironment:
    """The environment that assigned this process's rank, checked against any other present."""
    environ = dict(os.environ if environ is None else environ)
    present = [cls(environ) for cls in PROBE_ORDER if cls.detect(environ)]
    chosen = present[0]
    by_name = {env.name: env for env in present}
    if "torchelastic" in by_name and "slurm" in by_name:
        _check_agreement(by_name["torchelastic"], by_name["slurm"])
    return chosen
