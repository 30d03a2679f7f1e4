"""A killed `hnm train-reranker` resumes from its last checkpoint (a real SIGKILL on a real subprocess).

The first run is slowed down (each optimizer step sleeps) by a wrapper that patches the trainer before
calling the CLI, so the test can kill it right after the first checkpoint is complete and before the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_stage_train import make_mine_artifact

from hnm_cli.artifacts.manifest import load_manifest

SLOW_WRAPPER = """
import sys, time
import transformers

_step = transformers.Trainer.training_step


def slow_step(self, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return _step(self, *args, **kwargs)


transformers.Trainer.training_step = slow_step
from hnm_cli.cli import app

app(sys.argv[2:], prog_name="hnm")
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from conftest import TINY_CORPUS, TINY_QUERIES
    from tiny_models import build_tiny_bert

    words = [d["title"] + " " + d["text"] for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", words=words)


def _env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, tiny_data, tiny_model):
    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    out = tmp_path / "rr"
    args = [
        "train-reranker", "--mined", str(mine), "--data", str(tiny_data), "--out", str(out),
        "--base-model", str(tiny_model), "--max-steps", "6", "--checkpoint-steps", "2", "--batch-size", "1",
        "--device", "cpu", "--quiet",
    ]  # fmt: skip
    first_ckpt = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRAPPER, "1.5", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 300
        while not first_ckpt.is_file():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()  # killed: the artifact is incomplete
    assert not (out / "checkpoints" / "checkpoint-6").exists()

    rerun = subprocess.run(
        [sys.executable, "-m", "hnm_cli", *args[:-1]], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout == f"{out / 'manifest.json'}\n"
    assert f"train-reranker: resuming from {out / 'checkpoints'}/checkpoint-" in rerun.stderr
    stats = load_manifest(out).stats
    assert stats["resumed_from_step"] in (2, 4)  # the kill may land after step 4's checkpoint too
    assert f"(step {stats['resumed_from_step']} of 6)" in rerun.stderr
    assert stats["global_step"] == 6
    # The loss curve spans the whole run: the steps before the kill come from the checkpoint's state.
    assert [step for step, _ in stats["loss_curve"]] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------
# Which checkpoint a rerun resumes from (no training: checkpoints written by hand, as the trainer writes them)
# ---------------------------------------------------------------------------------------------

FP = "sha256:" + "ab" * 32


def _checkpoint(root: Path, step: int) -> Path:
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import TrainerState

    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, folder / "optimizer.pt")
    torch.save({"last_epoch": step, "_step_count": step + 1}, folder / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, folder / "rng_state.pth")
    TrainerState(global_step=step, max_steps=6).save_to_json(str(folder / "trainer_state.json"))
    return folder


def _prepared(root: Path, caplog) -> tuple[Path | None, list[str]]:
    from hnm_cli.artifacts.checkpoints import prepare_checkpoints

    caplog.clear()
    with caplog.at_level("INFO", logger="hnm"):
        chosen = prepare_checkpoints(root, FP, fresh=False)
    return chosen, [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: _cut(c / "model.safetensors"), "model.safetensors: 8228 bytes, but its header describes 16456"),
        (lambda c: _cut(c / "optimizer.pt"), "optimizer.pt: not a complete torch file"),
        (lambda c: (c / "scheduler.pt").write_bytes(b"garbage"), "scheduler.pt: not a complete torch file"),
        (lambda c: (c / "rng_state.pth").write_bytes(b"garbage"), "rng_state.pth: not a complete torch file"),
        (lambda c: (c / "trainer_state.json").write_text('{"global_step": "two"}'), "field 'global_step': 'two'"),
        (lambda c: (c / "trainer_state.json").write_text('{"global_step": 4, "x": 1}'), "unknown field 'x'"),
        (lambda c: (c / "trainer_state.json").write_text('{"global_step": 4, "log_hist'), "trainer_state.json unread"),
        (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda c: [p.unlink() for p in c.iterdir()], "no trainer_state.json"),
    ],
)
def test_an_unreadable_checkpoint_is_skipped_with_one_warning(tmp_path, caplog, damage, problem):
    root = tmp_path / "checkpoints"
    _checkpoint(root, 2)
    (root / "fingerprint.txt").write_text(FP + "\n")
    newest = _checkpoint(root, 4)
    assert _prepared(root, caplog) == (newest, [])  # intact: resumed without a word
    damage(newest)
    chosen, warnings = _prepared(root, caplog)
    assert chosen == root / "checkpoint-2"
    assert len(warnings) == 1 and warnings[0].startswith(f"train-reranker: skipping checkpoint {newest} ("), warnings
    assert problem in warnings[0] and warnings[0].endswith("; resuming from checkpoint-2"), warnings
    assert not newest.exists()  # the trainer can write a new checkpoint-4 there


def test_damaged_checkpoint_folders_never_fail_silently(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    _checkpoint(root, 2)
    (root / "fingerprint.txt").write_text("garbage")
    chosen, warnings = _prepared(root, caplog)
    assert chosen is None
    assert warnings == [
        f"train-reranker: discarding 1 checkpoint(s) without a readable fingerprint.txt in {root}; training from the "
        "start"
    ]
    (root / "checkpoint-3").write_text("x")  # a file where the trainer will save a folder
    chosen, warnings = _prepared(root, caplog)
    assert chosen is None and not (root / "checkpoint-3").exists()
    assert warnings == [
        f"train-reranker: skipping checkpoint {root / 'checkpoint-3'} (not a folder); training from the start"
    ]
