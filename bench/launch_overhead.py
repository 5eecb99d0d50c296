"""What ``python -m launcher`` costs over a hand-written DDP script, in startup and in throughput.

Runs the same job (same MLP, cached data, steps and seed) under three variants, alternating them
round by round, in a rotating order, so that drift in machine load hits every variant alike:

- ``launcher torchrun``: ``python -m launcher launcher=torchrun`` (elastic agent in-process),
- ``launcher mp_spawn``: ``python -m launcher launcher=mp_spawn``,
- ``handwritten``: ``torchrun --standalone --nproc-per-node=2 bench/handwritten_ddp.py`` (baseline).

Per run it takes from the job's summary.json the time to first step (``first_step_unix_s``, when
every rank had finished one optimizer step, minus the unix time just before ``Popen``) and the
training throughput (``train_samples_per_s``, eval excluded), and reports their medians and
ratios against the baseline. Everything runs in a temporary directory, which is removed; the JSON
and Markdown results go to ``bench/results/``.

    python bench/launch_overhead.py [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from launcher.supervise import descendants

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
HANDWRITTEN = BENCH_DIR / "handwritten_ddp.py"
BASELINE = "handwritten"
PROCS = 2
BATCH_SIZE = 64
SEED = 0
THROUGHPUT_GOAL = 1.05  # launcher / baseline, at least (issue 16: faster than the hand-written loop)
FIRST_STEP_GOAL = 0.8  # launcher / baseline, at most (issue 16: warm rank starts)
BUSY_LOAD_PER_CPU = 0.25  # above this 1-minute load average per CPU at start, warn: noisy timings
KILL_GRACE_S = 15.0  # SIGTERM -> SIGKILL, so the launchers get to stop their own ranks first


class BenchError(RuntimeError):
    """A run failed or hung: the bench stops, since its medians would be meaningless."""


@dataclass(frozen=True)
class Settings:
    num_samples: int
    epochs: int
    reps: int
    startup_reps: int  # repetitions of each startup-component measurement
    timeout_s: float  # per subprocess


FULL = Settings(num_samples=65536, epochs=5, reps=5, startup_reps=3, timeout_s=300)
QUICK = Settings(num_samples=8192, epochs=1, reps=2, startup_reps=1, timeout_s=120)


@dataclass(frozen=True)
class Job:
    """Where a variant's runs read data and write their output."""

    workdir: Path  # cwd of every subprocess
    data_root: Path
    npz: Path | None  # the launcher's cached data set, once the warm-up run has created it


@dataclass(frozen=True)
class Variant:
    name: str
    # (job, run_dir, epochs) -> argv of a command that writes run_dir/summary.json
    command: Callable[[Job, Path, int], list[str]]


@dataclass(frozen=True)
class Run:
    variant: str
    rep: int
    first_step_s: float
    samples_per_s: float
    wall_s: float
    val_acc: float
    weights_sha256: str


def launcher_command(mode: str, settings: Settings) -> Callable[[Job, Path, int], list[str]]:
    def command(job: Job, run_dir: Path, epochs: int) -> list[str]:
        return [
            sys.executable, "-m", "launcher", f"launcher={mode}", f"gpus={PROCS}",
            f"trainer.epochs={epochs}", f"data.dataset.num_samples={settings.num_samples}",
            f"data.batch_size={BATCH_SIZE}", f"data.root={job.data_root}",
            "save.every_epochs=0", f"seed={SEED}", f"hydra.run.dir={run_dir}",
        ]

    return command


def handwritten_command(job: Job, run_dir: Path, epochs: int) -> list[str]:
    if job.npz is None:
        raise BenchError("the hand-written baseline needs the data set the launcher caches")
    torchrun = Path(sys.executable).with_name("torchrun")
    return [
        str(torchrun), "--standalone", f"--nproc-per-node={PROCS}", str(HANDWRITTEN),
        f"--data={job.npz}", f"--epochs={epochs}", f"--summary={run_dir / 'summary.json'}",
        f"--batch-size={BATCH_SIZE}", f"--seed={SEED}",
    ]


