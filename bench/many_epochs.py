"""Many short epochs: what the trainer's per-epoch work costs against a hand-written DDP script.

The shape of many published small benchmarks: 4000 training samples, batch 50 per rank on 2 CPU
ranks (40 steps an epoch), 75 epochs, an evaluation and a checkpoint after every epoch. Two
variants, alternating round by round in a rotating order (load drift hits both alike):

- ``trainer``: ``python -m launcher`` (default ``launcher=torchrun``) with ``save.every_epochs=1``:
  evaluation, metrics, TensorBoard and an atomic checkpoint (background writer) every epoch;
- ``handwritten``: ``torchrun --standalone bench/handwritten_ddp.py --checkpoint ...``: the same
  steps and evaluations, and a plain synchronous ``torch.save`` on rank 0 after every epoch.

Both end with bit-identical weights (checked). Reported: medians of whole-command wall time and
their ratio (goal <= 1.03), the final accuracies. Results go to ``bench/results/``.

    python bench/many_epochs.py [--reps 3] [--epochs 75]
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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from launch_overhead import RESULTS_DIR, BenchError, cached_npz, run_command

BENCH_DIR = Path(__file__).resolve().parent
HANDWRITTEN = BENCH_DIR / "handwritten_ddp.py"
PROCS = 2
TRAIN_SAMPLES = 4000
NUM_SAMPLES = 5000  # the synthetic set holds 20 % out for validation: 4000 to train, 1000 to evaluate
BATCH_SIZE = 50
SEED = 0
WALL_GOAL = 1.03  # trainer / hand-written, at most
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Run:
    variant: str
    rep: int
    wall_s: float
    val_acc: float
    weights_sha256: str


def trainer_command(data_root: Path, run_dir: Path, epochs: int) -> list[str]:
    return [
        sys.executable, "-m", "launcher", f"gpus={PROCS}", f"trainer.epochs={epochs}",
        f"data.dataset.num_samples={NUM_SAMPLES}", f"data.batch_size={BATCH_SIZE}",
        f"data.root={data_root}", "save.every_epochs=1", f"seed={SEED}", f"hydra.run.dir={run_dir}",
    ]


def handwritten_command(npz: Path, run_dir: Path, epochs: int) -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    return [
        str(torchrun), "--standalone", f"--nproc-per-node={PROCS}", str(HANDWRITTEN), f"--data={npz}",
        f"--epochs={epochs}", f"--summary={run_dir / 'summary.json'}", f"--batch-size={BATCH_SIZE}",
        f"--seed={SEED}", f"--checkpoint={run_dir / 'last.pt'}",
    ]


def run_once(variant: str, argv: list[str], workdir: Path, run_dir: Path, rep: int) -> Run:
    run_dir.mkdir(parents=True)
    _, wall = run_command(argv, workdir, run_dir / "output.log", TIMEOUT_S)
    summary = json.loads((run_dir / "summary.json").read_text())
    return Run(variant, rep, wall, summary["val_acc"], summary["weights_sha256"])


def bench(reps: int, epochs: int) -> dict[str, object]:
    load_start = os.getloadavg()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="many-epochs-") as tmp:
        workdir = Path(tmp)
        data_root = workdir / "data"
        # Warm-up (untimed): the trainer's run also generates the cached data set both read.
        run_once("trainer", trainer_command(data_root, workdir / "warmup-trainer", 1), workdir,
                 workdir / "warmup-trainer", -1)
        npz = cached_npz(data_root)
        run_once("handwritten", handwritten_command(npz, workdir / "warmup-hand", 1), workdir,
                 workdir / "warmup-hand", -1)
        commands = {
            "trainer": lambda run_dir: trainer_command(data_root, run_dir, epochs),
            "handwritten": lambda run_dir: handwritten_command(npz, run_dir, epochs),
        }
        names = list(commands)
        for rep in range(reps):
            for name in names[rep % 2:] + names[:rep % 2]:
                run_dir = workdir / f"rep{rep}" / name
                run = run_once(name, commands[name](run_dir), workdir, run_dir, rep)
                runs.append(run)
                print(f"rep {rep + 1}/{reps} {name:<12} wall {run.wall_s:6.2f} s  val_acc {run.val_acc:.4f}",
                      flush=True)
    load_end = os.getloadavg()
    medians = {name: statistics.median(run.wall_s for run in runs if run.variant == name) for name in names}
    return {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": importlib.metadata.version("torch"), "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)), "reps": reps, "epochs": epochs,
            "train_samples": TRAIN_SAMPLES, "batch_size_per_rank": BATCH_SIZE, "ranks": PROCS,
            "loadavg_start": load_start, "loadavg_end": load_end,
        },
        "wall_s_median": medians,
        "wall_s_all": {name: [run.wall_s for run in runs if run.variant == name] for name in names},
        "ratio": medians["trainer"] / medians["handwritten"],
        "goal_ratio_max": WALL_GOAL,
        "val_acc": {name: sorted({run.val_acc for run in runs if run.variant == name}) for name in names},
        "identical_weights": len({run.weights_sha256 for run in runs}) == 1,
        "runs": [asdict(run) for run in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="alternating rounds (at least 1)")
    parser.add_argument("--epochs", type=int, default=75)
    args = parser.parse_args()
    if args.reps < 1 or args.epochs < 1:
        parser.error("--reps and --epochs must be >= 1")
    try:
        results = bench(args.reps, args.epochs)
    except BenchError as error:
        sys.exit(f"many_epochs: {error}")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"many_epochs-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    medians = results["wall_s_median"]
    assert isinstance(medians, dict)
    print(f"\nmedian wall: trainer {medians['trainer']:.2f} s, handwritten {medians['handwritten']:.2f} s, "
          f"ratio {results['ratio']:.3f} (goal <= {WALL_GOAL}); val_acc {results['val_acc']}; "
          f"identical weights: {results['identical_weights']}; results: {path}")


if __name__ == "__main__":
    main()
