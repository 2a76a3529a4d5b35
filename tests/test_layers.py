"""The layout shows the layers: entry modules (commands) sit on top of the library and never import each
other; the library never imports a command."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline.commands.cli import COMMANDS

PACKAGE = Path(pipeline.__file__).parent
ENTRY_MODULES = sorted({module for module, _ in COMMANDS.values()} | {"pipeline.commands.cli"})


def imported_modules(path: Path) -> set[str]:
    """Every pipeline module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from pipeline import train
    return {name for name in found if name.startswith("pipeline")}


def module_path(name: str) -> Path:
    return PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")


@pytest.mark.parametrize("entry", [m for m in ENTRY_MODULES if m != "pipeline.commands.cli"])
def test_an_entry_module_imports_no_other_entry_module(entry):
    others = set(ENTRY_MODULES) - {entry}
    assert not imported_modules(module_path(entry)) & others
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {entry}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not set(loaded) & others, set(loaded) & others
    assert "tensorflow" not in loaded and "keras" not in loaded  # --help and --cfg answer before TensorFlow loads


def test_the_library_imports_no_entry_module():
    library = [
        p
        for p in PACKAGE.rglob("*.py")
        if f"pipeline.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}" not in ENTRY_MODULES
    ]
    assert len(library) > 30
    for path in library:
        wrong = imported_modules(path) & set(ENTRY_MODULES)
        assert not wrong, (path, wrong)
