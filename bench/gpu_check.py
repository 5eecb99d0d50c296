"""One check of the launcher and trainer on a machine with one NVIDIA GPU, written as one JSON file.

Each check is one entry of the file; a check that fails records its error and the others still
run, and the file is rewritten after every check, so a run cut short keeps what it measured.

- ``environment``: Python, torch, CUDA, cuDNN, NCCL, the GPU, and the packages the project needs.
- ``launcher_gloo``: ``python -m launcher`` with 2 CPU ranks on gloo (also without a GPU).
- ``launcher_nccl``: the real launcher with ``gpus=1 backend=nccl``: exit code, samples/s, the
  device rank 0 reports.
- ``precision_fp16``, ``precision_bf16``, ``channels_last``, ``compile``: the trainer's options
  (``trainer.precision``, ``trainer.channels_last``, ``trainer.compile``) on the GPU.
- ``resnet18``: the trainer's resnet18 on in-memory random images against a hand-written training
  loop of the same model, batch size and precision over the same data (steady-state images/s:
  median of the epochs after the first), and the same step on one batch already on the GPU.
- ``host_syncs``: host synchronisations per training step (torch's sync debug mode turns each
  into a warning, which is counted), of the hand-written loop and of the trainer, by source line.
- ``checkpoint_resume``: a run that checkpoints, then ``resume=auto`` with more epochs.

Without a CUDA device the GPU-only entries say ``"skipped": "no CUDA device"``. The file is
``$OUT/gpu_check.json`` when ``OUT`` is set, else ``bench/results/gpu_check.json``, or ``--out``.
The exit code is 0 whenever the file was written: failed checks are in the file.

    bash bench/gpu_check.sh             # on the GPU machine: installs .whl/, then runs this
    python bench/gpu_check.py [--out FILE] [--budget-s 420]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
DEFAULT_OUT = BENCH_DIR / "results" / "gpu_check.json"
NO_CUDA = "no CUDA device"
RUN_TIMEOUT_S = 180.0  # one launcher run (start-up, a few short epochs)
COMPILE_TIMEOUT_S = 300.0  # the first steps of trainer.compile=true pay the compilation
KILL_GRACE_S = 15.0  # SIGTERM -> SIGKILL: the launcher stops its ranks on SIGTERM
SYNC_WARNING = "synchronizing CUDA operation"  # the text of torch's sync-debug-mode warnings
SYNCS_FILE = "syncs.json"  # written by a rank of the host_syncs check into its run directory
MLP_EPOCHS = 3

# import name -> distribution: what the launcher and the trainer import on the way of these checks
PACKAGES = {
    "hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime",
    "submitit": "submitit", "yaml": "PyYAML", "cloudpickle": "cloudpickle",
    "typing_extensions": "typing_extensions", "packaging": "packaging", "numpy": "numpy",
    "torchvision": "torchvision", "PIL": "pillow", "tensorboard": "tensorboard", "tqdm": "tqdm",
    "matplotlib": "matplotlib",
}


# --- where the ranks run, and the image job ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a launcher run's ranks go: one GPU on NCCL, or two CPU processes on gloo."""

    backend: str
    gpus: int

    def overrides(self) -> list[str]:
        return [f"gpus={self.gpus}", f"backend={self.backend}"]


GPU = Target("nccl", 1)
CPU = Target("gloo", 2)


@dataclass(frozen=True)
class ImageJob:
    """The resnet18 comparison, one shape for the trainer and the hand-written loop.

    Random images in memory rather than a folder of PNGs: decoding would be what is measured,
    not the training step. Four DataLoader workers collate the batches while the GPU computes.
    """

    image_size: int = 64
    batch_size: int = 256
    train_batches: int = 48  # per epoch
    val_samples: int = 1024
    epochs: int = 5  # steady state: the median of epochs 2..5
    workers: int = 4
    precision: str = "bf16"
    num_classes: int = 10
    seed: int = 0

    def overrides(self) -> list[str]:
        """The trainer's resnet18 config, with this module's SyntheticImages as its data set."""
        return [
            "model=resnet18", "~data.dataset", "+data.dataset._target_=gpu_check.SyntheticImages",
            f"+data.dataset.num_classes={self.num_classes}",
            f"+data.dataset.image_size={self.image_size}",
            f"+data.dataset.train_samples={self.train_batches * self.batch_size}",
            f"+data.dataset.val_samples={self.val_samples}", f"+data.dataset.seed={self.seed}",
            f"data.num_classes={self.num_classes}", f"data.batch_size={self.batch_size}",
            f"data.num_workers={self.workers}", f"trainer.precision={self.precision}",
            f"trainer.epochs={self.epochs}", "save.every_epochs=0", f"seed={self.seed}",
        ]


