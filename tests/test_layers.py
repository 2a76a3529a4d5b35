"""The package's layout is its architecture: each folder may import only the folders its row below names
(at the top of a file or inside a function), commands sit on top and never import each other, and the
library never imports a command. The table is the one statement of these rules; each folder's __init__
docstring says the same in words."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline.commands.cli import COMMANDS

PACKAGE = Path(pipeline.__file__).parent
SHARED = {"errors", "console", "safety"}  # plain modules every folder may use
ALLOWED = {  # folder (or top-level module) -> the folders and modules it may import, besides itself and SHARED
    "lecture": {"data", "plots"},
    "plots": set(),
    "config": {"data", "models", "tasks"},  # the registries' names, for the schema; models for the dry build
    "data": {"config", "plots", "tasks"},
    "models": {"config", "lecture", "training"},
    "evaluation": {"config", "tasks", "tracking"},
    "interpret": {"config", "data", "lecture", "models", "plots", "tasks"},
    "tasks": {"config", "data", "evaluation", "interpret", "models", "plots", "training"},
    "training": {"config", "data", "deploy", "lecture", "models", "plots", "sweeps", "tasks", "tracking"},
    "tracking": {"config", "data", "deploy", "models"},
    "deploy": {"data", "models", "tracking"},
    "sweeps": {"config", "data", "evaluation", "plots", "tracking"},
    "benchmarks": {"config", "data", "lecture", "models", "tasks", "training", "tracking"},
    "notebook": {"config", "tracking"},
    "errors": set(),
    "console": set(),
    "safety": set(),
    "commands": {"*"},
}
LIBRARIES = {  # third-party packages that only these folders import
    "mlflow": {"tracking", "sweeps", "commands"},
    "hydra": {"config", "commands"},  # the library takes plain Specs and a JobPlace (config.spec)
    "omegaconf": {"config", "commands"},
}


def area(module: str) -> str:
    """pipeline.data.sources -> data; pipeline.errors -> errors; pipeline -> pipeline."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function; `from pipeline import x` as pipeline.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "pipeline":
                found |= {f"pipeline.{alias.name}" for alias in node.names}
    return found


def module_name(path: Path) -> str:
    return ".".join(("pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_folder_and_module_has_a_row():
    areas = {area(module_name(p)) for p in FILES}
    assert areas == set(ALLOWED), areas ^ set(ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_file_imports_only_what_its_folder_may(path):
    here = area(module_name(path))
    allowed = ALLOWED[here] | SHARED | {here}
    for name in imports(path):
        top = name.split(".")[0]
        if top == "pipeline" and name != "pipeline":
            assert "*" in allowed or area(name) in allowed, f"{path.relative_to(PACKAGE)} imports {name}"
        elif top in LIBRARIES:
            assert here in LIBRARIES[top], f"{path.relative_to(PACKAGE)} imports {name}: only {LIBRARIES[top]} may"


def test_every_folder_says_what_it_holds_and_may_import():
    for folder in sorted({p.parent for p in FILES if p.parent != PACKAGE}):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert len(doc) > 120 and "import" in doc.lower(), (
            f"{folder.name}/__init__.py: say what lives here and what it may import"
        )


ENTRY_MODULES = sorted({module for module, _ in COMMANDS.values()} | {"pipeline.commands.cli"})


@pytest.mark.parametrize("entry", [m for m in ENTRY_MODULES if m != "pipeline.commands.cli"])
def test_a_command_imports_no_other_command(entry):
    others = set(ENTRY_MODULES) - {entry}
    path = PACKAGE.joinpath(*entry.split(".")[1:]).with_suffix(".py")
    assert not imports(path) & others
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {entry}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not set(loaded) & others, set(loaded) & others
    assert "tensorflow" not in loaded and "keras" not in loaded  # --help and --cfg answer before TensorFlow loads


def test_the_library_imports_no_command():
    library = [p for p in FILES if area(module_name(p)) != "commands"]
    assert len(library) > 60
    for path in library:
        wrong = {name for name in imports(path) if name.startswith("pipeline.commands")}
        assert not wrong, (path, wrong)


def test_only_the_targets_module_branches_on_a_kind_of_target():
    """What differs between masks, labels and boxes lives in pipeline.tasks.targets; elsewhere code asks it."""
    branch = re.compile(r'[=!]= "(mask|boxes|label)"')
    for path in FILES:
        if path.relative_to(PACKAGE).as_posix() != "tasks/targets.py":
            found = [line.strip() for line in path.read_text().splitlines() if branch.search(line)]
            assert not found, (path.relative_to(PACKAGE), found)


def test_only_commands_and_config_see_hydra_types():
    """Commands turn the Hydra config into plain Specs and a JobPlace once; below them nothing names its types."""
    for path in FILES:
        if area(module_name(path)) not in ("commands", "config"):
            text = path.read_text()
            assert "DictConfig" not in text and "HydraConfig" not in text, path.relative_to(PACKAGE)
