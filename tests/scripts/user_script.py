"""A torchrun-compatible script with no launcher imports, driven by USER_SCRIPT_* variables so its
own arguments can be checked byte for byte.

USER_SCRIPT_OUT: where every rank writes rank_<RANK>.json (argv, environment, group timeout).
USER_SCRIPT_MODE: ok | fail (rank 1 raises) | fail_first_attempt (rank 1 raises on attempt 0) |
  stall (rank 1 sleeps 40 s before the all-reduce) | never_join (rank 1 sleeps 60 s before
  init_process_group) | own_timeout (as stall, 8 s, with init_process_group(timeout=60 s)).
"""

import json
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def main() -> None:
    mode = os.environ.get("USER_SCRIPT_MODE", "ok")
    rank = int(os.environ["RANK"])
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    print(f"hello from rank {rank} on stdout", flush=True)
    print(f"warning from rank {rank} on stderr", file=sys.stderr, flush=True)
    if mode == "never_join" and rank == 1:
        time.sleep(60)
    if mode == "own_timeout":
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    else:
        dist.init_process_group("gloo")
    out = os.environ.get("USER_SCRIPT_OUT")
    if out:
        record = {"argv": sys.argv[1:], "RANK": os.environ["RANK"], "LOCAL_RANK": os.environ["LOCAL_RANK"],
                  "WORLD_SIZE": os.environ["WORLD_SIZE"], "cwd": os.getcwd(), "sys_path0": sys.path[0]}
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"rank_{rank}.json"), "w") as file:
            json.dump(record, file)
    if rank == 1 and (mode == "fail" or (mode == "fail_first_attempt" and attempt == 0)):
        raise RuntimeError(f"deliberate failure on rank {rank}, attempt {attempt}")
    if rank == 1 and mode == "stall":
        time.sleep(40)
    if rank == 1 and mode == "own_timeout":
        time.sleep(8)
    value = torch.tensor([1.0])
    dist.all_reduce(value)
    print(f"rank {rank} done: sum {value.item():g}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
