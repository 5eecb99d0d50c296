"""What every rank of ``python -m launcher.check`` runs: join the job, prove the collectives work
and time them, and let rank 0 print one row per rank and a verdict.

It is an ordinary ``env://`` script (``torchrun -m launcher.probe`` runs it too), so it goes
through the same rendezvous, interface choice, timeouts and failure report as a training run:
what passes here is what a training job would meet.

Every rank measures on its own (host, address, device, versions, the correctness of a small
all-reduce, the bus bandwidth of a large one, the latency of a barrier); the reports travel as
JSON bytes in uint8 tensors over the job's own backend, so every rank holds all of them and
reaches the same verdict. A verdict other than OK ends every rank with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from launcher.devices import cuda_device_index
from launcher.network import interface_of, route_source_address
from launcher.rank_output import LOG_DIR_ENV
from trainer.contract import node_rank

REPORT_FILE = "check.json"
SIZE_ENV = "LAUNCHER_CHECK_SIZE_MIB"
DEFAULT_SIZE_MIB = {"nccl": 64.0, "gloo": 4.0}  # large enough to be bandwidth-bound, quick on CPU
BARRIERS = 10
# A node is slow when its figure is this many times worse than the median of the other nodes'.
SLOW_FACTOR = 3.0
BARRIER_SLACK_MS = 1.0  # below this, barrier differences are scheduling noise, not a slow node


@dataclass(frozen=True)
class RankReport:
    """One rank's findings; a row of the table and an entry of check.json."""

    rank: int
    node_rank: int
    local_rank: int
    host: str
    address: str
    interface: str | None
    device: str
    torch: str
    cuda: str | None
    nccl: str | None
    sum_ok: bool
    sum_got: int
    busbw_gbs: float
    algbw_gbs: float
    allreduce_ms: float
    barrier_ms: float


@dataclass(frozen=True)
class Options:
    """What the probe measures with, the same on every rank."""

    backend: str
    size_bytes: int
    iters: int


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "nccl", "gloo"),
                        help="auto: nccl when CUDA is usable, else gloo (the trainer's rule)")
    parser.add_argument("--size-mib", type=float, default=None,
                        help=f"bytes of the timed all-reduce, in MiB (default: ${SIZE_ENV}, else "
                             f"{DEFAULT_SIZE_MIB['nccl']:g} on GPU, {DEFAULT_SIZE_MIB['gloo']:g} on CPU)")
    parser.add_argument("--iters", type=int, default=5, help="timed all-reduces (their median counts), after one warm-up")
    parser.add_argument("--run-dir", default=None,
                        help="where rank 0 writes check.json (default: the launcher's run directory)")
    return parser.parse_args(argv)


