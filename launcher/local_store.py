"""A one-node job's rendezvous through a file, so the job listens on no network port.

torch's TCPStore listens on every interface, unauthenticated, and the job's ranks trust what comes
through it. On one machine nothing needs a socket for that: the ranks' ``env://`` rendezvous and
torchrun's agent both use a ``FileStore`` in the launcher's private temporary directory instead.
(Collectives still connect the ranks: gloo and NCCL over the loopback interface the launcher
picks with GLOO/NCCL_SOCKET_IFNAME.) Jobs of several nodes keep torch's TCPStore on master_port,
which must then be reachable by the cluster only.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

FILE_STORE_ENV = "LAUNCHER_FILE_STORE"  # the ranks' store file (plus the attempt number)
AGENT_BACKEND = "launcher-file"


def rank_store_path() -> str | None:
    """This attempt's store file: a restarted attempt must not see the keys of the one before."""
    base = os.environ.get(FILE_STORE_ENV)
    if not base:
        return None
    return f"{base}.attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _query_int(url: str, key: str, variable: str) -> int:
    values = parse_qs(urlparse(url).query).get(key)
    return int(values[0]) if values else int(os.environ[variable])


def use_file_store_for_env_rendezvous() -> bool:
    """In a rank: make ``env://`` (the default ``init_method``) rendezvous through the job's
    store file. torch's handler table is private: if it ever moves, the rank keeps torch's own
    (TCPStore) rendezvous, which works too."""
    path = rank_store_path()
    if path is None:
        return False
    rendezvous = importlib.import_module("torch.distributed.rendezvous")
    if not isinstance(getattr(rendezvous, "_rendezvous_handlers", None), dict):
        return False

    def file_env_handler(url: str, timeout: timedelta | None = None, **_: Any) -> Iterator[tuple[Any, int, int]]:
        from torch.distributed import FileStore

        rank = _query_int(url, "rank", "RANK")
        world_size = _query_int(url, "world_size", "WORLD_SIZE")
        store = FileStore(path, world_size)
        if timeout is not None:
            store.set_timeout(timeout)
        yield store, rank, world_size
        raise RuntimeError("Unable to perform re-rendezvous using env:// method")

    rendezvous._rendezvous_handlers.pop("env", None)
    rendezvous.register_rendezvous_handler("env", file_env_handler)
    return True


@functools.cache
def _agent_handler_class() -> type:
    """torchrun's agent on one node: its rendezvous and exit barrier through a store file.

    The agent still exports MASTER_ADDR/MASTER_PORT (what the config says) to the ranks, which
    rendezvous through their own file (``use_file_store_for_env_rendezvous``), so nothing listens.
    """
    from torch.distributed import FileStore
    from torch.distributed.elastic.rendezvous import (
        RendezvousHandler,
        RendezvousInfo,
        RendezvousParameters,
        RendezvousStoreInfo,
    )

    class FileRendezvousHandler(RendezvousHandler):
        def __init__(self, params: RendezvousParameters) -> None:
            self.run_id = params.run_id
            self.store = FileStore(str(params.config["path"]), 1)
            master_addr, _, master_port = str(params.endpoint).rpartition(":")
            self.store_info = RendezvousStoreInfo(master_addr.strip("[]"), int(master_port))
            self.closed = False

        def get_backend(self) -> str:
            return AGENT_BACKEND

        @property
        def use_agent_store(self) -> bool:
            return False

        def next_rendezvous(self) -> RendezvousInfo:
            return RendezvousInfo(self.store, 0, 1, self.store_info)

        def is_closed(self) -> bool:
            return self.closed

        def set_closed(self) -> None:
            self.closed = True

        def num_nodes_waiting(self) -> int:
            return 0

        def get_run_id(self) -> str:
            return self.run_id

        def shutdown(self) -> bool:
            return True

    return FileRendezvousHandler


def _create_agent_handler(params: Any) -> Any:
    return _agent_handler_class()(params)


def register_agent_backend() -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(AGENT_BACKEND, _create_agent_handler)
