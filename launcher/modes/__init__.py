"""Launch modes: each starts this node's ranks and reports how the ones that failed exited.

A mode's ``run(job)`` returns ``{global_rank: (exit_code, time_seen)}`` for ranks that exited
abnormally (empty on success); ``command_line(job)`` says, for ``dry_run``, exactly what it starts.
"""

from __future__ import annotations

from types import ModuleType


def get_mode(name: str) -> ModuleType:
    if name == "torchrun":
        from launcher.modes import torchrun

        return torchrun
    from launcher.modes import mp_spawn

    return mp_spawn
