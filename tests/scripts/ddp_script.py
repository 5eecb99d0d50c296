"""A plain torchrun-compatible DDP script (no launcher imports), used by the tests.

Arguments: OUT_DIR [--fail-rank R] [--die-rank R] [--hang] [--workers N]
Every rank writes OUT_DIR/rank_<RANK>.json with the environment it saw and a reduced value.
"""

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--fail-rank", type=int, default=-1, help="this rank raises")
    parser.add_argument("--die-rank", type=int, default=-1, help="this rank SIGKILLs itself")
    parser.add_argument("--hang", action="store_true", help="block until killed, with DataLoader workers")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    record = {key: os.environ.get(key) for key in keys}
    record.update(sum=value.item(), pid=os.getpid())
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank_{rank}.json").write_text(json.dumps(record))
    if rank == args.fail_rank:
        raise RuntimeError(f"deliberate failure on rank {rank}")
    if rank == args.die_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    if args.hang:
        loader = torch.utils.data.DataLoader(range(10**6), num_workers=args.workers, persistent_workers=args.workers > 0)
        iterator = iter(loader)
        next(iterator)
        (out / f"hanging_{rank}").write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
