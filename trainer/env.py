"""The environment contract: the only thing the trainer knows about how it was launched."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from trainer.contract import node_rank, restarts


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    restart: int = 0  # times this job started over (torchrun restarts + Slurm requeues): 0 at first

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read RANK/WORLD_SIZE/... as torchrun, our launcher or Slurm glue set them.

        With none of them set the trainer runs as a single process (``python -m trainer CONFIG``),
        which is handy for debugging.
        """
        environ = os.environ if environ is None else environ
        if "RANK" not in environ and "WORLD_SIZE" not in environ:
            return cls(0, 0, 1, 1, 0, "127.0.0.1", _free_local_port())
        missing = [key for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if key not in environ]
        if missing:
            raise RuntimeError(f"incomplete launch environment: {', '.join(missing)} not set")
        rank = int(environ["RANK"])
        return cls(
            rank=rank,
            local_rank=int(environ.get("LOCAL_RANK", rank)),
            world_size=int(environ["WORLD_SIZE"]),
            local_world_size=int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])),
            node_rank=node_rank(environ),
            master_addr=environ["MASTER_ADDR"],
            master_port=int(environ["MASTER_PORT"]),
            restart=restarts(environ),
        )


def _free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
