"""The sweep report and the status text of runs that compute no accuracy (a regression,
``metrics=[]``): they use ``val_loss``, never a blank ``val_acc``."""

from __future__ import annotations

from pathlib import Path

from launcher.jobs import Status, format_status
from launcher.report import Point, best_point, plot


def regression_points(tmp_path: Path) -> list[Point]:
    losses = {"0": 0.40, "1": 0.25, "2": 0.31}
    return [Point(name, tmp_path / name, {"optim.lr": name}, "completed", {"val_loss": loss},
                  curve=[{"epoch": 0, "val_loss": loss + 0.1}, {"epoch": 1, "val_loss": loss}])
            for name, loss in losses.items()]


def test_best_point_without_accuracy_is_the_lowest_val_loss(tmp_path):
    assert best_point(regression_points(tmp_path)).name == "1"


def test_accuracy_still_decides_where_it_was_computed(tmp_path):
    points = regression_points(tmp_path)
    points[0].summary["val_acc"], points[2].summary["val_acc"] = 0.9, 0.8
    assert best_point(points).name == "0"  # the point without accuracy does not win on its loss


def test_the_plot_of_a_regression_sweep_is_drawn(tmp_path):
    plot(regression_points(tmp_path), tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_status_shows_no_blank_accuracy(tmp_path):
    found = Status(str(tmp_path), "finished", "exit 0", "built-in trainer", None, 1,
                   {"number": 1, "host": "h", "pid": 1, "started": "now"}, [],
                   {"epoch": 2, "epochs": 2, "val_loss": 0.25, "val_acc": None, "samples_per_s": 10.0,
                    "epoch_s": None, "eta_s": None},
                   None, {"val_loss": 0.25, "world_size": 2, "wall_s": 3.0})
    text = format_status(found)
    assert "val_loss=0.2500" in text and "val_acc" not in text, text