def variants(settings: Settings) -> list[Variant]:
    """Launcher variants first: the first warm-up run also generates the cached data set."""
    return [
        Variant("launcher torchrun", launcher_command("torchrun", settings)),
        Variant("launcher mp_spawn", launcher_command("mp_spawn", settings)),
        Variant(BASELINE, handwritten_command),
    ]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command (launchers then stop their ranks), then SIGKILL whatever is left."""
    tree = [process.pid, *descendants(process.pid)]
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_S)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_command(argv: list[str], cwd: Path, log_path: Path, timeout_s: float) -> tuple[float, float]:
    """Run to completion with a timeout; returns (unix time just before Popen, wall seconds)."""
    with log_path.open("wb") as log:
        started_unix = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise BenchError(f"hung: no exit within {timeout_s:.0f} s, stopped it: "
                             f"{' '.join(argv)}\n--- last output ---\n{_tail(log_path)}") from None
        wall = time.perf_counter() - started
    if code != 0:
        raise BenchError(f"exit code {code}: {' '.join(argv)}\n--- last output ---\n{_tail(log_path)}")
    return started_unix, wall


def run_variant(variant: Variant, job: Job, run_dir: Path, epochs: int, rep: int,
                timeout_s: float) -> Run:
    run_dir.mkdir(parents=True)
    argv = variant.command(job, run_dir, epochs)
    started_unix, wall = run_command(argv, job.workdir, run_dir / "output.log", timeout_s)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise BenchError(f"{variant.name}: exited 0 but wrote no {summary_path}")
    summary = json.loads(summary_path.read_text())
    return Run(
        variant=variant.name,
        rep=rep,
        first_step_s=summary["first_step_unix_s"] - started_unix,
        samples_per_s=summary["train_samples_per_s"],
        wall_s=wall,
        val_acc=summary["val_acc"],
        weights_sha256=summary["weights_sha256"],
    )


def cached_npz(data_root: Path) -> Path:
    found = sorted(data_root.glob("synthetic-*.npz"))
    if len(found) != 1:
        raise BenchError(f"expected one synthetic-*.npz in {data_root} after the warm-up, found {found}")
    return found[0]


def startup_components(workdir: Path, reps: int, timeout_s: float) -> dict[str, float]:
    """Median wall time of the pieces a launch pays before any rank starts (for the report)."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import hydra'": [sys.executable, "-c", "import hydra"],
        "python -m launcher dry_run=true": [
            sys.executable, "-m", "launcher", "dry_run=true", f"gpus={PROCS}",
            f"hydra.run.dir={workdir / 'dry-run'}",
        ],
    }
    medians = {}
    for label, argv in commands.items():
        times = [run_command(argv, workdir, workdir / "startup.log", timeout_s)[1] for _ in range(reps)]
        medians[label] = statistics.median(times)
    return medians


def summarize(runs: list[Run], names: list[str]) -> dict[str, dict[str, float]]:
    """Per variant: medians, min/max, and ratios of the medians against the baseline."""
    stats: dict[str, dict[str, float]] = {}
    for name in names:
        mine = [run for run in runs if run.variant == name]
        first = [run.first_step_s for run in mine]
        rate = [run.samples_per_s for run in mine]
        stats[name] = {
            "first_step_s": statistics.median(first),
            "first_step_s_min": min(first),
            "first_step_s_max": max(first),
            "samples_per_s": statistics.median(rate),
            "samples_per_s_min": min(rate),
            "samples_per_s_max": max(rate),
            "wall_s": statistics.median(run.wall_s for run in mine),
        }
    base = stats[BASELINE]
    for row in stats.values():
        row["first_step_ratio"] = row["first_step_s"] / base["first_step_s"]
        row["throughput_ratio"] = row["samples_per_s"] / base["samples_per_s"]
    return stats


def spread(row: dict[str, float], key: str, digits: int) -> str:
    """A table cell: ``key``'s median with its range, ``M [MIN-MAX]``."""
    return f"{row[key]:.{digits}f} [{row[key + '_min']:.{digits}f}-{row[key + '_max']:.{digits}f}]"


