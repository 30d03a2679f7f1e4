"""Every `hnm` command in the README's shell blocks parses against the real CLI (options exist, choices are valid,
types convert), so the documentation cannot drift from the code; the cheap ones also run.

The README's pipeline block on the bundled example runs for real in a slow test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hnm_cli.cli import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```bash / ```sh blocks."""
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S)


def hnm_commands(text: str) -> list[list[str]]:
    """Each `hnm ...` command of the shell blocks as argv (continuation lines joined, comments dropped), and the
    hnm part of each launcher line (`torchrun ... -m hnm_cli ...`, `accelerate launch ... -m hnm_cli ...`)."""
    commands = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "hnm":
                commands.append(argv[1:])
            elif argv and argv[0] in ("torchrun", "accelerate") and "hnm_cli" in argv:
                commands.append(argv[argv.index("hnm_cli") + 1 :])
    return commands


class Parsed(Exception):
    """Raised by the stand-in stage runners: the command got as far as calling its stage."""


STAGES = ("embed", "reduce", "mine", "train_reranker", "evaluate", "show", "report")


@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch):
    """Run argv through the real CLI (parsing, config loading and merging) up to the stage call, which is
    replaced by a stand-in: returns (exit code, stderr); 0 when the stage was reached, 2 for a usage error."""
    import importlib

    from typer.testing import CliRunner

    def reached(*args, **kwargs):
        raise Parsed

    for name in STAGES:
        monkeypatch.setattr(importlib.import_module(f"hnm_cli.stages.{name}"), "run", reached)
    monkeypatch.chdir(REPO)  # -c configs/default.toml is checked for existence

    def invoke(argv: list[str]) -> tuple[int, str]:
        try:
            result = CliRunner().invoke(app, argv, catch_exceptions=False)
        except Parsed:
            return 0, ""
        return result.exit_code, result.stderr

    return invoke


COMMANDS = hnm_commands(README.read_text(encoding="utf-8"))


def test_readme_has_a_command_per_stage() -> None:
    used = {argv[0] for argv in COMMANDS}
    assert {"embed", "reduce", "mine", "train-reranker", "eval", "show", "report"} <= used


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_command_parses(argv: list[str], parse) -> None:
    code, err = parse(argv)
    # 0: reached the stage; 1: parsed, then stopped at a path the example does not have (data/scifact). Exit 2 is
    # what Typer gives for an unknown option, a bad choice or a bad type.
    assert code in (0, 1) and "Usage:" not in err, f"hnm {' '.join(argv)}: exit {code}: {err}"


def test_parse_catches_a_bad_option(parse) -> None:
    assert parse(["mine", "--out", "x", "--vectors", "v", "--strategy", "magic"])[0] == 2
    assert parse(["embed", "--out", "x", "--no-such-option"])[0] == 2


@pytest.mark.parametrize("command", sorted({argv[0] for argv in COMMANDS}))
def test_help_of_each_readme_command_runs(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "hnm_cli", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage:" in result.stdout


def _pipeline_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The pipeline", 1)[1]
    return [line for line in shell_blocks(section)[0].splitlines() if line.startswith("hnm ")]


@pytest.mark.slow
def test_readme_pipeline_runs_on_the_bundled_example(tmp_path: Path) -> None:
    hnm = Path(sys.executable).with_name("hnm")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": str(hnm.parent), "HOME": str(Path.home())}
    for line in _pipeline_block():
        argv = shlex.split(line.replace("runs/x", str(tmp_path / "runs")), comments=True)
        result = subprocess.run([str(hnm), *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
