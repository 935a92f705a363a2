"""The layout holds: imports go schemas <- privacy <- transforms <- pipeline, and privacy/
never imports Beam.

Read from the source with ``ast``, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each package may import the packages before it in this order, never one after it.
ORDER = ("schemas", "privacy", "transforms", "pipeline")
BEAM_FREE = ("schemas", "privacy")


def _modules(package: str):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), path


def _imports(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", ORDER)
def test_imports_follow_the_layer_order(package):
    allowed = set(ORDER[:ORDER.index(package) + 1])
    wrong = [f"{rel}:{line} imports {module}"
             for rel, path in _modules(package)
             for line, module in _imports(path)
             if module.split(".")[0] in ORDER and module.split(".")[0] not in allowed]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", BEAM_FREE)
def test_decisions_and_definitions_never_import_beam(package):
    wrong = [f"{rel}:{line} imports {module}"
             for rel, path in _modules(package)
             for line, module in _imports(path)
             if module.split(".")[0] == "apache_beam"]
    assert not wrong, "\n".join(wrong)


def test_transforms_top_level_holds_stages_only():
    """Every top-level module of transforms/ defines a Beam PTransform; adapters and models
    live in its subpackages."""
    folder = os.path.join(ROOT, "transforms")
    without_stage = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py") or name == "__init__.py":
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        bases = {ast.unparse(base) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                 for base in node.bases}
        if "beam.PTransform" not in bases:
            without_stage.append(name)
    assert not without_stage, f"not stages: {without_stage}"


def test_the_checks_see_lazy_imports(tmp_path):
    """A function-level import is found like a module-level one."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from apache_beam.io.filesystems import FileSystems\n")
    assert _imports(str(source)) == [(2, "apache_beam.io.filesystems")]
