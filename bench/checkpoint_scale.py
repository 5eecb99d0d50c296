"""Checkpoints at scale: save and resume of a ~1 GB state on 2 CPU ranks, time and peak RSS per rank.

Each case runs in fresh processes (peak RSS is a process's lifetime maximum), alternating over
rounds; a rank reports the seconds of the operation, its RSS just before it and its peak RSS (the
process's imports alone hold about 0.5 GB: the table's last column is what the operation added,
as a multiple of the checkpoint file's size):

- ``save``: 2 ranks (torchrun), the trainer's ``TrainingState.save`` path for a state of
  ``--gb`` GB of float32 weights (plus as much SGD momentum: the state is model + optimizer):
  gather of the RNG states, snapshot to CPU memory, background atomic write, ``wait``;
- ``resume shared``: 2 ranks, ``checkpoint.load_everywhere`` of that file where every rank sees it
  (each reads the file itself, checked by size and a fingerprint of its zip directory);
- ``resume sent``: 2 ranks, the same where rank 1 does not see the file: rank 0 maps the file and sends
  the state as tensors (``broadcast_state``);
- ``torch.load``: one process, a plain ``torch.load(weights_only=True)`` of the file (baseline).

    python bench/checkpoint_scale.py [--gb 0.5] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROCS = 2
TIMEOUT_S = 600.0
CASES = ("save", "resume shared", "resume sent", "torch.load")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def state_of(gb: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model of ``gb`` / 2 GB of weights in 64 MB layers, with one SGD step's momentum (as much
    again): model + optimizer state make ``gb`` GB."""
    layers = max(1, round(gb / 2 * 1024 / 64))
    model = torch.nn.Sequential(*(torch.nn.Linear(4096, 4096, bias=False) for _ in range(layers)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    return model, optimizer


def worker(case: str, folder: Path, gb: float, out: Path) -> None:
    """One rank of one case (under torchrun), or the single ``torch.load`` process."""
    from trainer import checkpoint

    path = folder / "checkpoints" / "last.pt"
    rank = int(os.environ.get("RANK", "0"))
    if case == "torch.load":
        before, start = rss_mb(), time.perf_counter()
        state = torch.load(path, map_location="cpu", weights_only=True)
        seconds = time.perf_counter() - start
        del state
    else:
        import torch.distributed as dist

        from trainer.checkpoint import Checkpoints, TrainingState
        from trainer.env import DistEnv
        from trainer.progress import Progress

        dist.init_process_group("gloo")
        device = torch.device("cpu")
        if case == "save":
            model, optimizer = state_of(gb)
            training = TrainingState(model, optimizer, None, torch.amp.GradScaler("cpu", enabled=False), {}, 0)
            checkpoints = Checkpoints(folder)
            dist.barrier()
            before, start = rss_mb(), time.perf_counter()
            training.save(checkpoints, DistEnv.from_environ(), Progress(), device)
            checkpoints.wait()
            seconds = time.perf_counter() - start
        else:
            if case == "resume sent" and rank != 0:
                checkpoint._sees = lambda *args: None  # type: ignore[assignment]  # rank 1 does not see the file
            dist.barrier()
            before, start = rss_mb(), time.perf_counter()
            state = checkpoint.load_everywhere(path if rank == 0 else None, device)
            seconds = time.perf_counter() - start
            assert state is not None
            del state
        dist.barrier()
        dist.destroy_process_group()
    record = {"case": case, "rank": rank, "seconds": seconds, "rss_before_mb": before, "peak_mb": peak_mb()}
    with open(out, "a") as file:
        file.write(json.dumps(record) + "\n")


def run_case(case: str, folder: Path, gb: float, out: Path) -> None:
    me = [str(Path(__file__).resolve()), "--worker", case, "--folder", str(folder), "--gb", str(gb),
          "--out", str(out)]
    if case == "torch.load":
        argv = [sys.executable, *me]
    else:
        argv = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc-per-node={PROCS}", *me]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode:
        sys.exit(f"{case}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="state size (model + optimizer), GB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.gb, args.out)
        return
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="checkpoint-scale-") as tmp:
        folder, out = Path(tmp), Path(tmp) / "records.jsonl"
        for rep in range(args.reps):
            for case in CASES:  # save first: the resume cases read what it wrote
                run_case(case, folder, args.gb, out)
            print(f"round {rep + 1}/{args.reps} done", flush=True)
        size_mb = (folder / "checkpoints" / "last.pt").stat().st_size / 2**20
        records = [json.loads(line) for line in out.read_text().splitlines()]
    print(f"checkpoint file {size_mb:.0f} MB; load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print("| case | rank | seconds (median) | RSS before (MB) | peak RSS (MB) | (peak - before) / file size |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["seconds"] for r in records if r["case"] == "torch.load")
    for case in CASES:
        for rank in sorted({r["rank"] for r in records if r["case"] == case}):
            mine = [r for r in records if r["case"] == case and r["rank"] == rank]
            seconds = statistics.median(r["seconds"] for r in mine)
            peak = statistics.median(r["peak_mb"] for r in mine)
            before = statistics.median(r["rss_before_mb"] for r in mine)
            print(f"| {case} | {rank} | {seconds:.2f} ({seconds / base:.2f}x torch.load) "
                  f"| {before:.0f} | {peak:.0f} | {(peak - before) / size_mb:.2f} |")


if __name__ == "__main__":
    main()
