"""How long multi-node failures take to end a job, across network namespaces (needs root).

Each case runs two launcher processes as two hosts (10.231.0.1 and .2, see tests/netns.py) with
short timeouts and measures, per node, the seconds from the fault to the launcher's exit:

- missing node: node 0 alone, from its start (bound: init_timeout);
- wrong master_addr: node 1 pointed at an address where nothing answers, from its start
  (bound: init_timeout);
- cut link: node 1's cable pulled once the first epoch is done, from the cut (bound:
  collective_timeout).

Usage: python bench/failure_detection.py [--rounds 3] [--timeout 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import VirtualCluster  # noqa: E402

PORT = 29500


def launcher_command(cluster: VirtualCluster, node: int, run_dir: Path, *overrides: str) -> list[str]:
    return cluster.command(node, [sys.executable, "-m", "launcher", f"hydra.run.dir={run_dir}",
                                  "nodes=2", "gpus=1", f"master_port={PORT}", f"node_rank={node}",
                                  *overrides])


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def finish(proc: subprocess.Popen, since: float) -> tuple[int, float]:
    proc.communicate(timeout=300)
    return proc.returncode, time.monotonic() - since


def missing_node(cluster: VirtualCluster, work: Path, timeout: float) -> list[tuple[int, float]]:
    begin = time.monotonic()
    proc = start(launcher_command(cluster, 0, work / "n0", f"master_addr={cluster.address(0)}",
                                  f"init_timeout={timeout:g}"))
    return [finish(proc, begin)]


def wrong_master(cluster: VirtualCluster, work: Path, timeout: float) -> list[tuple[int, float]]:
    begin = time.monotonic()
    proc = start(launcher_command(cluster, 1, work / "n1", "master_addr=10.231.0.9",
                                  f"init_timeout={timeout:g}"))
    return [finish(proc, begin)]


def cut_link(cluster: VirtualCluster, work: Path, timeout: float, mode: str) -> list[tuple[int, float]]:
    common = [f"master_addr={cluster.address(0)}", f"launcher={mode}", "trainer.epochs=1000",
              "data.dataset.num_samples=1024", "save.every_epochs=0", "init_timeout=60",
              f"collective_timeout={timeout:g}"]
    procs = [start(launcher_command(cluster, node, work / f"n{node}", *common)) for node in (1, 0)]
    metrics = work / "n0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        if time.monotonic() > deadline:
            raise RuntimeError("training did not start within 120 s")
        time.sleep(0.05)
    cluster.set_link(1, up=False)
    cut = time.monotonic()
    return [finish(proc, cut) for proc in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0, help="init_timeout and collective_timeout")
    args = parser.parse_args()
    cases = {
        "missing node (torchrun)": missing_node,
        "wrong master_addr (torchrun)": wrong_master,
        "cut link (torchrun)": lambda c, w, t: cut_link(c, w, t, "torchrun"),
        "cut link (mp_spawn)": lambda c, w, t: cut_link(c, w, t, "mp_spawn"),
    }
    print(f"timeouts {args.timeout:g}s, {args.rounds} rounds; seconds from the fault to each node's exit")
    print("| case | exit codes | median s | max s |")
    print("|---|---|---|---|")
    for name, case in cases.items():
        seconds, codes = [], set()
        for _ in range(args.rounds):
            cluster = VirtualCluster(nodes=2)
            try:
                cluster.create()
                with tempfile.TemporaryDirectory() as work:
                    for code, elapsed in case(cluster, Path(work), args.timeout):
                        codes.add(code)
                        seconds.append(elapsed)
            finally:
                cluster.destroy()
        print(f"| {name} | {sorted(codes)} | {statistics.median(seconds):.1f} | {max(seconds):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
