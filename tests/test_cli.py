"""CLI contract shared by every command: help text, no heavy imports, exit codes, stdout/stderr split, the `Error:`
line after an open progress bar, and -q silencing library progress bars for the call only."""

from __future__ import annotations

import os
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


def test_the_error_line_starts_a_line_after_an_open_progress_bar(capsys) -> None:
    import typer
    from tqdm import tqdm

    from hnm_cli.cli import reported
    from hnm_cli.errors import ConfigError

    bar = tqdm(total=4, desc="training", file=sys.stderr, mininterval=0)
    bar.update(1)  # a run dies mid-bar: the bar's line ends in '\r', not '\n'
    with pytest.raises(typer.Exit), reported():
        raise ConfigError("boom")
    lines = capsys.readouterr().err.split("\n")
    assert "Error: boom" in lines, lines


def test_quiet_disables_every_tqdm_bar_for_the_call_only() -> None:
    from tqdm import std
    from tqdm.auto import tqdm as auto_tqdm

    from hnm_cli.quiet import libraries_quiet

    init = std.tqdm.__dict__["__init__"]
    with libraries_quiet():
        assert std.tqdm(range(2), "x").disable and auto_tqdm(range(2), desc="Computing widget examples").disable
    assert std.tqdm.__dict__["__init__"] is init
    bar = std.tqdm(range(2), file=open(os.devnull, "w"))  # noqa: SIM115
    assert not bar.disable
    bar.close()
