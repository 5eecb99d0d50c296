"""Hydra multirun sweeps on this machine: every point a full distributed job, and the report."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # real jobs: several processes each

SWEEP_TINY = ["data.dataset.num_samples=512", "trainer.epochs=2"]


def run_sweep(launcher, sweep_dir: Path, *overrides: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    job_id = launcher.new_job_id()
    command = [sys.executable, "-m", "launcher", "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    done = launcher.run_command(command, launcher.env(job_id), timeout_s)
    wait_for_no_leftovers(job_id)
    return done


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def assert_real_png(path: Path, min_size: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    not_background = (pixels < 250).any(axis=1).mean()
    assert colours > 20 and not_background > 0.02, f"{path} looks blank ({colours} colours, {not_background:.3f} ink)"


def test_local_grid_sweep_runs_every_point_as_a_job_and_reports_the_best(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_sweep(launcher, sweep, "optim.lr=0.1,0.03", "data.batch_size=32,64", *SWEEP_TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    points = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert [path.name for path in points] == ["0", "1", "2", "3"]
    summaries = [json.loads((path / "summary.json").read_text()) for path in points]
    assert all(summary["world_size"] == 2 for summary in summaries)
    ports = {yaml.safe_load((path / "config.yaml").read_text())["master_port"] for path in points}
    assert len(ports) == 4, f"points shared a port: {ports}"

    table = read_csv(sweep / "sweep_summary.csv")
    assert [row["status"] for row in table] == ["completed"] * 4
    assert {row["overrides"] for row in table} == {f"data.batch_size={b} optim.lr={lr}"
                                                   for b in (32, 64) for lr in ("0.1", "0.03")}
    best = max(range(4), key=lambda i: (summaries[i]["val_acc"], -summaries[i]["val_loss"]))
    assert [row["best"] for row in table] == ["*" if i == best else "" for i in range(4)]
    markdown = (sweep / "sweep_summary.md").read_text()
    assert markdown.count("\n") == 6 and "| * |" in markdown
    assert_real_png(sweep / "sweep_summary.png", (800, 300))
    for path in points:
        assert_real_png(path / "curves.png", (500, 300))


def test_a_failing_point_does_not_stop_the_others_and_is_reported(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_sweep(launcher, sweep, "model._target_=tests.plugins.FaultyMLP", "+model.action=raise",
                     "+model.fault_step=3,100000", "gpus=2,0", *SWEEP_TINY)
    assert done.returncode != 0, "a sweep with failed points must not report success"
    table = {row["overrides"]: row for row in read_csv(sweep / "sweep_summary.csv")}
    assert len(table) == 4
    assert table["gpus=2 model.fault_step=100000"]["status"] == "completed"
    assert table["gpus=2 model.fault_step=3"]["status"].startswith("failed: RuntimeError: deliberate fault")
    for overrides in ("gpus=0 model.fault_step=3", "gpus=0 model.fault_step=100000"):
        assert table[overrides]["status"].startswith("failed: invalid config: gpus=0"), table[overrides]
    assert table["gpus=2 model.fault_step=100000"]["best"] == "*"


def test_report_command_reads_a_sweep_that_is_still_running(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_sweep(launcher, sweep, "optim.lr=0.1,0.03", *SWEEP_TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    running = sweep / "2"  # a point that has started but not finished: no summary yet
    shutil.copytree(sweep / "1", running)
    (running / "summary.json").unlink()
    overrides = running / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text().replace("0.03", "0.01"))
    report = subprocess.run([sys.executable, "-m", "launcher.report", str(sweep)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| 2 | optim.lr=0.01 | running |" in report.stdout, report.stdout
    assert "3 points: 2 completed, 0 failed, 1 running" in report.stdout
    assert [row["status"] for row in read_csv(sweep / "sweep_summary.csv")] == ["completed", "completed", "running"]
