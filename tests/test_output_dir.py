"""`--out` as a hostile user and a second process make it (artifacts/output_dir.py and the output guard in
artifacts/guards.py): an output over an input, under a file or over another stage's artifact is refused; one writer
per folder; a failed or interrupted write leaves no temp or staging files and the old artifact's bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import mine_args, one_error, snapshot


def test_out_over_an_input_is_refused(cli, world) -> None:
    cases = [
        (["mine", "--vectors", world["reduce"], "--data", world["data"], "--out", world["reduce"]], world["reduce"]),
        (["reduce", "--embeddings", world["embed"], "--out", world["embed"]], world["embed"]),
        (["reduce", "--embeddings", world["embed"], "--out", world["embed"] / "inside"], world["embed"]),
        (["train-reranker", "--mined", world["mine"], "--data", world["data"], "--out", world["mine"]], world["mine"]),
        (["eval", "--data", world["data"], "--out", world["data"]], world["data"]),
    ]
    for argv, victim in cases:
        before = snapshot(victim)
        result = cli(*argv)
        assert result.exit_code == 1, argv
        assert one_error(result).startswith(f"Error: --out {argv[argv.index('--out') + 1]} "), argv
        assert snapshot(victim) == before


def test_out_that_is_a_file_or_under_one(cli, world, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli(*mine_args(world)[:-2], "--out", blocker).exit_code == 2  # Typer's own check: a usage error
    result = cli(*mine_args(world)[:-2], "--out", blocker / "sub")
    assert result.exit_code == 1
    assert one_error(result) == f"Error: --out {blocker / 'sub'}: {blocker} is a file, not a folder"


@pytest.mark.parametrize(
    ("stage", "victim"), [("embed", "reduce"), ("reduce", "mine"), ("mine", "embed"), ("eval", "mine")]
)
def test_out_that_is_another_stages_artifact_is_refused(cli, world, stage: str, victim: str) -> None:
    argv = {
        "embed": ["embed", "--data", world["data"], "--model", "hash:16"],
        "reduce": ["reduce", "--embeddings", world["embed"]],
        "mine": ["mine", "--vectors", world["reduce"], "--data", world["data"]],
        "eval": ["eval", "--data", world["data"], "--top-k", "5"],
    }[stage]
    before = snapshot(world[victim])
    for force in ([], ["--force"]):
        result = cli(*argv, "--out", world[victim], *force)
        assert result.exit_code == 1
        assert one_error(result) == (
            f"Error: --out {world[victim]} holds the artifact of another stage ('{victim}', "
            f"{world[victim] / 'manifest.json'}); writing '{stage}' output there would destroy it"
        )
        assert result.stderr.strip().endswith(f"Hint: give another --out, or delete {world[victim]} first")
        assert snapshot(world[victim]) == before


def test_a_second_writer_into_the_same_folder_exits_at_once(cli, world, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from hnm_cli.artifacts.output_dir import output_lock\n"
         f"with output_lock({str(world['mine'])!r}):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = snapshot(world["mine"])
        started = time.time()
        result = cli(*mine_args(world, "--force"))
        assert result.exit_code == 1 and time.time() - started < 10
        assert one_error(result) == (
            f"Error: {world['mine']} is being written by another hnm process (pid {holder.pid} on "
            f"{os.uname().nodename})"
        )
        assert snapshot(world["mine"]) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock is stale and the next run takes it over.
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 0, result.stderr
    assert not (world["mine"] / ".hnm.lock").exists()


def test_failed_runs_leave_no_temp_or_staging_files(cli, world) -> None:
    (world["reduce"] / "corpus" / "ids-00000.jsonl").write_text("")
    assert cli(*mine_args(world, "--force")).exit_code == 1
    left = [p.name for p in world["mine"].rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".staging")]
    assert left == []


def test_a_write_failure_names_the_file_and_keeps_the_artifact(cli, world, monkeypatch) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    before = snapshot(world["mine"])
    monkeypatch.setattr(os, "fsync", full)
    result = cli(*mine_args(world, "--force", "-q"))
    monkeypatch.undo()
    assert result.exit_code == 1
    line = one_error(result)
    assert line.startswith(f"Error: {world['mine']}/") and line.endswith(": No space left on device"), line
    assert snapshot(world["mine"]) == before
