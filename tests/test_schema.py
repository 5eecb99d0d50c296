"""The schema (``launcher.schema``, ``trainer.options``): conf/ and the dataclasses agree, the
rules derived from the fields allow what they should, and the trainer reads typed objects.

In-process and fast: no launcher, no ranks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from launcher.__main__ import CONFIG_DIR
from launcher.rules import schema_rules
from launcher.schema import LAUNCH_MODES, Config
from launcher.validation import IF_SET, KEYS
from tests.composing import composed
from trainer.improvement import Improvement
from trainer.options import (
    Best,
    DataLoaderOptions,
    ImprovementMode,
    MatmulPrecision,
    TrainerMode,
    WorkerStartMethod,
)

# (YAML file, the node in it, the dataclass that is its schema).
COVERED = [
    ("config.yaml", "", Config),
    ("data/_loader.yaml", "", DataLoaderOptions),
    *((f"launcher/{name}.yaml", "", mode) for name, mode in LAUNCH_MODES.items()),
]
NOT_SCHEMA = ("defaults", "hydra")  # Hydra's own keys in config.yaml
_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*)(?:#\s*(?P<comment>.*))?$")


def comments(path: Path) -> dict[str, str]:
    """Each dotted key's trailing comment, with the comment lines that continue it below."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = None
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continuation = re.fullmatch(r" {10,}#\s*(.*)", line)
            if continuation and last is not None:
                found[last] += "; " + continuation.group(1)
            continue
        indent = len(match["indent"])
        stack = [(level, key) for level, key in stack if level < indent]
        key = ".".join([*(name for _, name in stack), match["key"]])
        stack.append((indent, match["key"]))
        last = key if match["comment"] else None
        if match["comment"]:
            found[key] = match["comment"].strip()
    return found


def fields_of(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    """Every leaf field by its dotted key, with its type."""
    hints = typing.get_type_hints(cls)
    leaves: dict[str, tuple[dataclasses.Field, Any]] = {}
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            leaves.update(fields_of(hints[item.name], f"{prefix}{item.name}."))
        leaves[prefix + item.name] = (item, hints[item.name])
    return leaves


@pytest.mark.parametrize(("file", "node", "schema"), COVERED, ids=[file for file, _, _ in COVERED])
def test_every_key_in_conf_is_a_field_with_its_doc_and_default(file, node, schema):
    path = CONFIG_DIR / file
    written = yaml.safe_load(path.read_text())
    written = {key: value for key, value in written.items() if key not in NOT_SCHEMA}
    in_yaml = OmegaConf.to_container(OmegaConf.create(written))
    # The defaults of the schema and the YAML's values, each converted to the field's type
    # (precision: 32 is "32", an enum by its name).
    defaults = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
    converted = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), written), enum_to_str=True)
    assert converted == defaults
    said = comments(path)
    for key, (item, _) in fields_of(schema).items():
        doc = item.metadata["doc"]
        assert doc and doc == doc.strip(), key
        if key in said:
            assert said[key] == doc, key
        assert OmegaConf.select(OmegaConf.create(in_yaml), key, default="absent") != "absent", \
            f"{key}: a field without a key in {file}"
    # The same keys in the same order (Hydra's messages and --help list them as written).
    assert list(written) == [item.name for item in dataclasses.fields(schema)]


def test_the_launch_modes_are_named_by_their_files():
    assert sorted(LAUNCH_MODES) == sorted(path.stem for path in (CONFIG_DIR / "launcher").glob("*.yaml"))
    for name, mode in LAUNCH_MODES.items():
        assert mode().name == name


def test_every_schema_field_has_its_derived_rule():
    derived = {**schema_rules(Config, ""), **schema_rules(DataLoaderOptions, "data.")}
    for mode in LAUNCH_MODES.values():
        derived.update(schema_rules(mode, "launcher."))
    table = {**KEYS, **IF_SET}
    assert sorted(set(derived) - set(table)) == []
    assert {key: table[key].allowed for key in derived} == {key: rule.allowed for key, rule in derived.items()}
    # A key that several launch modes have is one rule.
    for key in derived:
        if key.startswith("launcher."):
            texts = {schema_rules(mode, "launcher.")[key].allowed for mode in LAUNCH_MODES.values()
                     if key in schema_rules(mode, "launcher.")}
            assert len(texts) == 1, (key, texts)


@pytest.mark.parametrize("schema", [Config, DataLoaderOptions, *LAUNCH_MODES.values()])
def test_every_default_is_allowed_by_its_rule(schema):
    defaults = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
    for key, rule in schema_rules(schema, "").items():
        value = OmegaConf.select(OmegaConf.create(defaults), key)
        assert rule.accepts(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value), key


