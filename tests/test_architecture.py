"""The package's structure: the import-linter layers, no import cycle, modules and functions a reader can hold."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "convzoo"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts over the package found in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    config = Path(__file__).resolve().parents[1] / "pyproject.toml"
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], env=env, cwd=src,
                          capture_output=True, text=True, timeout=120)


def test_the_layers_contract_is_kept() -> None:
    result = lint_imports(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_layers_contract_breaks_when_a_cycle_is_introduced(tmp_path: Path) -> None:
    """A lower module importing a higher one (here, inside a function) fails the contract."""
    shutil.copytree(PACKAGE, tmp_path / "convzoo", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "convzoo" / "config.py"
    config.write_text(config.read_text() + "\n\ndef _late() -> None:\n    from . import train  # noqa: F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout.upper()
    assert "convzoo.config -> convzoo.train" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_among_the_modules() -> None:
    """Counting imports inside functions; a package's ``__init__`` importing its own modules is not a cycle
    unless a module imports the package back."""
    graph = grimp.build_graph("convzoo", cache_dir=None)
    assert _cycles(graph) == []


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {lines} lines"


def _contract_layers() -> list[set[str]]:
    """The layers of the import-linter contract in pyproject.toml, top first, as sets of module names."""
    import tomllib

    config = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return [{name.strip().removeprefix("convzoo.") for name in layer.split("|")} for layer in contract["layers"]]


def _page_layers() -> list[set[str]]:
    """The layers of docs/architecture.md's table, top first: the modules named in backticks in its second column."""
    import re

    page = (SRC.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", page, flags=re.MULTILINE)
    assert [int(n) for n, _ in rows] == list(range(1, len(rows) + 1)), "the layers are numbered 1, 2, ..."
    return [{name.rstrip("/") for name in re.findall(r"`([^`]+)`", modules)} for _, modules in rows]


def test_the_architecture_page_shows_the_contracts_layers() -> None:
    assert _page_layers() == _contract_layers()


def test_every_module_of_the_package_is_on_the_architecture_page_and_in_the_contract() -> None:
    top_level = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                 if (p.suffix == ".py" and not p.name.startswith("__")) or (p / "__init__.py").is_file()}
    assert top_level == set().union(*_contract_layers())
