"""torchvision models and data sets, instantiated from the shipped YAML the way the trainer does."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from tests.composing import composed
from tests.images import make_image_folder, write_mnist_raw

# torchvision (with the torch._dynamo it imports: about 3 s here) is imported by the tests that
# use it, not when pytest collects this module in every worker; and they share one worker.
pytestmark = pytest.mark.xdist_group("tests.test_vision")


def torchvision_model(name: str, num_classes: int, weights: str | None = None) -> torch.nn.Module:
    from trainer.vision import torchvision_model as build  # imports torchvision

    return build(name, num_classes, weights)


def config(*overrides: str) -> DictConfig:
    return composed(*overrides, hydra=False)


def data_module(*overrides: str):
    return instantiate(config(*overrides).data.dataset)


@pytest.fixture
def network_attempts(monkeypatch) -> list[tuple]:
    """Every name lookup or connection fails at once and is recorded (no hanging DNS either)."""
    attempts: list[tuple] = []

    def refuse(*args):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def vision_log(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="trainer")
    return caplog


# --- configs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "num_classes"),
                         [("synthetic", 8), ("mnist", 10), ("cifar10", 10), ("image_folder", None)])
def test_every_data_config_has_num_classes_for_the_model(data, num_classes):
    cfg = config(f"data={data}", "model=resnet18")
    assert cfg.data.num_classes == num_classes
    assert cfg.model.num_classes == num_classes


# --- image folder ----------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images", classes=3, per_class=8, size=32)


def image_folder(root: Path, *overrides: str):
    return data_module("data=image_folder", f"data.root={root}", "data.image_size=32",
                       "data.resize_size=32", *overrides)


def test_image_folder_val_transform_is_the_normalised_image(images, vision_log):
    module = image_folder(images, "data.num_classes=3")
    module.prepare()
    train, val = module.datasets()
    assert train.classes == val.classes == ["class_0", "class_1", "class_2"]
    assert (len(train), len(val)) == (3 * 8, 3 * 2)
    assert "data cache present" in vision_log.text
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for index, (path, label) in enumerate(val.samples):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        expected = (torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std
        x, y = val[index]
        assert y == label == int(Path(path).parent.name.removeprefix("class_"))
        torch.testing.assert_close(x, expected)
        torch.testing.assert_close(val[index][0], x, rtol=0, atol=0)


def test_image_folder_train_transform_is_random_and_keeps_the_shape(images):
    train, val = image_folder(images, "data.num_classes=3").datasets()
    torch.manual_seed(0)
    first, second = train[0][0], train[0][0]
    assert first.shape == second.shape == val[0][0].shape == (3, 32, 32)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("num_classes", ["null", "5"])
def test_image_folder_wrong_num_classes_names_the_key_and_the_folders(images, num_classes):
    module = image_folder(images, f"data.num_classes={num_classes}")
    module.prepare()
    with pytest.raises(ValueError, match="data.num_classes") as error:
        module.datasets()
    assert "set data.num_classes=3" in str(error.value)
    assert "class_0, class_1, class_2" in str(error.value)


def test_image_folder_splits_with_different_classes_fail(images):
    (images / "val" / "class_2").rename(images / "val" / "class_9")
    with pytest.raises(ValueError, match="only in train: class_2; only in val: class_9"):
        image_folder(images, "data.num_classes=3").datasets()


def test_image_folder_missing_directory_names_the_path(tmp_path):
    module = image_folder(tmp_path / "nowhere", "data.num_classes=3")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / "train")):
        module.prepare()


# --- MNIST, CIFAR10 --------------------------------------------------------------------------------


def test_mnist_present_cache_is_used_without_network(tmp_path, network_attempts, vision_log):
    train_labels, test_labels = write_mnist_raw(tmp_path, train=40, test=12)
    module = data_module("data=mnist", f"data.root={tmp_path}", "data.download=true")
    module.prepare()
    train, val = module.datasets()
    assert network_attempts == []
    assert f"data cache present: {tmp_path / 'MNIST' / 'raw'}" in vision_log.text
    assert (len(train), len(val)) == (40, 12)
    assert train.targets.tolist() == train_labels.tolist()
    assert val.targets.tolist() == test_labels.tolist()
    x, y = train[0]
    assert x.shape == (3, 28, 28) and y == train_labels[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grayscale copied to 3 channels


def test_mnist_missing_files_are_downloaded_by_prepare_only(tmp_path, network_attempts, vision_log):
    module = data_module("data=mnist", f"data.root={tmp_path}", "data.download=true")
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        module.datasets()
    assert network_attempts == []
    with pytest.raises(RuntimeError, match="Error downloading"):
        module.prepare()
    assert network_attempts, "prepare() should have tried to download (and met the test's guard)"
    assert "downloading MNIST" in vision_log.text


def test_mnist_without_download_fails_clearly(tmp_path, network_attempts):
    module = data_module("data=mnist", f"data.root={tmp_path}", "data.download=false")
    with pytest.raises(FileNotFoundError) as error:
        module.prepare()
    message = str(error.value)
    assert f"MNIST not found under {tmp_path / 'MNIST' / 'raw'}" in message
    assert "set data.download=true" in message and "train-images-idx3-ubyte" in message
    assert network_attempts == []


def test_cifar10_without_download_fails_clearly(tmp_path, network_attempts):
    module = data_module("data=cifar10", f"data.root={tmp_path}", "data.download=false")
    with pytest.raises(FileNotFoundError, match="set data.download=true") as error:
        module.prepare()
    assert f"CIFAR10 not found under {tmp_path / 'cifar-10-batches-py'}" in str(error.value)
    assert network_attempts == []


@pytest.mark.parametrize("data", ["mnist", "cifar10"])
def test_fixed_datasets_check_num_classes(tmp_path, data):
    with pytest.raises(InstantiationException, match="data.num_classes=5 but .* has 10 classes"):
        data_module(f"data={data}", f"data.root={tmp_path}", "data.num_classes=5")


# --- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_resnet18(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 1000-class resnet18 state dict (random, not downloaded) saved to a file."""
    torch.manual_seed(0)
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(state, path)
    return path, state


