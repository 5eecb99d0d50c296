"""Functions that tests/test_api.py runs on every rank through ``launcher.launch``."""

import os

import torch
import torch.distributed as dist


def reduce_ranks(scale: float) -> dict:
    dist.init_process_group("gloo")
    value = torch.tensor([float(dist.get_rank() + 1) * scale])
    dist.all_reduce(value)
    result = {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "sum": value.item(),
              "local_rank": int(os.environ["LOCAL_RANK"])}
    dist.destroy_process_group()
    return result


def fail_on_rank(rank: int) -> None:
    dist.init_process_group("gloo")
    if dist.get_rank() == rank:
        raise ValueError(f"deliberate failure in a launched function on rank {rank}")
    dist.barrier()


def how_started() -> dict:
    """How this rank's process came to be: forked from the launcher's fork server (warm) or not."""
    import multiprocessing

    return {"forked": multiprocessing.parent_process() is not None,
            "parent_is_launcher": os.getppid() == int(os.environ["LAUNCHER_PARENT_PID"]),
            "own_session": os.getsid(0) == os.getpid()}
