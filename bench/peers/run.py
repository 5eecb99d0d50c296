"""Lightning, Fabric, accelerate, this launcher and this trainer against hand-written DDP.

One job for all (``bench/peers/workload.py``): the MLP 32-128-128-8 on the trainer's cached
synthetic data (20 000 training and 5 000 validation samples), 3 epochs, batch 64 per rank, SGD
with a per-step cosine, 2 CPU ranks on gloo, seed 0, an evaluation after every epoch. Seven
variants (six tools, this launcher in both modes), alternating round by round in one run:

- ``handwritten``: ``torchrun --standalone --nproc-per-node=2 bench/handwritten_ddp.py`` (baseline),
- ``script via launcher torchrun`` / ``... mp_spawn``: ``python -m launcher launcher=MODE gpus=2
  bench/handwritten_ddp.py ...`` (this launcher running the same script),
- ``trainer``: ``python -m launcher`` with the same model, data, optimizer and schedule (its
  defaults, with the data size, epochs and ``save.every_epochs=0`` set),
- ``lightning trainer``: ``python bench/peers/lightning_trainer.py`` (its own launcher),
- ``lightning fabric``: ``python bench/peers/fabric_ddp.py`` (``Fabric(...).launch()``),
- ``accelerate``: ``accelerate launch --multi_gpu --num_processes 2 bench/peers/accelerate_ddp.py``.

Each variant runs once untimed (the trainer's run also caches the data set), then every round
runs all of them in an order rotated by one each round, so load drift hits all alike. Per run:
the whole command's wall time, the time to first step (``first_step_unix_s`` of the summary, when
every rank had finished one optimizer step, minus the unix time just before the command started)
and the training throughput (``train_samples_per_s``: evaluation excluded). Reported: medians
[min-max], ratios of the medians to the baseline, and whose final weights equal the baseline's.
Results go to ``bench/results/peers-<time>.{json,md}``; runs happen in a temporary directory that
is removed. Lightning and accelerate come from the ``bench`` extra: ``pip install -e ".[bench]"``.

    python bench/peers/run.py [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from launcher.supervise import Interrupted, job_processes, kill_descendants, supervised

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: launch_overhead, the baseline
from launch_overhead import (
    BASELINE,
    BATCH_SIZE,
    BUSY_LOAD_PER_CPU,
    HANDWRITTEN,
    KILL_GRACE_S,
    PROCS,
    RESULTS_DIR,
    SEED,
    BenchError,
    Job,
    Run,
    Settings,
    Variant,
    cached_npz,
    handwritten_command,
    launcher_command,
    run_variant,
    spread,
    summarize,
)

PEERS_DIR = Path(__file__).resolve().parent
INSTALL = 'pip install -e ".[bench]"'
ORPHAN_WAIT_S = 10.0  # how long a run's processes may outlive its command before they are stopped
PEER_PACKAGES = ("lightning", "accelerate")
# 20 000 training samples: the synthetic set holds 20 % out for validation. ``startup_reps`` is
# launch_overhead's (its startup pieces, not measured here).
FULL = Settings(num_samples=25000, epochs=3, reps=5, startup_reps=0, timeout_s=300)
QUICK = Settings(num_samples=5000, epochs=1, reps=1, startup_reps=0, timeout_s=180)

Command = Callable[[Job, Path, int], list[str]]


def script_args(job: Job, run_dir: Path, epochs: int) -> list[str]:
    """The baseline's command line, which every peer script takes too."""
    if job.npz is None:
        raise BenchError("the scripts need the data set the trainer's warm-up caches")
    return [f"--data={job.npz}", f"--epochs={epochs}", f"--summary={run_dir / 'summary.json'}",
            f"--batch-size={BATCH_SIZE}", f"--seed={SEED}"]


def script_via_launcher(mode: str) -> Command:
    """This launcher running the baseline script, torchrun's way (everything after it is its own)."""
    def command(job: Job, run_dir: Path, epochs: int) -> list[str]:
        return [sys.executable, "-m", "launcher", f"launcher={mode}", f"gpus={PROCS}",
                f"hydra.run.dir={run_dir}", str(HANDWRITTEN), *script_args(job, run_dir, epochs)]

    return command


def self_launching(script: str) -> Command:
    """A Lightning script started with plain ``python``: it starts its other ranks itself."""
    def command(job: Job, run_dir: Path, epochs: int) -> list[str]:
        return [sys.executable, str(PEERS_DIR / script), f"--procs={PROCS}",
                *script_args(job, run_dir, epochs)]

    return command