def _goal(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def markdown(meta: dict[str, object], stats: dict[str, dict[str, float]],
             startup: dict[str, float]) -> str:
    lines = [
        f"## Launch overhead vs hand-written DDP ({meta['date']})",
        "",
        f"torch {meta['torch']}, Python {meta['python']}, {meta['cpus']} CPUs, {PROCS} ranks (gloo, CPU); "
        f"{meta['num_samples']} samples, {meta['epochs']} epochs, batch {BATCH_SIZE}/rank; "
        f"medians of {meta['reps']} alternating runs [min-max]; load average at start/end "
        f"{meta['loadavg_start']:.2f}/{meta['loadavg_end']:.2f}; identical weights in every run: "
        f"{meta['identical_weights']}.",
        "",
        f"| variant | time to first step (s) | ratio (goal <= {FIRST_STEP_GOAL}) | train samples/s | "
        f"ratio (goal >= {THROUGHPUT_GOAL}) | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in stats.items():
        base = name == BASELINE
        lines.append(
            f"| {name} "
            f"| {spread(row, 'first_step_s', 2)} "
            f"| {row['first_step_ratio']:.2f}"
            f"{'' if base else ' ' + _goal(row['first_step_ratio'] <= FIRST_STEP_GOAL)} "
            f"| {spread(row, 'samples_per_s', 0)} "
            f"| {row['throughput_ratio']:.3f}"
            f"{'' if base else ' ' + _goal(row['throughput_ratio'] >= THROUGHPUT_GOAL)} "
            f"| {row['wall_s']:.2f} |"
        )
    lines += ["", "| startup component (median wall) | s |", "|---|---|"]
    lines += [f"| `{label}` | {seconds:.2f} |" for label, seconds in startup.items()]
    return "\n".join(lines) + "\n"


def bench(settings: Settings) -> tuple[dict[str, object], str]:
    """Warm up every variant once (untimed; also creates the data set), then alternate R rounds."""
    loadavg_start = os.getloadavg()[0]
    if loadavg_start > BUSY_LOAD_PER_CPU * len(os.sched_getaffinity(0)):
        print(f"warning: load average {loadavg_start:.2f} at start: something else is running, "
              "timings will be noisy", file=sys.stderr)
    runs: list[Run] = []
    all_variants = variants(settings)
    with tempfile.TemporaryDirectory(prefix="launch-overhead-") as tmp:
        workdir = Path(tmp)
        job = Job(workdir=workdir, data_root=workdir / "data", npz=None)
        for variant in all_variants:
            print(f"warm-up: {variant.name}", flush=True)
            run_dir = workdir / "warmup" / variant.name.replace(" ", "-")
            run_variant(variant, job, run_dir, 1, -1, settings.timeout_s)
            if job.npz is None:
                job = Job(workdir=workdir, data_root=job.data_root, npz=cached_npz(job.data_root))
        for rep in range(settings.reps):
            # Rotate the order each round, so no variant always runs right after another.
            shift = rep % len(all_variants)
            for variant in all_variants[shift:] + all_variants[:shift]:
                run_dir = workdir / f"rep{rep}" / variant.name.replace(" ", "-")
                run = run_variant(variant, job, run_dir, settings.epochs, rep, settings.timeout_s)
                runs.append(run)
                print(f"rep {rep + 1}/{settings.reps} {variant.name:<18} first step "
                      f"{run.first_step_s:5.2f} s  {run.samples_per_s:7.0f} samples/s  "
                      f"wall {run.wall_s:5.2f} s", flush=True)
        print("startup components ...", flush=True)
        startup = startup_components(workdir, settings.startup_reps, settings.timeout_s)
    stats = summarize(runs, [variant.name for variant in all_variants])
    meta: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": importlib.metadata.version("torch"),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **asdict(settings),
        "identical_weights": len({run.weights_sha256 for run in runs}) == 1,
    }
    results = {
        "meta": meta,
        "goals": {"throughput_ratio_min": THROUGHPUT_GOAL, "first_step_ratio_max": FIRST_STEP_GOAL},
        "stats": stats,
        "startup_components_s": startup,
        "runs": [asdict(run) for run in runs],
    }
    return results, markdown(meta, stats, startup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="alternating rounds (default: 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny job: a ~1 minute smoke check")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be >= 1")
        settings = Settings(**{**asdict(settings), "reps": args.reps})
    try:
        results, table = bench(settings)
    except BenchError as error:
        sys.exit(f"launch_overhead: {error}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = RESULTS_DIR / f"launch_overhead-{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(table)
    if not results["meta"]["identical_weights"]:
        print("warning: final weights differ between runs: the variants did not do the same work")
    print()
    print(table)
    print(f"results: {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
