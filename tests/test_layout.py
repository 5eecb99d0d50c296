"""Dependency direction: the launcher starts the trainer by module name and never imports it;
the trainer knows nothing of the launcher (it reads the environment contract only).

Two edges are allowed: the launcher reads ``trainer.options``, the trainer's schema and the allowed
values of its keys, so a bad value is rejected before anything starts; and ``trainer.contract``,
the run directory's file names and the environment both sides read. Both import only the
standard library.
"""

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SHARED_VOCABULARY = ("trainer.options", "trainer.contract")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def imported_by_package(package: str) -> set[str]:
    return set().union(*(imported_modules(path) for path in Path(REPO, package).rglob("*.py")))


@pytest.mark.parametrize(("package", "forbidden"), [("launcher", "trainer"), ("trainer", "launcher")])
def test_no_imports_across(package, forbidden):
    crossing = {name for name in imported_by_package(package)
                if name.split(".")[0] == forbidden and name not in SHARED_VOCABULARY}
    assert not crossing


@pytest.mark.parametrize("module", SHARED_VOCABULARY)
def test_the_shared_vocabulary_imports_only_the_standard_library(module):
    path = Path(REPO, *module.split(".")).with_suffix(".py")
    assert {name.split(".")[0] for name in imported_modules(path)} <= set(sys.stdlib_module_names)
