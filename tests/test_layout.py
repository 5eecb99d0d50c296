"""Dependency direction: the launcher starts the trainer by module name and never imports it;
the trainer knows nothing of the launcher (it reads the environment contract only)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO


def imported_top_level_packages(package: str) -> set[str]:
    names = set()
    for path in Path(REPO, package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("package", "forbidden"), [("launcher", "trainer"), ("trainer", "launcher")])
def test_no_imports_across(package, forbidden):
    assert forbidden not in imported_top_level_packages(package)