def accelerate_command(job: Job, run_dir: Path, epochs: int) -> list[str]:
    """Every launch setting given, so no ``accelerate config`` file is read and nothing is guessed;
    port 0: a free one, as ``torchrun --standalone`` picks."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--multi_gpu", f"--num_processes={PROCS}", "--num_machines=1",
            "--mixed_precision=no", "--dynamo_backend=no", "--main_process_port=0",
            str(PEERS_DIR / "accelerate_ddp.py"), *script_args(job, run_dir, epochs)]


def variants(settings: Settings) -> list[Variant]:
    """The trainer first: its warm-up generates the cached data set that every variant reads."""
    return [
        Variant("trainer", launcher_command("torchrun", settings)),
        Variant(BASELINE, handwritten_command),
        Variant("script via launcher torchrun", script_via_launcher("torchrun")),
        Variant("script via launcher mp_spawn", script_via_launcher("mp_spawn")),
        Variant("lightning trainer", self_launching("lightning_trainer.py")),
        Variant("lightning fabric", self_launching("fabric_ddp.py")),
        Variant("accelerate", accelerate_command),
    ]


def timed(variant: Variant, job: Job, run_dir: Path, epochs: int, rep: int,
          settings: Settings, failures: Counter[str]) -> Run:
    """One run, tried again once if it fails (counted in ``failures`` and reported: a tool whose
    runs sometimes crash is a finding, not a reason to throw the other runs away); then wait for
    whatever of it outlived its command (a self-launching framework's first process may exit
    before its other ranks), stopping it after ``ORPHAN_WAIT_S``, so nothing of one run overlaps
    the next. The wall time stays the command's own."""
    try:
        run = run_variant(variant, job, run_dir, epochs, rep, settings.timeout_s)
    except BenchError as error:
        failures[variant.name] += 1
        print(f"note: a run of {variant.name} failed, trying it again: {str(error).splitlines()[0]}",
              flush=True)
        kill_descendants(KILL_GRACE_S)
        shutil.rmtree(run_dir)
        run = run_variant(variant, job, run_dir, epochs, rep, settings.timeout_s)
    ended = time.perf_counter()
    if not (outlived := job_processes()):
        return run
    while job_processes() and time.perf_counter() - ended < ORPHAN_WAIT_S:
        time.sleep(0.05)
    lag = time.perf_counter() - ended
    stopped = kill_descendants(KILL_GRACE_S)
    outcome = f"{len(stopped)} still running then, stopped" if stopped else "then all had ended"
    print(f"note: {len(outlived)} process(es) of {variant.name} outlived its command by "
          f"{lag:.2f} s; {outcome}", flush=True)
    return run


def warm_up(variant: Variant, job: Job, settings: Settings) -> None:
    """One untimed epoch: file caches, the first imports' byte-code, the trainer's data set."""
    print(f"warm-up: {variant.name}", flush=True)
    timed(variant, job, job.workdir / "warmup" / variant.name.replace(" ", "-"), 1, -1, settings, Counter())


def extend_stats(stats: dict[str, dict[str, float]], runs: list[Run]) -> dict[str, str]:
    """Adds wall min/max and ratio to ``summarize``'s medians; returns, per variant, how its final
    weights compare with the baseline's."""
    baseline_weights = {run.weights_sha256 for run in runs if run.variant == BASELINE}
    weights = {}
    for name, row in stats.items():
        mine = [run for run in runs if run.variant == name]
        walls = [run.wall_s for run in mine]
        row["wall_s_min"], row["wall_s_max"] = min(walls), max(walls)
        row["wall_ratio"] = row["wall_s"] / stats[BASELINE]["wall_s"]
        row["val_acc"] = statistics.median(run.val_acc for run in mine)
        digests = {run.weights_sha256 for run in mine}
        if len(digests) > 1:
            weights[name] = "differ between runs"
        elif name == BASELINE:
            weights[name] = "same in every run"
        else:
            weights[name] = "identical to the baseline" if digests == baseline_weights else "differ"
    return weights


