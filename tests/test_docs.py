"""The README is a front page and docs/ a site that builds strictly; every `cnn` command either shows is a real
command whose Hydra overrides compose and pass the schema; neither narrates history."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.commands.cli import COMMANDS
from pipeline.config import checkout, conf_dir
from pipeline.errors import ConfigError

ROOT = checkout()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARGPARSE = {"compare", "ui", "bench"}  # commands that take arguments, not Hydra overrides


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    built = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "lecture" / "index.html").is_file()


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    for page in re.findall(r"\]\((docs/[\w.-]+\.md)", "\n".join(lines)):
        assert (ROOT / page).is_file(), page


HISTORY = re.compile(r"since commit|remeasured|previous session|this session|\(before\)|used to be", re.I)


@pytest.mark.parametrize("path", [*PAGES, *sorted((ROOT / "src").rglob("*.py"))], ids=lambda p: p.name)
def test_no_history_narration(path):
    found = [line.strip() for line in path.read_text().splitlines() if HISTORY.search(line)]
    assert not found, found


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) of every `cnn ...` in a code block or an inline code span."""
    found = []
    for page in PAGES:
        text = page.read_text()
        # a span followed by its error (`cnn train trainer.epoch=3` -> `error: ...`) shows a mistake on purpose
        spans = [m.group(1) for m in re.finditer(r"`(cnn [^`]+)`([^`]{0,12}`error)?", text) if not m.group(2)]
        blocks = [
            line.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) for line in block.splitlines()
        ]
        found += [(page.name, line.split("  #")[0].strip()) for line in [*spans, *blocks] if line.startswith("cnn ")]
    return found


def config_name(command: str) -> str:
    module = COMMANDS[command][0]
    source = Path(__import__(module, fromlist=["main"]).__file__).read_text()
    return re.search(r'stage_main\("(\w+)"\)', source).group(1)


def test_every_documented_command_is_real_and_its_overrides_compose():
    from pipeline.config.schema import check_schema

    checked, pages = 0, {}
    for page, line in documented_commands():  # a command several pages give is composed once, for the first
        pages.setdefault(line, page)
    for line, page in pages.items():
        words = shlex.split(line.replace("\\", ""))[1:]
        if not words or words[0] in ("--help", "-h") or words[0].startswith("<"):
            continue
        command, arguments = words[0], words[1:]
        assert command in COMMANDS, f"{page}: `{line}`: no command {command!r}"
        if command in ARGPARSE or {"-m", "--multirun", "--help"} & set(arguments):
            continue
        overrides = [
            a for a in arguments if "=" in a and "<" not in a and "..." not in a and not a.startswith(("hydra", "--"))
        ]
        try:
            with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
                cfg = compose(config_name(command), overrides=overrides)
            if config_name(command) == "config":
                check_schema(cfg)
        except ConfigError as err:
            if not (("<" in line or "..." in line) and "is missing" in str(err)):  # <run id>, ... stand for values
                pytest.fail(f"{page}: `{line}`: {err}")
        except (HydraException, OmegaConfBaseException) as err:
            pytest.fail(f"{page}: `{line}`: {type(err).__name__}: {err}")
        checked += 1
    assert checked >= 30, checked
