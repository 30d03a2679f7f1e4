"""The README documents the CLI (as sqlite-utils' test_docs.py does for its own): every command of the Typer app
has a `### hnm <command>` section, and every option of every command is named in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from hnm_cli.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_the_app_has_the_commands_the_docs_list() -> None:
    sections = re.findall(r"^### hnm ([a-z-]+)$", README, re.M)
    assert sorted(sections) == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_the_readme(name: str) -> None:
    options = [opt for param in COMMANDS[name].params for opt in param.opts if opt.startswith("--")]
    assert options, name
    missing = [opt for opt in options if not re.search(re.escape(opt) + r"(?![\w-])", README)]
    assert not missing, f"hnm {name}: options not in README.md: {missing}"
