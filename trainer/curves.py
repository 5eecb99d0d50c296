"""``DIR/curves.png``: a run's losses per epoch, and its validation metrics on a second axis,
drawn from its ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

from trainer.files import read_jsonl


def plot_curves(metrics_path: Path, out_path: Path) -> None:
    # A Figure of its own, without pyplot: no global figure state in the rank, no GUI backend to
    # choose, and a third less import time (rank 0 pays it at the end of every run).
    from matplotlib.figure import Figure

    # A torn last line (a process killed while appending) is skipped with a warning.
    keys = ("epoch", "train_loss", "val_loss")
    records = [record for record in read_jsonl(metrics_path) if all(key in record for key in keys)]
    if not records:
        return
    metrics = [key for key in records[-1] if key.startswith("val_") and key != "val_loss"
               and all(key in record for record in records)]
    epochs = [record["epoch"] + 1 for record in records]
    figure = Figure(figsize=(7, 4))
    loss_axis = figure.subplots()
    loss_axis.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train_loss")
    loss_axis.plot(epochs, [r["val_loss"] for r in records], marker="o", label="val_loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    handles = loss_axis.get_legend_handles_labels()[0]
    if metrics:
        metric_axis = loss_axis.twinx()
        for key in metrics:
            metric_axis.plot(epochs, [r[key] for r in records], marker="s", linestyle="--", label=key)
        metric_axis.set_ylabel(", ".join(metrics))
        handles += metric_axis.get_legend_handles_labels()[0]
    loss_axis.legend(handles, [str(h.get_label()) for h in handles], loc="center right")
    loss_axis.set_title(f"{metrics_path.parent.name}: loss{' and metrics' if metrics else ''} per epoch")
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
