"""torchvision models and data sets in real distributed runs: generated images, offline MNIST."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import assert_ok
from tests.images import make_image_folder, write_mnist_raw

pytestmark = pytest.mark.slow  # real jobs: several processes each

TWO_RANKS = ["launcher=mp_spawn", "gpus=2"]


def test_resnet18_trains_on_an_image_folder_in_channels_last(launcher, tmp_path):
    images = make_image_folder(tmp_path / "images", classes=2, per_class=32, size=32)
    launch = launcher.run(*TWO_RANKS, "model=resnet18", "data=image_folder", f"data.root={images}",
                          "data.num_classes=2", "data.image_size=32", "data.resize_size=32",
                          "data.batch_size=8", "optim=adamw", "trainer.epochs=3",
                          "trainer.channels_last=true", run_dir=tmp_path / "run")
    assert_ok(launch)
    weights = torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    conv = weights["conv1.weight"]
    assert conv.shape == (64, 3, 7, 7) and weights["fc.weight"].shape == (2, 512)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous(), \
        "the model was not in channels_last"
    records = [json.loads(line) for line in (launch.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records] == [4, 8, 12]  # 64 images / (2 ranks x 8)
    assert records[-1]["train_loss"] < records[0]["train_loss"], records


def test_mnist_is_prepared_by_rank_0_before_any_rank_reads_it(launcher, tmp_path):
    """The download path with the network off: the files sit in the cache, as a finished
    download leaves them; the caching rank checks them while the others wait at the barrier."""
    root = tmp_path / "data"
    write_mnist_raw(root, train=256, test=64)
    launch = launcher.run(*TWO_RANKS, "model=resnet18", "data=mnist", f"data.root={root}",
                          "data.dataset._target_=tests.plugins.CountingMNIST", "trainer.epochs=1",
                          run_dir=tmp_path / "run")
    assert_ok(launch)
    calls = [json.loads(line) for line in (root / "calls").read_text().splitlines()]
    prepares = [c for c in calls if c["what"] == "prepare_end"]
    assert [c["rank"] for c in prepares] == [0], calls
    reads = [c for c in calls if c["what"] == "datasets"]
    assert sorted(c["rank"] for c in reads) == [0, 1]
    assert all(read["t"] >= prepares[0]["t"] for read in reads), "a rank read before rank 0 prepared"
    assert launch.summary()["global_step"] == 2  # 256 samples / (2 ranks x 64)
    assert "data cache present" in (launch.run_dir / "train.log").read_text()
