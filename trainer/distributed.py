"""Distributed set-up in one place: process group, device, CPU threads, seeds, clean teardown."""

from __future__ import annotations

import contextlib
import gc
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from trainer.contract import threads_per_rank
from trainer.env import DistEnv
from trainer.tasks import tensors_in


def resolve_backend(requested: str) -> str:
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return requested


def cuda_device_index(visible: int, sharing: int, local_rank: int) -> int:
    """The launcher's rule (launcher/devices.py, written again: the trainer never imports the
    launcher; tests hold both to one table). ``sharing`` ranks see the same ``visible`` devices:
    one device seen by one rank (a Slurm task bound to a GPU) is ``cuda:0``; else ``LOCAL_RANK``."""
    if visible == 1 and sharing == 1:
        return 0
    if visible < max(sharing, local_rank + 1, 1):
        raise RuntimeError(f"LOCAL_RANK={local_rank} ({sharing} rank(s) share this view) needs its own "
                           f"CUDA device; {visible} visible (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return local_rank


def select_device(backend: str, env: DistEnv) -> torch.device:
    """The CUDA device for NCCL by ``cuda_device_index``. Indices are relative to
    CUDA_VISIBLE_DEVICES, as CUDA counts. A Slurm task that is its rank has its own view."""
    if backend != "nccl":
        return torch.device("cpu")
    own_task = (("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ)
                and os.environ.get("SLURM_PROCID") == str(env.rank)
                and os.environ.get("SLURM_NTASKS") == str(env.world_size))
    index = cuda_device_index(torch.cuda.device_count(), 1 if own_task else env.local_world_size,
                              env.local_rank)
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def limit_cpu_threads(env: DistEnv) -> int:
    """Use OMP_NUM_THREADS when the launcher set it (it is read before torch starts any thread);
    otherwise give each of this node's processes an equal share of the cores."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    else:
        threads = threads_per_rank(env.local_world_size)
    torch.set_num_threads(threads)
    return threads


def configure_determinism(deterministic: bool, cudnn_benchmark: bool) -> None:
    """``deterministic``: every op must have a deterministic kernel (an op without one raises
    instead of silently varying); ``cudnn_benchmark``: let cuDNN time its algorithms for fixed
    shapes, which picks them anew each run, hence the launcher refuses both at once."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; read when its first handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._inductor (1.3 s per rank here).
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _set_collective_timeout(timeout: timedelta) -> None:
    # Public since torch 2.10; the older private spelling does the same.
    setter = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout
    setter(timeout)


@contextlib.contextmanager
def process_group(env: DistEnv, backend: str, init_timeout_s: float,
                  collective_timeout_s: float) -> Iterator[None]:
    """``init_process_group`` over ``env://``; always destroyed, also when training raises.

    Two bounds instead of torch's one 30-minute default: ``init_timeout_s`` for every rank to
    join, then ``collective_timeout_s`` for any one collective (a dead peer or a cut link).
    """
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=init_timeout_s),
    )
    _set_collective_timeout(timedelta(seconds=collective_timeout_s))
    try:
        yield
    except BaseException:
        # Peers may be gone: no barrier, just release our resources.
        dist.destroy_process_group()
        raise
    # A DDP model still alive at exit can abort the process ("terminate called without an active
    # exception"): collect it, wait for every rank, then tear down.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def all_reduce_scalars(values: list[float], device: torch.device,
                       op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> list[float]:
    """Reduce scalars over ranks in float64, so metrics do not depend on float32 rounding."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def settle_gradient_buckets(ddp_model: torch.nn.Module, step: Any, batch: Any) -> None:
    """Run one throw-away backward so DDP fixes its gradient-bucket layout before training.

    DDP lays its buckets out anew after the first backward of a process. With more than two ranks
    the layout decides the order in which each gradient element is summed, so a resumed run, whose
    first step would still use the initial layout, would drift from an uninterrupted one by float
    rounding. Settling the layout first makes every real step use the same one, in every run.
    The pass is a real training-mode pass (the same graph as a step, so no parameter looks unused)
    whose traces are undone: buffers such as BatchNorm statistics and the RNG are restored, and the
    gradients (all zero) dropped. Call it once per process, with the first batch.
    ``step``: a ``trainer.tasks.Step``; the built-in step's pass sees zeros of the inputs' shape.
    """
    example = step.example_input(batch)
    device = next((tensor.device for tensor in tensors_in(batch)), torch.device("cpu"))
    buffers = [buffer.detach().clone() for buffer in ddp_model.buffers()]
    rng = torch.get_rng_state()
    # Only the batch's own device: get/set_rng_state_all would create a context on every GPU.
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    if isinstance(example, torch.Tensor):
        output = ddp_model(torch.zeros_like(example))
    else:  # the user's step, on the batch itself
        output = step.training_loss(ddp_model, batch)[0]
    (output.float().sum() * 0).backward()
    with torch.no_grad():
        for buffer, saved in zip(ddp_model.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    for parameter in ddp_model.parameters():
        parameter.grad = None
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