def random_images(count: int, image_size: int, num_classes: int, seed: int) -> TensorDataset:
    """Normal-distributed images and uniform labels, the same for a given seed in every process."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    return TensorDataset(images, labels)


class SyntheticImages:
    """The trainer's data plug point (``data.dataset._target_``) for random images in memory.

    Imported by the launcher's ranks as ``gpu_check.SyntheticImages`` (bench/ is on their
    PYTHONPATH); nothing is cached, every rank makes the same tensors from the seed.
    """

    def __init__(self, num_classes: int, image_size: int, train_samples: int, val_samples: int,
                 seed: int) -> None:
        self.num_classes, self.image_size, self.seed = num_classes, image_size, seed
        self.train_samples, self.val_samples = train_samples, val_samples

    def prepare(self) -> None:
        """Nothing to download or cache."""

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        return (random_images(self.train_samples, self.image_size, self.num_classes, self.seed),
                random_images(self.val_samples, self.image_size, self.num_classes, self.seed + 1))


# --- launcher runs ------------------------------------------------------------------------------------


class Deadline:
    """The whole run's time budget: later checks are skipped, and runs' timeouts shortened, so the
    file is complete within the time a borrowed GPU machine gives."""

    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def timeout(self, limit_s: float) -> float:
        return max(1.0, min(limit_s, self.remaining()))


def child_env() -> dict[str, str]:
    """The launcher and its ranks import the project from this checkout and SyntheticImages from
    bench/, before whatever PYTHONPATH already holds (gpu_check.sh's wheels)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM first, so the launcher stops its ranks; SIGKILL if it has not left in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steady_rate(records: list[dict[str, Any]]) -> float | None:
    """Median samples/s of the epochs after the first: the first pays cuDNN's and the
    allocator's warm-up, which a longer run would not feel."""
    rates = [record["samples_per_s"] for record in records if record["epoch"] >= 1]
    return statistics.median(rates) if rates else None


def launch(work: Path, name: str, overrides: list[str], timeout_s: float,
           run_dir: Path | None = None) -> dict[str, Any]:
    """``python -m launcher OVERRIDES`` as a user runs it; what its run directory and output say."""
    run_dir = run_dir or work / name
    log = work / f"{name}.log"
    argv = [sys.executable, "-m", "launcher", *overrides, f"data.root={work / 'data'}",
            f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            exit_code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(process)
            exit_code = None
    text = log.read_text(errors="replace")
    device = re.search(r"rank 0/\d+ up: backend=\S+ device=(\S+)", text)
    summary, records = _read_json(run_dir / "summary.json"), _metrics(run_dir)
    result: dict[str, Any] = {
        "command": " ".join(["python -m launcher", *overrides]),
        "exit_code": exit_code,
        "wall_s": round(time.perf_counter() - started, 2),
        "device": device.group(1) if device else None,
        "backend": summary.get("backend"),
        "precision": summary.get("precision"),
        "samples_per_s": summary.get("train_samples_per_s"),
        "steady_samples_per_s": steady_rate(records),
        "epochs_in_metrics": [record["epoch"] for record in records],
    }
    if exit_code is None:
        result["timed_out_after_s"] = round(timeout_s)
    if exit_code != 0:
        result["output_tail"] = _tail(log)
    return result


def mlp_run(work: Path, name: str, target: Target, extra: list[str], deadline: Deadline,
            limit_s: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """The default job (the MLP on the synthetic data) for a few epochs."""
    return launch(work, name, [*target.overrides(), f"trainer.epochs={MLP_EPOCHS}", *extra],
                  deadline.timeout(limit_s))


def checkpoint_resume(work: Path, target: Target, deadline: Deadline) -> dict[str, Any]:
    """Two epochs with a checkpoint after each, then ``resume=auto`` in the same run directory
    with four: the resumed run must start at epoch 2 and metrics.jsonl hold epochs 0..3 once."""
    run_dir = work / "resume-run"
    first = launch(work, "resume-first", [*target.overrides(), "trainer.epochs=2"],
                   deadline.timeout(RUN_TIMEOUT_S), run_dir)
    resumed = launch(work, "resume-second", [*target.overrides(), "trainer.epochs=4", "resume=auto"],
                     deadline.timeout(RUN_TIMEOUT_S), run_dir)
    found = re.search(r"resumed at epoch (\d+)", (work / "resume-second.log").read_text(errors="replace"))
    resumed["resumed_at_epoch"] = int(found.group(1)) if found else None
    continued = (first["exit_code"] == 0 and resumed["exit_code"] == 0
                 and resumed["resumed_at_epoch"] == 2 and resumed["epochs_in_metrics"] == [0, 1, 2, 3])
    return {"first": first, "resumed": resumed, "continued": continued}


# --- the hand-written loop ------------------------------------------------------------------------------


class HandwrittenLoop:
    """What a user writes by hand for one GPU, for comparison with the trainer: the same resnet18,
    SGD settings (conf/optim/sgd.yaml), per-step cosine schedule, batch size, precision and data
    loading, without DDP, and with no host sync per step (the loss is summed on the device)."""

    def __init__(self, job: ImageJob, device: torch.device) -> None:
        import torchvision

        torch.manual_seed(job.seed)
        self.device = device
        self.dtype = {"32": None, "bf16": torch.bfloat16}[job.precision]  # fp16 would need a scaler
        self.model = torchvision.models.get_model("resnet18", num_classes=job.num_classes).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                         weight_decay=1e-4)
        total = job.epochs * job.train_batches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
        data = random_images(job.train_batches * job.batch_size, job.image_size, job.num_classes,
                             job.seed)
        self.loader = DataLoader(
            data, batch_size=job.batch_size, shuffle=True, pin_memory=device.type == "cuda",
            num_workers=job.workers, persistent_workers=job.workers > 0,
            multiprocessing_context="fork" if job.workers > 0 else None)
        self.loss_sum = torch.zeros((), device=device)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = F.cross_entropy(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.loss_sum += loss.detach()

    def run(self, max_steps: int | None = None) -> int:
        """One pass over the loader (or its first ``max_steps`` batches); returns the images."""
        images = 0
        for index, (inputs, targets) in enumerate(self.loader):
            if index == max_steps:
                break
            self.step(inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True))
            images += targets.numel()
        synchronize(self.device)
        return images

    def epoch_rates(self, epochs: int) -> list[float]:
        rates = []
        for _ in range(epochs):
            started = time.perf_counter()
            images = self.run()
            rates.append(images / (time.perf_counter() - started))
        return rates

    def compute_only_rate(self, steps: int = 30, windows: int = 3) -> float:
        """The step alone, on one batch already on the device: the ceiling that data loading
        and the loop's own work take away from."""
        inputs, targets = (tensor.to(self.device) for tensor in next(iter(self.loader)))
        rates = []
        for _ in range(windows):
            synchronize(self.device)
            started = time.perf_counter()
            for _ in range(steps):
                self.step(inputs, targets)
            synchronize(self.device)
            rates.append(steps * targets.numel() / (time.perf_counter() - started))
        return statistics.median(rates)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_images(work: Path, name: str, job: ImageJob, target: Target, extra: list[str],
                   deadline: Deadline) -> dict[str, Any]:
    """The trainer's resnet18 on the image job, as a user launches it."""
    return launch(work, name, [*target.overrides(), *job.overrides(), *extra],
                  deadline.timeout(RUN_TIMEOUT_S))


def resnet18(work: Path, job: ImageJob, target: Target, device: torch.device,
             deadline: Deadline) -> dict[str, Any]:
    """The trainer's steady-state images/s against the hand-written loop's, same work."""
    trainer = trainer_images(work, "resnet18", job, target, [], deadline)
    loop = HandwrittenLoop(job, device)
    rates = loop.epoch_rates(job.epochs)
    handwritten = statistics.median(rates[1:])
    steady = trainer["steady_samples_per_s"]
    return {
        "job": asdict(job),
        "trainer": trainer,
        "handwritten": {
            "epoch_images_per_s": [round(rate, 1) for rate in rates],
            "steady_images_per_s": handwritten,
            "compute_only_images_per_s": loop.compute_only_rate(),
        },
        "ratio_trainer_to_handwritten": steady / handwritten if steady else None,
    }


# --- host syncs -------------------------------------------------------------------------------------


def _source_line(frame: FrameType | None) -> str:
    """The innermost frame in this checkout (not a hidden folder such as .venv/) as
    ``path:line code``; else the innermost frame at all."""
    stack = traceback.extract_stack(frame)
    for entry in reversed(stack):
        path = Path(entry.filename).resolve()
        if path.is_relative_to(REPO) and not path.relative_to(REPO).parts[0].startswith("."):
            return f"{path.relative_to(REPO)}:{entry.lineno} {(entry.line or '').strip()}"
    entry = stack[-1]
    return f"{entry.filename}:{entry.lineno}"


@contextlib.contextmanager
def counting_syncs() -> Iterator[Counter[str]]:
    """Counts host synchronisations by source line: torch's sync debug mode warns at each one,
    and every such warning is counted here instead of printed (others are shown as usual)."""
    counts: Counter[str] = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show = warnings.showwarning

        def count(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
            if SYNC_WARNING in str(message):
                counts[_source_line(inspect.currentframe().f_back)] += 1
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = count
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counts
        finally:
            torch.cuda.set_sync_debug_mode("default")


def per_step(short: Counter[str], long: Counter[str], extra_steps: int) -> dict[str, Any]:
    """Syncs per step from two runs that differ only in their number of steps: whatever happens
    once per run (start, evaluation, summary) cancels out."""
    by_line = {where: (long[where] - short[where]) / extra_steps for where in long | short}
    return {"per_step": (sum(long.values()) - sum(short.values())) / extra_steps,
            "by_line": {where: rate for where, rate in sorted(by_line.items()) if rate}}


def handwritten_syncs(job: ImageJob, device: torch.device, steps: tuple[int, int]) -> dict[str, Any]:
    loop = HandwrittenLoop(replace(job, train_batches=max(steps)), device)
    loop.run()  # warm-up: cuDNN's choices, the allocator, the workers
    counts = []
    for count in steps:
        with counting_syncs() as found:
            loop.run(count)
        counts.append(found)
    return per_step(*counts, steps[1] - steps[0])


def trainer_syncs(work: Path, job: ImageJob, target: Target, steps: tuple[int, int],
                  deadline: Deadline) -> dict[str, Any]:
    """Two one-epoch trainer runs of ``steps`` batches, each rank running the trainer through
    this file's ``--count-trainer-syncs`` (the launcher's ``script=``), under sync debug mode."""
    counts, runs = [], {}
    for count in steps:
        name = f"syncs-{count}"
        run_dir = work / name
        shape = replace(job, train_batches=count, epochs=1)
        script = [f"script={Path(__file__).resolve()}",
                  f"script_args=[--count-trainer-syncs,{run_dir}]"]
        runs[name] = launch(work, name, [*target.overrides(), *shape.overrides(), *script],
                            deadline.timeout(RUN_TIMEOUT_S))
        counts.append(Counter(_read_json(run_dir / SYNCS_FILE)))
    failed = {name: run for name, run in runs.items() if run["exit_code"] != 0}
    return failed or per_step(*counts, steps[1] - steps[0])


def host_syncs(work: Path, job: ImageJob, target: Target, device: torch.device,
               deadline: Deadline, steps: tuple[int, int] = (8, 24)) -> dict[str, Any]:
    return {"steps_compared": list(steps),
            "handwritten": handwritten_syncs(job, device, steps),
            "trainer": trainer_syncs(work, job, target, steps, deadline)}


def count_trainer_syncs(run_dir: Path) -> int:
    """A rank of the host_syncs check: the trainer's own ``main`` on the launcher's config, under
    sync debug mode; returns the trainer's exit code. (The launcher runs a script's rank as a
    function of torchrun's agent, which waits for it to return: no ``os._exit`` here.)"""
    from trainer.train import main as trainer_main

    with counting_syncs() as counts:
        code = trainer_main([str(run_dir / "config.yaml")])
    if int(os.environ.get("RANK", "0")) == 0:
        (run_dir / SYNCS_FILE).write_text(json.dumps(counts, indent=2) + "\n")
    return code


# --- environment --------------------------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    versions = {}
    for module, distribution in PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            versions[distribution] = "missing"
            continue
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = "present (no metadata)"
    return versions


def gpu_facts() -> dict[str, Any]:
    properties = torch.cuda.get_device_properties(0)
    facts: dict[str, Any] = {
        "device_count": torch.cuda.device_count(),
        "device_name": properties.name,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "multiprocessors": properties.multi_processor_count,
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "cudnn": torch.backends.cudnn.version(),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        facts["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    return facts


def environment() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nccl": (".".join(map(str, torch.cuda.nccl.version()))
                 if torch.distributed.is_nccl_available() else None),
        "cuda_available": torch.cuda.is_available(),
        "packages": package_versions(),
    }
    if torch.cuda.is_available():
        facts.update(gpu_facts())
    missing = [name for name, version in facts["packages"].items() if version == "missing"]
    if missing:
        facts["missing"] = missing
        print(f"warning: not installed here: {', '.join(missing)}"
              + (" (the resnet18 checks need torchvision)" if "torchvision" in missing else ""),
              flush=True)
    return facts


# --- the report -------------------------------------------------------------------------------------------


def _exit_codes(entry: Any) -> Iterator[Any]:
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key == "exit_code":
                yield value
            else:
                yield from _exit_codes(value)


def _headline(entry: dict[str, Any]) -> str:
    """A few numbers of an entry for the console; everything is in the file."""
    keys = ("device", "samples_per_s", "steady_samples_per_s", "ratio_trainer_to_handwritten",
            "continued", "per_step", "device_name", "torch")
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and not isinstance(value, dict | list):
                    shown = f"{value:.4g}" if isinstance(value, float) else value
                    found.append(f"{path}{key}={shown}")
                else:
                    walk(value, f"{path}{key}." if isinstance(value, dict) else path)

    walk(entry, "")
    return " ".join(found)


def _state(entry: dict[str, Any]) -> str:
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    if "error" in entry:
        return f"FAILED: {entry['error']}"
    return "ok" if entry["ok"] else "FAILED"


class Report:
    """The JSON file: rewritten after every check, so that a run cut short keeps its results."""

    def __init__(self, path: Path, deadline: Deadline) -> None:
        self.path, self.deadline = path, deadline
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "meta": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "host": platform.node(), "command": " ".join([Path(sys.executable).name, *sys.argv])},
            "checks": {},
        }

    def check(self, name: str, run: Callable[[], dict[str, Any]], gpu_only: bool) -> None:
        if gpu_only and not torch.cuda.is_available():
            entry: dict[str, Any] = {"skipped": NO_CUDA}
        elif self.deadline.remaining() <= 0:
            entry = {"skipped": "time budget (--budget-s) spent"}
        else:
            print(f"{name} ...", flush=True)
            started = time.perf_counter()
            try:
                entry = run()
            except Exception as error:  # recorded; the other checks still run
                entry = {"error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc(limit=-6)}
            entry["seconds"] = round(time.perf_counter() - started, 1)
            entry["ok"] = "error" not in entry and all(code == 0 for code in _exit_codes(entry))
        self.data["checks"][name] = entry
        self.data["meta"]["total_s"] = round(time.perf_counter() - self.started, 1)
        self.write()
        print(f"{name}: {_state(entry)} {_headline(entry)}", flush=True)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        partial.replace(self.path)


def run_checks(report: Report, work: Path, job: ImageJob) -> None:
    """Cheap and essential checks first, torch.compile (the slowest) last."""
    deadline = report.deadline
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    report.check("environment", environment, gpu_only=False)
    report.check("launcher_gloo", lambda: mlp_run(work, "gloo", CPU, [], deadline), gpu_only=False)
    report.check("launcher_nccl", lambda: mlp_run(work, "nccl", GPU, [], deadline), gpu_only=True)
    for precision in ("fp16", "bf16"):
        report.check(f"precision_{precision}", lambda precision=precision: mlp_run(
            work, precision, GPU, [f"trainer.precision={precision}"], deadline), gpu_only=True)
    report.check("checkpoint_resume", lambda: checkpoint_resume(work, GPU, deadline), gpu_only=True)
    report.check("resnet18", lambda: resnet18(work, job, GPU, device, deadline), gpu_only=True)
    report.check("channels_last", lambda: trainer_images(
        work, "channels_last", job, GPU, ["trainer.channels_last=true"], deadline), gpu_only=True)
    report.check("host_syncs", lambda: host_syncs(work, job, GPU, device, deadline), gpu_only=True)
    report.check("compile", lambda: mlp_run(work, "compile", GPU, ["trainer.compile=true"], deadline,
                                            COMPILE_TIMEOUT_S), gpu_only=True)


def default_out() -> Path:
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else DEFAULT_OUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out(),
                        help="the JSON file (default: $OUT/gpu_check.json, else %(default)s)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="checks not started within this many seconds are skipped (default 420)")
    parser.add_argument("--count-trainer-syncs", type=Path, metavar="RUN_DIR",
                        help=argparse.SUPPRESS)  # the host_syncs check's ranks, started by the launcher
    args = parser.parse_args()
    if args.count_trainer_syncs:
        sys.exit(count_trainer_syncs(args.count_trainer_syncs))
    report = Report(args.out.resolve(), Deadline(args.budget_s))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        run_checks(report, Path(tmp), ImageJob())
    print(f"gpu_check: results in {report.path}", flush=True)


if __name__ == "__main__":
    main()
