"""CLI contract shared by every command: help text, no heavy imports, exit codes, stdout/stderr split."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["embed", "reduce", "mine", "train-reranker", "eval", "report"]


def test_app_help_lists_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_version(cli):
    from hnm_cli import __version__

    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"{__version__}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(cli, command: str):
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: hnm {command}" in result.stdout or f"Usage: root {command}" in result.stdout


def test_help_never_imports_heavy_libraries():
    """`hnm --help` and every `hnm <cmd> --help` must answer without torch, sklearn, hnswlib or transformers."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hnm_cli.cli import app\n"
        "runner = CliRunner()\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    assert runner.invoke(app, args).exit_code == 0, args\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'sklearn', 'hnswlib', 'bm25s',"
        " 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_command_is_a_usage_error(cli):
    result = cli("frobnicate")
    assert result.exit_code == 2
