"""The user's own model, data, loss, metrics and step in the built-in trainer, one override each.

The user package is written by each test into its temporary directory (outside the repository)
and imported from the working directory, as a user's ``mypkg.py`` would be.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, assert_ok, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # real jobs: several processes each

USER_PACKAGE = textwrap.dedent('''
    import os
    from pathlib import Path

    import torch
    from torch import nn
    from torch.utils.data import Dataset, TensorDataset


    class Classifier(nn.Module):
        def __init__(self, inputs: int, classes: int, width: int = 16):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, classes))

        def forward(self, x):
            return self.layers(x)


    def features(n, seed):
        return torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))


    class Blobs:
        """A data module with prepare(): it counts its calls in a file beside the cache."""

        num_classes = 4

        def __init__(self, root: str = "data"):
            self.marker = Path(root) / "prepared"

        def prepare(self):
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            with self.marker.open("a") as file:
                file.write(os.environ["RANK"] + "\\n")

        def datasets(self):
            x = features(700, 0)
            y = x[:, :4].argmax(dim=1)
            return TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:])


    def regression():
        x = features(600, 1)
        return TensorDataset(x[:500], x[:500, :3].sum(1, keepdim=True)), TensorDataset(x[500:], x[500:, :3].sum(1, keepdim=True))


    class Records(Dataset):
        def __init__(self, n, seed):
            self.x = features(n, seed)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, index):
            return {"features": self.x[index], "label": self.x[index, :4].argmax()}


    def records():
        return Records(480, 2), Records(130, 3)


    def step(model, batch):
        output = model(batch["features"])
        loss = nn.functional.cross_entropy(output, batch["label"])
        return loss, {"hits": (output.argmax(1) == batch["label"]).sum()}


    class OwnLoss(Classifier):
        def forward(self, features, label):
            return {"loss": nn.functional.cross_entropy(self.layers(features), label)}


    def top2(output, target):
        return (output.topk(2, dim=1).indices == target[:, None]).any(dim=1).sum()
''')

CLASSIFIER = ["model=mypkg.Classifier", "+model.inputs=12", "+model.classes=4", "data=mypkg.Blobs",
              "data.batch_size=16", "trainer.curves=false"]


@pytest.fixture
def user_package(launcher):
    (launcher.workdir / "mypkg.py").write_text(USER_PACKAGE)
    return launcher


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_own_classifier_in_one_override_each(user_package):
    launch = user_package.run(*CLASSIFIER, "+model.width=24", "trainer.epochs=3", "gpus=2",
                              "metrics=[accuracy,mypkg.top2]", "optim=torch.optim.Adam", "optim.lr=0.01",
                              "sched=torch.optim.lr_scheduler.StepLR", "+sched.scheduler.step_size=1",
                              "+sched.scheduler.gamma=0.5")
    assert_ok(launch)
    summary = launch.summary()
    assert summary["val_acc"] > 0.5 and summary["val_top2"] >= summary["val_acc"]
    assert summary["lr"] == 0.01, "optim.lr did not reach torch.optim.Adam"
    lrs = [json.loads(line)["lr"] for line in (launch.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.005, 0.0025, 0.00125]), f"StepLR per epoch: {lrs}"
    state = torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["layers.0.weight"].shape == (24, 12), "+model.width did not reach the constructor"
    prepared = (user_package.workdir / "data" / "prepared").read_text().split()
    assert prepared == ["0"], f"prepare() ran on ranks {prepared}, not once on the caching rank"
    assert "val_top2" in json.loads((launch.run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_regression_with_another_loss_and_no_metrics(user_package):
    launch = user_package.run("model=mypkg.Classifier", "+model.inputs=12", "+model.classes=1",
                              "data=mypkg.regression", "loss=torch.nn.MSELoss", "metrics=[]",
                              "trainer.epochs=2", "gpus=2")
    assert_ok(launch)
    summary = launch.summary()
    assert "val_acc" not in summary and summary["val_loss"] < 3.0, summary
    assert "val_acc" not in launch.stderr


def test_dict_batches_through_a_task_and_a_model_that_returns_its_loss(user_package):
    common = ["+model.inputs=12", "+model.classes=4", "data=mypkg.records", "trainer.epochs=2", "gpus=2",
              "trainer.curves=false"]
    stepped = user_package.run("model=mypkg.Classifier", "task=mypkg.step", *common,
                               run_dir=user_package.workdir / "task")
    assert_ok(stepped)
    own_loss = user_package.run("model=mypkg.OwnLoss", "task=trainer.tasks.model_loss", *common,
                                run_dir=user_package.workdir / "own_loss")
    assert_ok(own_loss)
    # The same parameters, data and order: the two forms train the very same model.
    assert own_loss.summary()["weights_sha256"] == stepped.summary()["weights_sha256"]
    assert 0.0 <= stepped.summary()["val_hits"] <= 1.0 and "val_acc" not in stepped.summary()


def test_a_metric_over_three_ranks_is_exactly_the_single_process_value(user_package):
    trained = user_package.run(*CLASSIFIER, "trainer.epochs=1", "gpus=2", "metrics=[accuracy,mypkg.top2]",
                               run_dir=user_package.workdir / "trained")
    assert_ok(trained)
    checkpoint = trained.run_dir / "checkpoints" / "last.pt"
    values = {}
    for ranks in (1, 3):  # 200 validation samples: shards of 67, 67 and 66
        evaluated = user_package.run(*CLASSIFIER, "trainer.mode=eval", f"checkpoint={checkpoint}",
                                     f"gpus={ranks}", "metrics=[accuracy,mypkg.top2]",
                                     run_dir=user_package.workdir / f"eval{ranks}")
        assert_ok(evaluated)
        values[ranks] = evaluated.summary()
    for key in ("val_top2", "val_acc"):
        assert values[3][key] == values[1][key] == trained.summary()[key], key


def test_kill_and_resume_with_a_user_task_is_exact(user_package, tmp_path):
    common = ["model=tests.plugins.FaultyMLP", "+model.in_features=12", "+model.num_classes=4",
              "data=mypkg.records", "task=mypkg.step", "trainer.epochs=2", "save.every_steps=2",
              "launcher=mp_spawn", "data.batch_size=32", "trainer.curves=false"]
    reference = user_package.run(*common, run_dir=tmp_path / "reference")
    assert_ok(reference)
    run_dir, marker = tmp_path / "interrupted", tmp_path / "fault_marker"
    fault = ["+model.fault_step=11", "+model.action=kill_job", f"+model.marker={marker}"]
    killed = user_package.run(*common, *fault, run_dir=run_dir)
    assert killed.returncode == -9, f"the job was not killed:\n{killed.stderr[-3000:]}"
    wait_for_no_leftovers(user_package.job_ids[-1], timeout_s=15)
    resumed = user_package.run(*common, *fault, "resume=auto", run_dir=run_dir)
    assert_ok(resumed)
    assert "resumed at epoch" in resumed.stderr
    assert resumed.summary()["weights_sha256"] == reference.summary()["weights_sha256"]
    assert resumed.summary()["val_hits"] == reference.summary()["val_hits"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model=mypkg.Clasifier"], "model._target_='mypkg.Clasifier': cannot be imported: mypkg has no "
                                    "'Clasifier' (it has Blobs, Classifier,"),
        (["+model.inptus=12"], "model.inptus=12: mypkg.Classifier takes no argument 'inptus' "
                               "(it takes: inputs, classes, width)"),
        (["data=mypkg.Blobs", "+data.dataset.size=3"], "data.dataset.size=3: mypkg.Blobs takes no "
                                                       "argument 'size' (it takes: root)"),
        (["~model.classes"], "model='mypkg.Classifier': needs the argument 'classes': give it with "
                             "+model.classes=VALUE"),
        (["task=mypkg.regression"], "task='mypkg.regression': must take (model, batch)"),
        (["data=mypkg.Records"], "data.dataset._target_='mypkg.Records': is a class without datasets()"),
        (["optim=torch.optim.Adam"], "optim.lr='???': is required"),
    ],
    ids=["typo", "unexpected-argument", "data-argument", "missing-argument", "task-signature",
         "not-a-data-module", "optimizer-without-lr"],
)
def test_a_plugin_that_cannot_work_is_refused_before_start(user_package, overrides, says):
    launch = user_package.run(*CLASSIFIER, *overrides)
    assert launch.returncode == 2, launch.stderr
    assert says in launch.stderr, launch.stderr
    assert len(launch.stderr.strip().splitlines()) == 1, launch.stderr
    assert not launch.run_dir.exists(), "a refused run created its directory"


def test_dry_run_shows_the_resolved_plugins(user_package):
    launch = user_package.run(*CLASSIFIER, "+model.width=8", "optim=torch.optim.Adam", "optim.lr=0.01",
                              "loss=torch.nn.CrossEntropyLoss", "+loss.label_smoothing=0.1", "dry_run=true")
    assert launch.returncode == 0, launch.stderr
    line = next(line for line in launch.stdout.splitlines() if line.strip().startswith("trainer:"))
    assert "model=mypkg.Classifier(inputs=12, classes=4, width=8)" in line
    assert "data=mypkg.Blobs()" in line and "optim=torch.optim.Adam(lr=0.01)" in line
    assert "loss=torch.nn.CrossEntropyLoss(label_smoothing=0.1)" in line and "metrics=['accuracy']" in line
    assert not launch.run_dir.exists()


def test_own_yaml_through_config_dir_and_mlp_sized_by_the_data(user_package):
    group = user_package.workdir / "myconf" / "model"
    group.mkdir(parents=True)
    (group / "small.yaml").write_text("_target_: mypkg.Classifier\ninputs: 12\nclasses: 4\nwidth: 6\n")
    own = user_package.run("--config-dir", "myconf", "model=small", "data=mypkg.Blobs", "trainer.epochs=1")
    assert_ok(own)
    mlp = user_package.run("model=mlp", "data=mypkg.Blobs", "trainer.epochs=1",
                           run_dir=user_package.workdir / "mlp")
    assert_ok(mlp)  # in_features from a sample (12), num_classes from Blobs.num_classes (4)
    state = torch.load(mlp.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["0.weight"].shape == (128, 12) and state["4.weight"].shape == (4, 128)


def readme_quickstart() -> tuple[str, list[str]]:
    """The README's "your model and data" quickstart: its mypkg.py and its command, verbatim."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### 2. Your model and data in the built-in trainer", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    command = re.search(r"```bash\n(python -m launcher [^\n]*)\n```", section)
    assert code and command, "the README's quickstart 2 lost its mypkg.py or its command"
    return code.group(1), shlex.split(command.group(1))


def test_readme_quickstart_runs_verbatim(user_package):
    source, command = readme_quickstart()
    assert len(source.strip().splitlines()) <= 15, "the quickstart's mypkg.py grew past 15 lines"
    (user_package.workdir / "mypkg.py").write_text(source)
    assert command[:3] == ["python", "-m", "launcher"]
    launch = user_package.run(*command[3:])
    assert_ok(launch)
    summary = launch.summary()
    assert summary["val_acc"] > 0.6, summary
    state = torch.load(launch.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    width = next(arg for arg in command if arg.startswith("+model.width=")).split("=")[1]
    assert state["0.weight"].shape[0] == int(width)
