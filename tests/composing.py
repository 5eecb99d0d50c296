"""The config as ``python -m launcher`` composes it, made in this process with Hydra's compose API.

The fast tier composes the config a few hundred times (one rejection case per key). Each compose
reads and parses the same 18 files again (ours and Hydra's own), about 40 % of its time:
`reading_each_config_file_once` keeps what a config source read, keyed by the file and its
modification, and hands Hydra a copy each time. Hydra still builds the defaults list, merges and
applies the overrides as it does for the command line; only the reading of unchanged files is
shared (``test_composing.py`` checks the result is the same).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult, ConfigSource
from hydra.types import RunMode
from omegaconf import DictConfig

from launcher.__main__ import CONFIG_DIR


def composed(*overrides: str, hydra: bool = True, multirun: bool = False) -> DictConfig:
    """The config of ``python -m launcher [-m] OVERRIDES`` (with Hydra's node unless ``hydra`` is
    false, as the trainer reads it)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="launcher"):
        if not multirun:
            return compose("config", overrides=list(overrides), return_hydra_config=hydra)
        hydra_app = GlobalHydra.instance().hydra
        assert hydra_app is not None  # set by initialize_config_dir
        return hydra_app.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN)


def _file_key(source: ConfigSource, config_path: str) -> tuple[Any, ...]:
    """What a loaded file is known by: the file, and its change time and size (a test may write a
    config file and rewrite it); Hydra's packaged configs do not change."""
    if source.scheme() == "file":
        full_path = os.path.realpath(os.path.join(source.path, source._normalize_file_name(config_path)))
        status = os.stat(full_path)
        return full_path, status.st_mtime_ns, status.st_size
    return type(source), source.path, config_path


def config_file_sources() -> list[type[ConfigSource]]:
    """Hydra's classes that read config files: its plugin scan imports them anew, so they are
    taken from its registry after the scan, not imported."""
    Plugins.instance()
    return [SourcesRegistry.instance().resolve(scheme) for scheme in ("file", "pkg")]


@contextmanager
def reading_each_config_file_once() -> Iterator[None]:
    """While inside, Hydra's file and package config sources parse each file once."""
    loaded: dict[tuple[Any, ...], ConfigResult] = {}
    source_types = config_file_sources()

    def sharing(original: Callable[[Any, str], ConfigResult]) -> Callable[[Any, str], ConfigResult]:
        @functools.wraps(original)  # __wrapped__: the original, to restore (and for test_composing.py)
        def load_config(source: ConfigSource, config_path: str) -> ConfigResult:
            try:
                key = _file_key(source, config_path)
            except OSError:  # not there: Hydra says so
                return original(source, config_path)
            if key not in loaded:
                loaded[key] = original(source, config_path)
            return copy.deepcopy(loaded[key])  # Hydra changes what it is given

        return load_config

    for source_type in source_types:
        source_type.load_config = sharing(source_type.load_config)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for source_type in source_types:
            source_type.load_config = source_type.load_config.__wrapped__  # type: ignore[attr-defined]