def markdown(meta: dict[str, object], stats: dict[str, dict[str, float]],
             weights: dict[str, str]) -> str:
    lines = [
        f"## Peers vs hand-written DDP ({meta['date']})",
        "",
        f"torch {meta['torch']}, lightning {meta['lightning']}, accelerate {meta['accelerate']}, "
        f"Python {meta['python']}; {meta['cpus']} CPUs ({meta['cpu_model']}); {PROCS} ranks (gloo, "
        f"CPU); {meta['train_samples']} training samples, epochs: {meta['epochs']}, batch "
        f"{BATCH_SIZE}/rank; medians of {meta['reps']} alternating round(s) [min-max], after one "
        f"warm-up each; load average at start/end {meta['loadavg_start']:.2f}/{meta['loadavg_end']:.2f}.",
        "",
        "| variant | wall (s) | x baseline | time to first step (s) | x baseline | train samples/s "
        "| x baseline | final weights | val_acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in stats.items():
        lines.append(
            f"| {name} "
            f"| {spread(row, 'wall_s', 2)} "
            f"| {row['wall_ratio']:.2f} "
            f"| {spread(row, 'first_step_s', 2)} "
            f"| {row['first_step_ratio']:.2f} "
            f"| {spread(row, 'samples_per_s', 0)} "
            f"| {row['throughput_ratio']:.3f} | {weights[name]} | {row['val_acc']:.4f} |"
        )
    best = {
        "wall": min(stats, key=lambda name: stats[name]["wall_s"]),
        "time to first step": min(stats, key=lambda name: stats[name]["first_step_s"]),
        "throughput": max(stats, key=lambda name: stats[name]["samples_per_s"]),
    }
    lines += ["", "Best median: " + "; ".join(f"{axis}: {name}" for axis, name in best.items()) + "."]
    failed = meta["failed_runs"]
    assert isinstance(failed, dict)
    lines += ["", "Runs that failed and were run again: "
              + (", ".join(f"{name} {count}" for name, count in failed.items()) or "none") + "."]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def bench(settings: Settings) -> tuple[dict[str, object], str]:
    """Warm up every variant once (untimed), then alternate ``settings.reps`` rounds."""
    loadavg_start = os.getloadavg()[0]
    if loadavg_start > BUSY_LOAD_PER_CPU * len(os.sched_getaffinity(0)):
        print(f"warning: load average {loadavg_start:.2f} at start: something else is running, "
              "timings will be noisy", file=sys.stderr)
    all_variants = variants(settings)
    runs: list[Run] = []
    failures: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = Path(tmp)
        job = Job(workdir=workdir, data_root=workdir / "data", npz=None)
        preparer, *others = all_variants
        warm_up(preparer, job, settings)
        job = Job(workdir=workdir, data_root=job.data_root, npz=cached_npz(job.data_root))
        with np.load(job.npz) as arrays:
            train_samples = len(arrays["y_train"])
        for variant in others:
            warm_up(variant, job, settings)
        for rep in range(settings.reps):
            shift = rep % len(all_variants)
            for variant in all_variants[shift:] + all_variants[:shift]:
                run_dir = workdir / f"rep{rep}" / variant.name.replace(" ", "-")
                run = timed(variant, job, run_dir, settings.epochs, rep, settings, failures)
                runs.append(run)
                print(f"rep {rep + 1}/{settings.reps} {variant.name:<29} wall {run.wall_s:6.2f} s  "
                      f"first step {run.first_step_s:5.2f} s  {run.samples_per_s:7.0f} samples/s",
                      flush=True)
    stats = summarize(runs, [variant.name for variant in all_variants])
    weights = extend_stats(stats, runs)
    meta: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **{package: importlib.metadata.version(package) for package in ("torch", *PEER_PACKAGES)},
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "train_samples": train_samples,
        "epochs": settings.epochs,
        "reps": settings.reps,
        "num_samples": settings.num_samples,
        "timeout_s": settings.timeout_s,
        "failed_runs": dict(failures),  # runs that failed and were run again
    }
    results = {"meta": meta, "stats": stats, "weights": weights, "runs": [asdict(run) for run in runs]}
    return results, markdown(meta, stats, weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="alternating rounds (default: 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: 4000 training samples, 1 epoch, 1 round")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be >= 1")
        settings = Settings(**{**asdict(settings), "reps": args.reps})
    missing = [name for name in PEER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"peers: {' and '.join(missing)} not installed; install the bench extra: {INSTALL}")
    try:
        with supervised(KILL_GRACE_S):  # whatever a run leaves behind is stopped, however we end
            results, table = bench(settings)
    except BenchError as error:
        sys.exit(f"peers: {error}")
    except Interrupted as signal_received:
        sys.exit(f"peers: stopped ({signal_received}); every process of the bench was stopped")
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path = RESULTS_DIR / f"peers-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"results: {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
