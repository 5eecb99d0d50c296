"""The sweep report: ``python -m launcher.report SWEEP_DIR``.

Reads every point of a Hydra multirun sweep (a subdirectory with ``.hydra/overrides.yaml``) and
writes, into the sweep directory, ``sweep_summary.csv``, ``sweep_summary.md`` and
``sweep_summary.png``: each point's overrides, status, validation metrics, samples/s and wall
time, the best point marked, the metric against the swept values and each point's loss curves.
It only reads what the points wrote, so it can run while a (Slurm) sweep is still going.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from launcher.failures import FAILURE_FILE

REPORT_NAME = "sweep_summary"
COLUMNS = ("point", "overrides", "status", "val_loss", "val_acc", "samples_per_s", "wall_s", "best")


@dataclass
class Point:
    name: str
    path: Path
    overrides: dict[str, str]
    status: str  # completed | failed | running
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    curve: list[dict[str, Any]] = field(default_factory=list)

    def metric(self, key: str) -> float:
        value = self.summary.get(key)
        return float(value) if isinstance(value, (int, float)) else math.nan


def _overrides(path: Path) -> dict[str, str]:
    items = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "overrides.yaml"))
    assert isinstance(items, list)
    pairs = [str(item).lstrip("+~").split("=", 1) for item in items]
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def _curve(path: Path) -> list[dict[str, Any]]:
    """The point's epoch records; a line that does not parse (the torn last line of a rank killed
    while appending, or of a run still writing) is skipped with a warning."""
    from trainer.contract import (
        METRICS_FILE,  # not at import: ``python -m launcher.report`` moves the working directory first
    )

    metrics = path / METRICS_FILE
    if not metrics.exists():
        return []
    records = []
    for number, line in enumerate(metrics.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            print(f"warning: {metrics}: line {number} is not a complete JSON record: skipped", file=sys.stderr)
            continue
        if isinstance(record, dict) and "epoch" in record and "val_loss" in record:
            records.append(record)
    return records


def read_point(path: Path) -> Point:
    from trainer.contract import SUMMARY_FILE

    summary_path, failure_path = path / SUMMARY_FILE, path / FAILURE_FILE
    point = Point(path.name, path, _overrides(path), "running", curve=_curve(path))
    if summary_path.exists():
        point.status, point.summary = "completed", json.loads(summary_path.read_text())
    elif failure_path.exists():
        failure = json.loads(failure_path.read_text())
        point.status = "failed"
        point.error = str(failure.get("error") or failure.get("message") or "failed")
    return point


def read_sweep(sweep_dir: Path) -> list[Point]:
    dirs = [path for path in sweep_dir.iterdir() if (path / ".hydra" / "overrides.yaml").is_file()]
    return [read_point(path) for path in sorted(dirs, key=lambda p: (len(p.name), p.name))]


def swept_keys(points: list[Point]) -> list[str]:
    """The override keys whose values differ between points (what the sweep varied)."""
    keys = sorted({key for point in points for key in point.overrides})
    return [key for key in keys if len({point.overrides.get(key) for point in points}) > 1]


def best_point(points: list[Point]) -> Point | None:
    """Highest val_acc among completed points, then lowest val_loss; lowest val_loss where no point
    computed accuracy (a regression, ``metrics=[]``)."""
    done = [point for point in points if point.status == "completed" and not math.isnan(point.metric("val_loss"))]
    if any(not math.isnan(point.metric("val_acc")) for point in done):
        done = [point for point in done if not math.isnan(point.metric("val_acc"))]
        return max(done, key=lambda point: (point.metric("val_acc"), -point.metric("val_loss")))
    return min(done, key=lambda point: point.metric("val_loss"), default=None)


def rows(points: list[Point]) -> list[dict[str, str]]:
    best = best_point(points)
    keys = swept_keys(points) or sorted({key for point in points for key in point.overrides})
    table = []
    for point in points:
        table.append({
            "point": point.name,
            "overrides": " ".join(f"{key}={point.overrides.get(key, '')}" for key in keys),
            "status": point.status if point.status != "failed" else f"failed: {point.error}",
            "val_loss": _fmt(point.metric("val_loss")),
            "val_acc": _fmt(point.metric("val_acc")),
            "samples_per_s": _fmt(point.metric("train_samples_per_s"), 0),
            "wall_s": _fmt(point.metric("wall_s"), 1),
            "best": "*" if point is best else "",
        })
    return table


def _fmt(value: float, digits: int = 4) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def write_csv(table: list[dict[str, str]], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)


def markdown(table: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table:
        cells = [row[column].replace("|", "\\|").replace("\n", " ") for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[Point], path: Path) -> None:
    """Left: val_acc (else val_loss) per point against the swept values (best in a darker colour,
    failed shown as such). Right: each point's validation-loss curve from its metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(points)
    labels = [", ".join(f"{key.split('.')[-1]}={point.overrides.get(key, '')}" for key in keys) or point.name
              for point in points]
    best = best_point(points)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    # val_acc where the points computed it; a sweep without accuracy (a regression) shows val_loss.
    shown = "val_acc" if any(not math.isnan(point.metric("val_acc")) for point in points) else "val_loss"
    values = [0.0 if math.isnan(point.metric(shown)) else point.metric(shown) for point in points]
    colours = ["tab:green" if point is best else "tab:red" if point.status == "failed" else
               "tab:gray" if point.status == "running" else "tab:blue" for point in points]
    left.bar(range(len(points)), values, color=colours)
    for index, point in enumerate(points):
        if point.status != "completed":
            left.text(index, 0.02, point.status, ha="center", rotation=90, fontsize=8)
    left.set_xticks(range(len(points)), labels, rotation=30, ha="right", fontsize=8)
    left.set_ylabel(shown)
    if shown == "val_acc":
        left.set_ylim(0, 1)
    left.set_title(f"{shown} per point (green: best)")
    for point, label in zip(points, labels, strict=True):
        if point.curve:
            epochs = [record["epoch"] + 1 for record in point.curve]
            right.plot(epochs, [record["val_loss"] for record in point.curve], marker="o", label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("val_loss")
    right.set_title("validation loss per point")
    if any(point.curve for point in points):
        right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@contextlib.contextmanager
def _report_lock(sweep_dir: Path) -> Iterator[None]:
    """One writer at a time. The points of a Slurm sweep rewrite the report as each ends, on any
    node and with nobody waiting for them (``hydra/launcher=slurm_submit``): two points ending
    together could otherwise each read the sweep before the other's summary and the staler table
    be written last. Under the lock, the later writer reads both. Without locking (a filesystem
    that refuses it), unserialised as before."""
    with (sweep_dir / f".{REPORT_NAME}.lock").open("a") as lock:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def write_report(sweep_dir: Path) -> list[Point]:
    with _report_lock(sweep_dir):
        points = read_sweep(sweep_dir)
        table = rows(points)
        write_csv(table, sweep_dir / f"{REPORT_NAME}.csv")
        (sweep_dir / f"{REPORT_NAME}.md").write_text(markdown(table))
        plot(points, sweep_dir / f"{REPORT_NAME}.png")
    return points


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m launcher.report SWEEP_DIR", file=sys.stderr)
        return 2
    sweep_dir = Path(argv[0])
    points = write_report(sweep_dir)
    print((sweep_dir / f"{REPORT_NAME}.md").read_text(), end="")
    counts = {status: sum(point.status == status for point in points)
              for status in ("completed", "failed", "running")}
    print(f"{len(points)} points: " + ", ".join(f"{count} {status}" for status, count in counts.items()))
    print(f"written: {sweep_dir / REPORT_NAME}.csv, .md, .png")
    return 0


if __name__ == "__main__":
    from launcher.workdir import search_working_directory_last

    search_working_directory_last()
    sys.exit(main(sys.argv[1:]))