def resolve_options(args: argparse.Namespace) -> Options:
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    size_mib = args.size_mib if args.size_mib is not None else float(
        os.environ.get(SIZE_ENV) or DEFAULT_SIZE_MIB[backend])
    elements = max(1, int(size_mib * 2**20) // 4)  # float32
    return Options(backend, elements * 4, max(1, args.iters))


def run_dir(given: str | None) -> Path:
    """The launcher exports each rank's log directory, RUN_DIR/logs: the run directory is its parent."""
    if given is not None:
        return Path(given)
    log_dir = os.environ.get(LOG_DIR_ENV)
    return Path(log_dir).parent if log_dir else Path.cwd()


def own_slurm_task() -> bool:
    """A Slurm task that is its rank has its own view of the devices (the trainer's rule)."""
    return (("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ)
            and os.environ.get("SLURM_PROCID") == os.environ.get("RANK")
            and os.environ.get("SLURM_NTASKS") == os.environ.get("WORLD_SIZE"))


def select_device(backend: str) -> torch.device:
    """NCCL needs this rank's own GPU, chosen by the launcher's rule (``launcher.devices``)."""
    if backend != "nccl":
        return torch.device("cpu")
    sharing = 1 if own_slurm_task() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    index = cuda_device_index(torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                              sharing, int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work, so a timer measures the collective, not its launch."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def check_sum(device: torch.device) -> tuple[bool, int]:
    """A small all-reduce whose answer is known: the sum of the ranks (and the world size)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    tensor = torch.tensor([rank, 1], dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    got, count = tensor.tolist()
    return got == world * (world - 1) // 2 and count == world, int(got)


def median_seconds(operation: Callable[[], object], sync: Callable[[], None], repeats: int) -> float:
    """The median of ``repeats`` timings of ``operation``, each to its completion on the device:
    a rank descheduled once by its machine does not pass for a slow node."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        operation()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_all_reduce(options: Options, device: torch.device) -> float:
    """Seconds per all-reduce of ``options.size_bytes``, after a warm-up (which sets up the
    backend's connections), the ranks started together by a barrier."""
    tensor = torch.zeros(options.size_bytes // 4, dtype=torch.float32, device=device)
    sync = synchronizer(device)
    dist.all_reduce(tensor)
    sync()
    barrier(device)
    return median_seconds(lambda: dist.all_reduce(tensor), sync, options.iters)


def time_barrier(device: torch.device) -> float:
    """Milliseconds per barrier: the round trip through every rank."""
    barrier(device)
    return median_seconds(lambda: barrier(device), synchronizer(device), BARRIERS) * 1000


def bandwidths(size_bytes: int, seconds: float, world: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s as nccl-tests report an all-reduce: busbw = algbw * 2(n-1)/n."""
    algbw = size_bytes / seconds / 1e9
    return algbw, algbw * 2 * (world - 1) / world


def network_place(backend: str) -> tuple[str, str | None]:
    """The address this rank sends from towards the master, and the interface the backend was
    told to use (GLOO/NCCL_SOCKET_IFNAME), else the one that holds that address."""
    address = route_source_address(os.environ.get("MASTER_ADDR", "127.0.0.1"))
    named = os.environ.get("NCCL_SOCKET_IFNAME" if backend == "nccl" else "GLOO_SOCKET_IFNAME")
    return address, named or interface_of(address)


def versions(device: torch.device) -> tuple[str | None, str | None]:
    """CUDA and NCCL versions of a rank that uses them; None on CPU."""
    if device.type != "cuda":
        return None, None
    return torch.version.cuda, ".".join(map(str, torch.cuda.nccl.version()))


def measure(options: Options, device: torch.device) -> RankReport:
    sum_ok, sum_got = check_sum(device)
    seconds = time_all_reduce(options, device)
    algbw, busbw = bandwidths(options.size_bytes, seconds, dist.get_world_size())
    address, interface = network_place(options.backend)
    cuda, nccl = versions(device)
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return RankReport(
        rank=dist.get_rank(),
        node_rank=node_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        host=socket.gethostname(), address=address, interface=interface, device=name,
        torch=torch.__version__, cuda=cuda, nccl=nccl, sum_ok=sum_ok, sum_got=sum_got,
        busbw_gbs=busbw, algbw_gbs=algbw, allreduce_ms=seconds * 1000,
        barrier_ms=time_barrier(device),
    )


def gather_reports(report: RankReport, device: torch.device) -> list[RankReport]:
    """Every rank's report on every rank: JSON bytes in uint8 tensors, padded to the longest."""
    data = torch.tensor(list(json.dumps(asdict(report)).encode()), dtype=torch.uint8, device=device)
    length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, length)
    longest = max(int(item.item()) for item in lengths)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    gathered = [torch.zeros_like(padded) for _ in lengths]
    dist.all_gather(gathered, padded)
    return [RankReport(**json.loads(bytes(item[: int(size.item())].tolist())))
            for item, size in zip(gathered, lengths, strict=True)]


# --- the verdict and the table (pure: also used by launcher.check on check.json) -------------------

def _nodes(reports: Sequence[RankReport]) -> dict[int, list[RankReport]]:
    by_node: dict[int, list[RankReport]] = {}
    for report in reports:
        by_node.setdefault(report.node_rank, []).append(report)
    return dict(sorted(by_node.items()))


def _node_name(node: int, reports: Sequence[RankReport]) -> str:
    hosts = sorted({report.host for report in reports})
    return f"node {node} ({', '.join(hosts)})"


def verdict(reports: Sequence[RankReport]) -> str:
    """``OK``, or what is wrong and on which node: a wrong sum first, then a node whose bus
    bandwidth or barrier time is far worse than the other nodes' (a single node has no others)."""
    by_node = _nodes(reports)
    wrong = [report for report in reports if not report.sum_ok]
    if wrong:
        nodes = ", ".join(_node_name(node, by_node[node]) for node in sorted({r.node_rank for r in wrong}))
        ranks = ", ".join(str(report.rank) for report in wrong)
        return f"FAIL: all-reduce gave a wrong sum on {nodes} (rank(s) {ranks})"
    slow = [problem for node in by_node if (problem := _slowness(node, by_node))]
    return "SLOW: " + "; ".join(slow) if slow else "OK"


def _slowness(node: int, by_node: dict[int, list[RankReport]]) -> str | None:
    others = [report for other, reports in by_node.items() if other != node for report in reports]
    if not others:
        return None
    own = by_node[node]
    bandwidth = min(report.busbw_gbs for report in own)
    others_bandwidth = statistics.median(report.busbw_gbs for report in others)
    if bandwidth * SLOW_FACTOR < others_bandwidth:
        return (f"{_node_name(node, own)} bus bandwidth {bandwidth:.2f} GB/s, the other nodes "
                f"{others_bandwidth:.2f} GB/s")
    latency = max(report.barrier_ms for report in own)
    others_latency = statistics.median(report.barrier_ms for report in others)
    if latency > others_latency * SLOW_FACTOR + BARRIER_SLACK_MS:
        return f"{_node_name(node, own)} barrier {latency:.2f} ms, the other nodes {others_latency:.2f} ms"
    return None


COLUMNS = (("rank", "rank"), ("node", "node_rank"), ("local", "local_rank"), ("host", "host"),
           ("address", "address"), ("interface", "interface"), ("device", "device"),
           ("torch", "torch"), ("cuda", "cuda"), ("nccl", "nccl"), ("sum", "sum_ok"),
           ("busbw GB/s", "busbw_gbs"), ("all-reduce ms", "allreduce_ms"), ("barrier ms", "barrier_ms"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "ok" if value else "WRONG"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def render(summary: dict[str, Any]) -> str:
    """The table (one row per rank) and the verdict line, from check.json's content."""
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_cell(report[key]) for _, key in COLUMNS] for report in summary["ranks"]]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    head = (f"check: {summary['world_size']} rank(s) on {summary['nodes']} node(s), backend "
            f"{summary['backend']}, all-reduce of {summary['size_bytes'] / 2**20:g} MiB x {summary['iters']}")
    return "\n".join([head, *lines, f"verdict: {summary['verdict']}"])


def summarize(reports: Sequence[RankReport], options: Options) -> dict[str, Any]:
    return {
        "verdict": verdict(reports),
        "world_size": len(reports),
        "nodes": len(_nodes(reports)),
        "backend": options.backend,
        "size_bytes": options.size_bytes,
        "iters": options.iters,
        "busbw_gbs": min(report.busbw_gbs for report in reports),
        "ranks": [asdict(report) for report in reports],
    }


def write_summary(summary: dict[str, Any], directory: Path) -> Path:
    """check.json, replaced atomically: a reader never sees half of it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / REPORT_FILE
    partial = target.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, target)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_options(sys.argv[1:] if argv is None else argv)
    options = resolve_options(args)
    device = select_device(options.backend)
    dist.init_process_group(backend=options.backend, init_method="env://",
                            device_id=device if device.type == "cuda" else None)
    rank = dist.get_rank()
    try:
        reports = gather_reports(measure(options, device), device)
        barrier(device)  # every rank holds every report before any rank tears its connections down
    finally:
        dist.destroy_process_group()
    summary = summarize(reports, options)
    if rank == 0:
        print(render(summary), flush=True)
        print(f"written: {write_summary(summary, run_dir(args.run_dir))}", flush=True)
    if summary["verdict"] != "OK":
        raise SystemExit(f"check: {summary['verdict']}")


if __name__ == "__main__":
    main()
