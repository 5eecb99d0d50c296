"""``DIR/curves.png``: a run's loss and accuracy per epoch, drawn from its ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

from trainer.files import read_jsonl


def plot_curves(metrics_path: Path, out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A torn last line (a process killed while appending) is skipped with a warning.
    keys = ("epoch", "train_loss", "val_loss", "val_acc")
    records = [record for record in read_jsonl(metrics_path) if all(key in record for key in keys)]
    if not records:
        return
    epochs = [record["epoch"] + 1 for record in records]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train_loss")
    loss_axis.plot(epochs, [r["val_loss"] for r in records], marker="o", label="val_loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot(epochs, [r["val_acc"] for r in records], color="tab:green", marker="s",
                       label="val_acc")
    accuracy_axis.set_ylabel("val_acc")
    accuracy_axis.set_ylim(0, 1)
    handles = loss_axis.get_legend_handles_labels()[0] + accuracy_axis.get_legend_handles_labels()[0]
    loss_axis.legend(handles, [h.get_label() for h in handles], loc="center right")
    loss_axis.set_title(f"{metrics_path.parent.name}: loss and accuracy per epoch")
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