def test_resnet18_from_the_yaml_sizes_its_head_from_the_data():
    model = instantiate(config("model=resnet18", "data=image_folder", "data.num_classes=5").model)
    assert model.fc.out_features == 5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("wrap", ["state_dict", "checkpoint", "ddp_compiled_checkpoint"])
def test_weights_load_except_the_head_of_another_size(imagenet_resnet18, tmp_path, wrap, vision_log):
    path, saved = imagenet_resnet18
    if wrap != "state_dict":
        prefix = "module._orig_mod." if wrap == "ddp_compiled_checkpoint" else ""
        path = tmp_path / "checkpoint.pt"
        torch.save({"model": {prefix + key: value for key, value in saved.items()}, "epoch": 3}, path)
    model = torchvision_model("resnet18", num_classes=5, weights=str(path))
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (5, 512)
    for key, value in saved.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert "fc.weight [1000, 512]->[5, 512]" in vision_log.text


@pytest.mark.parametrize(("edit", "named"), [("add", "unexpected keys: extra.weight"),
                                             ("drop", "missing keys: layer1.0.conv1.weight")])
def test_weights_that_do_not_fit_raise(imagenet_resnet18, tmp_path, edit, named):
    _, saved = imagenet_resnet18
    state = dict(saved)
    if edit == "add":
        state["extra.weight"] = torch.zeros(1)
    else:
        del state["layer1.0.conv1.weight"]
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=named) as error:
        torchvision_model("resnet18", num_classes=1000, weights=str(path))
    assert str(path) in str(error.value)


def test_any_torchvision_model_name_builds():
    model = torchvision_model("mobilenet_v3_small", num_classes=3).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="model.name='resnet1' is not a torchvision model"):
        torchvision_model("resnet1", num_classes=3)