NAN, INF = math.nan, math.inf
# (key, values its derived rule allows, values it refuses, the words after "allowed: ").
RULES = [
    ("trainer.mode", ["train", "eval"], ["predict", "TRAIN", 1, None], "train, eval"),
    ("trainer.epochs", [1, 6], [0, -1, 1.5, True, "6", None], "an integer >= 1"),
    ("trainer.log_every_steps", [0, 10], [-1, "abc", 0.5], "an integer >= 0"),
    ("trainer.precision", [32, "32", "bf16", "fp16"], [16, "fp32", True, None], "32, bf16, fp16"),
    ("trainer.matmul_precision", ["highest", "high", "medium"], ["low", None], "highest, high, medium"),
    ("trainer.clip_grad_norm", [None, 0.5, 1], [0, -1, NAN, INF, True, "1"], "null or a number > 0"),
    ("trainer.progress_bar", ["auto", True, False], [1, 0, "true", "sometimes"], "auto, true, false"),
    ("trainer.compile", [True, False], [1, "yes", None], "true, false"),
    ("trainer.early_stop.monitor", [None, "val_loss", "val_f1"], ["loss", "", 3],
     "null or a validation metric such as val_loss or val_acc"),
    ("trainer.early_stop.mode", ["auto", "min", "max"], ["MIN", "up", 1, None], "auto, min, max"),
    ("trainer.early_stop.min_delta", [0, 0.5], [-0.1, NAN], "a number >= 0"),
    ("save.keep_last", [1, 3], [0, None], "an integer >= 1"),
    ("save.best.mode", ["auto", "min", "max"], ["lowest"], "auto, min, max"),
    ("data.root", ["data", "/x y"], ["", "  ", None, 3], "a non-empty string"),
    ("data.cache_scope", ["global", "node"], ["x", "Global", 1, None], "global, node"),
    ("data.prepare_timeout", [1, 86400, 1.5], [0, 0.5, NAN, INF, True], "seconds, a number >= 1"),
    ("data.num_workers", [0, 4], [-1, 1.0], "an integer >= 0"),
    ("data.worker_start_method", ["fork", "forkserver", "spawn"], ["thread"], "fork, forkserver, spawn"),
    ("data.num_classes", [None, 1, 10], [0, 1.0, True], "null or an integer >= 1"),
    ("nodes", ["auto", 1, 8], [0, "one", None], "auto or an integer >= 1"),
    ("gpus", ["auto", 2, [4, 2]], [0, [], [0], "all"], "auto or an integer >= 1 or a list of per-node counts like [4,2]"),
    ("master_port", ["auto", 1, 65535], [0, 65536, "29500"], "auto or an integer in 1-65535"),
    ("master_addr", ["auto", "10.0.0.1", "node-1"], ["", "a b", None], "auto or a host name or address"),
    ("local_addr", ["auto", "10.0.0.2"], ["", 3], "auto or a host name or address"),
    ("slurm_task", ["rank", "node"], ["job"], "rank, node"),
    ("socket_ifname", ["auto", None, "eth0"], ["", 3], "null or auto or interface names like eth0 or eth0,ib0"),
    ("backend", ["auto", "nccl", "gloo"], ["mpi"], "auto, nccl, gloo"),
    ("init_timeout", [1, 120], [0, 0.5, NAN, INF], "whole seconds, an integer >= 1"),
    ("collective_timeout", [1, 300, 1.5], [0.5, NAN, INF], "seconds, a number >= 1"),
    ("resume", [None, "auto", "/x/last.pt"], ["", 3], "null or auto or the path of a checkpoint"),
    ("script", [None, "train.py"], ["", " ", 3], "null or a non-empty string"),
    ("script_args", [[], ["--lr", 0.1], "--lr 0.1"], [[["a"]], 3, None],
     "a list of arguments, or one string split as a shell would"),
    ("checkpoint", [None, "/x/last.pt"], ["", "  ", 3], "null or the path of a checkpoint"),
    ("metrics", ["auto", [], ["accuracy", "mypkg.f1"]], ["accuracy", ["precision"], None],
     "auto or a list of metrics (accuracy or dotted names of functions), [] for none"),
    ("task", [None, "mypkg.step"], ["step", ""], "null or a module and a name in it, such as mypkg.step"),
    ("console_ranks", ["all", 0, [0, 3]], [-1, ["a"], "none"], "all or a rank >= 0 or a list of ranks like [0,3]"),
    ("slurm.time", [1, 60], [0, 1.5, "60"], "minutes, an integer >= 1"),
    ("slurm.mem_gb", [None, 0.5, 64], [0, -1, True], "null or a number of GB > 0"),
    ("slurm.partition", [None, "gpu"], ["", "a\nb", 3], "null or a non-empty single-line string"),
    ("slurm.signal", ["USR2@90"], ["TERM", "USR2@", "USR1@90", 90],
     "USR2@SECONDS (submitit's time-limit signal, e.g. USR2@90)"),
    ("slurm.extra", [{}, {"exclusive": True}], [3, [], None], "a mapping of extra sbatch options, e.g. {exclusive: true}"),
    ("slurm.setup", [[], ["module load cuda"]], ["module load cuda", [3]], None),
    ("slurm.gpus_per_node", ["auto", 0, 4], [-1, None], "auto or an integer >= 0"),
    ("slurm.cpus_per_task", ["auto", 1, 8], [0, -1, None, "8", True, 1.5], "auto or an integer >= 1"),
    ("launcher.name", ["torchrun", "mp_spawn", "slurm"], ["nope"], "torchrun, mp_spawn, slurm"),
    ("launcher.rdzv", ["static", "c10d"], ["etcd"], "static, c10d"),
    ("launcher.rdzv_endpoint", [None, "host:29400", "[::1]:1"], ["nohostport", 123, "h:0"],
     "null or HOST:PORT with a port in 1-65535"),
    ("launcher.monitor_interval_s", [0.1, 1], [0, -1, NAN], "seconds, a number > 0"),
    ("launcher.start_method", ["forkserver", "spawn"], ["fork"], "forkserver, spawn"),
    ("launcher.shutdown_grace_s", [0, 5], [-1, 0.5, "abc"], "whole seconds, an integer >= 0"),
    ("launcher.local_rank_arg", [True, False], ["yes"], "true, false"),
]


