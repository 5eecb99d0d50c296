"""The in-process compose of the tests (`tests.composing`) gives exactly Hydra's config."""

import pytest
from omegaconf import OmegaConf

from tests.composing import composed, config_file_sources


def plain(*overrides: str, multirun: bool = False) -> dict:
    config = OmegaConf.to_container(composed(*overrides, multirun=multirun))
    assert isinstance(config, dict)
    return config


@pytest.mark.parametrize(("overrides", "multirun"), [
    ((), False),
    (("model=resnet18", "data=cifar10", "trainer.epochs=3", "+model.freeze=[conv1]"), False),
    (("launcher=slurm", "nodes=2", "slurm.partition=debug", "~trainer.epochs"), False),
    (("hydra/launcher=slurm", "optim.lr=0.1,0.2", "slurm.cpus_per_task=1"), True),
], ids=["defaults", "groups-and-values", "slurm", "sweep"])
def test_reading_each_file_once_composes_what_hydra_composes(monkeypatch, overrides, multirun):
    shared = [plain(*overrides, multirun=multirun) for _ in range(2)]  # the second from what the first read
    for source_type in config_file_sources():
        monkeypatch.setattr(source_type, "load_config", source_type.load_config.__wrapped__)
    assert shared[0] == shared[1] == plain(*overrides, multirun=multirun)


def test_a_rewritten_config_file_is_read_again(tmp_path):
    from hydra import compose, initialize_config_dir

    (tmp_path / "config.yaml").write_text("value: 1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert compose("config").value == 1
        (tmp_path / "config.yaml").write_text("value: 22\n")
        assert compose("config").value == 22
