"""What the trainer's options cost or gain in training throughput: fp32 vs bf16, gradient
accumulation, DataLoader workers 0 vs 2.

Each case is a real ``python -m launcher`` job (2 CPU ranks, gloo); its throughput is the job's own
``train_samples_per_s`` (all ranks' samples / mean training-loop time, evaluation excluded). The
cases run round by round in a rotating order, so drift in machine load hits all of them alike, and
each group is compared against its first case. Results go to ``bench/results/``.

    python bench/training_features.py [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from launch_overhead import RESULTS_DIR, BenchError, run_command

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.images import make_image_folder  # noqa: E402  (the generated-PNG helper of the tests)

COMMON = ["launcher=mp_spawn", "gpus=2", "save.every_epochs=0", "trainer.progress_bar=false"]
# A wider MLP than the default, so the matrix multiplies (where bf16 acts) dominate a step.
WIDE_MLP = ["data.dataset.num_features=256", "model.hidden=1024", "model.depth=3", "data.batch_size=256"]


@dataclass(frozen=True)
class Case:
    group: str  # cases of one group are compared with the group's first case
    name: str
    overrides: tuple[str, ...]


def cases(workdir: Path, images: Path, quick: bool) -> list[Case]:
    samples = 4096 if quick else 16384
    synthetic = (f"data.dataset.num_samples={samples}", f"data.root={workdir / 'data'}", "trainer.epochs=2")
    image_run = ("model=resnet18", "data=image_folder", f"data.root={images}", "data.num_classes=4",
                 "data.image_size=64", "data.resize_size=64", "data.batch_size=32", "trainer.epochs=2")
    return [
        Case("precision (wide MLP)", "fp32", (*synthetic, *WIDE_MLP, "trainer.precision=32")),
        Case("precision (wide MLP)", "bf16", (*synthetic, *WIDE_MLP, "trainer.precision=bf16")),
        Case("accumulation (default MLP, micro-batch 64)", "accumulate=1", (*synthetic, "trainer.accumulate=1")),
        Case("accumulation (default MLP, micro-batch 64)", "accumulate=4", (*synthetic, "trainer.accumulate=4")),
        Case("workers (synthetic, in memory)", "num_workers=0", (*synthetic, "data.num_workers=0")),
        Case("workers (synthetic, in memory)", "num_workers=2", (*synthetic, "data.num_workers=2")),
        Case("workers (resnet18, 96px PNG folder)", "num_workers=0", (*image_run, "data.num_workers=0")),
        Case("workers (resnet18, 96px PNG folder)", "num_workers=2", (*image_run, "data.num_workers=2")),
    ]


def run_case(case: Case, workdir: Path, run_dir: Path, timeout_s: float) -> float:
    run_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "launcher", *COMMON, *case.overrides, f"hydra.run.dir={run_dir}"]
    run_command(argv, workdir, run_dir / "output.log", timeout_s)
    return float(json.loads((run_dir / "summary.json").read_text())["train_samples_per_s"])


def markdown(meta: dict[str, object], table: list[dict[str, object]]) -> str:
    lines = [f"training throughput, {meta['reps']} rounds, median [min-max] samples/s over 2 CPU "
             f"ranks ({meta['date']}, torch {meta['torch']}, {meta['cpus']} CPUs, load "
             f"{meta['load_at_start']})", "",
             "| group | case | samples/s | vs first case |", "|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['group']} | {row['case']} | {row['median']:.0f} [{row['min']:.0f}-"
                     f"{row['max']:.0f}] | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def bench(reps: int, quick: bool, timeout_s: float) -> tuple[dict[str, object], str]:
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        workdir = Path(tmp)
        images = make_image_folder(workdir / "images", classes=4, per_class=128 if quick else 256, size=96)
        all_cases = cases(workdir, images, quick)
        results: dict[Case, list[float]] = {case: [] for case in all_cases}
        for case in all_cases:  # untimed warm-up: data caches, page cache, first imports
            run_case(case, workdir, workdir / "warmup" / f"{all_cases.index(case)}", timeout_s)
        for rep in range(reps):
            order = all_cases[rep % len(all_cases):] + all_cases[:rep % len(all_cases)]
            for case in order:
                run_dir = workdir / f"rep{rep}" / f"{all_cases.index(case)}"
                results[case].append(run_case(case, workdir, run_dir, timeout_s))
                print(f"round {rep + 1}/{reps} {case.group}: {case.name} "
                      f"{results[case][-1]:.0f} samples/s", flush=True)
    table, first_of_group = [], {}
    for case in all_cases:
        median = statistics.median(results[case])
        first_of_group.setdefault(case.group, median)
        table.append({"group": case.group, "case": case.name, "median": median,
                      "min": min(results[case]), "max": max(results[case]),
                      "ratio": median / first_of_group[case.group], "runs": results[case]})
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reps": reps,
        "torch": importlib.metadata.version("torch"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_at_start": round(os.getloadavg()[0], 2),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"training_features-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "cases": table}, indent=2) + "\n")
    report = markdown(meta, table)
    stem.with_suffix(".md").write_text(report)
    return meta, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed rounds of every case")
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke check")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    args = parser.parse_args()
    try:
        _, report = bench(args.reps, args.quick, args.timeout)
    except BenchError as err:
        raise SystemExit(f"bench failed: {err}") from None
    print(report)


if __name__ == "__main__":
    main()