@pytest.mark.parametrize(("key", "allowed", "refused", "words"), RULES, ids=[case[0] for case in RULES])
def test_derived_rules(key, allowed, refused, words):
    rule = {**KEYS, **IF_SET}[key]
    assert [value for value in allowed if not rule.accepts(value)] == []
    assert [value for value in refused if rule.accepts(value)] == []
    if words is not None:
        assert rule.allowed == words


def test_every_derived_key_has_a_case():
    derived = set(schema_rules(Config, "")) | set(schema_rules(DataLoaderOptions, "data."))
    cased = {key for key, *_ in RULES}
    # Booleans and the same kind of rule as a key with a case: each kind is tested once.
    same_kind = {key for key in derived if KEYS[key].allowed in {"true, false"}
                 | {KEYS[case].allowed for case in cased if case in KEYS}}
    assert sorted(derived - cased - same_kind) == []


def resolved(*overrides: str) -> DictConfig:
    """The run's config as the trainer reads it: composed, every interpolation resolved."""
    cfg = composed(*overrides, hydra=False)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def test_the_trainer_reads_typed_objects_from_the_resolved_config():
    from trainer.train import Options

    options = Options.from_config(resolved())
    assert options.trainer.mode is TrainerMode.train and options.trainer.epochs == 6
    assert options.trainer.precision == "32"  # written 32: the str the schema says
    assert options.trainer.matmul_precision is MatmulPrecision.highest
    assert options.trainer.early_stop.patience == 3 and options.trainer.early_stop.monitor is None
    assert options.save.best == Best(None, ImprovementMode.auto)
    assert options.data.num_classes == 8  # the synthetic data set's, through an interpolation
    assert options.data.worker_start_method is WorkerStartMethod.fork
    assert isinstance(options.data.prepare_timeout, float) and options.data.prepare_timeout == 86400

    vision = Options.from_config(resolved("model=resnet18", "data=cifar10", "trainer.precision=bf16",
                                          "save.best.monitor=val_acc", "data.worker_start_method=spawn"))
    assert (vision.data.batch_size, vision.data.num_classes) == (128, 10)  # image_size etc. are not the loader's
    assert vision.trainer.precision == "bf16" and vision.data.worker_start_method is WorkerStartMethod.spawn
    best = Improvement.from_options(vision.save.best)
    assert best is not None and best.mode is ImprovementMode.max


def test_a_key_the_run_config_lacks_is_its_default_and_a_wrong_type_is_refused():
    from trainer.train import InvalidOptions, Options

    cfg = resolved()
    del cfg.trainer["compile"]
    assert Options.from_config(cfg).trainer.compile is False
    cfg.trainer.mode = "predict"
    with pytest.raises(InvalidOptions, match=r"^trainer\.mode='predict': "):
        Options.from_config(cfg)


@pytest.mark.parametrize(("block", "key", "value"), [
    ("trainer", "epochs", "zero"),
    ("trainer", "matmul_precision", "fp9"),
    ("trainer.early_stop", "patience", "x"),
    ("data", "worker_start_method", "thread"),
    ("trainer", "epochs", 0),
    ("trainer", "compile", "yes"),
    ("trainer.early_stop", "monitor", "loss"),
    ("data", "prepare_timeout", float("nan")),
])
def test_the_trainer_run_by_hand_refuses_an_edited_config_in_one_line(tmp_path, capsys, block, key, value):
    """``python -m trainer RUN_DIR/config.yaml`` by hand (e.g. as the rank under a user's own
    torchrun) on a config edited after the launcher checked it: exit 2, one line naming the key."""
    from trainer.train import main

    cfg = resolved()
    OmegaConf.update(cfg, f"{block}.{key}", value)
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid config {path}: {block}.{key}={value!r}: "), err
    assert err.count("\n") == 1, err
