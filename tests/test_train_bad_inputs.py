"""`hnm train-reranker` on bad input (kept apart from tests/test_stage_train.py for size): an unknown eval split,
a training query that is a test query under another id, and a torn checkpoint that resume skips (slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import _fake_base, one_error, write_beir


@pytest.mark.slow
def test_torn_checkpoint_is_skipped_with_a_warning(cli, world, tmp_path: Path) -> None:
    from tiny_models import build_tiny_bert

    base = build_tiny_bert(tmp_path / "bert")
    out = tmp_path / "rr"
    args = ["train-reranker", "--mined", world["mine"], "--data", world["data"], "--out", out, "--kind",
            "bi-encoder", "--loss", "mnrl", "--base-model", base, "--max-steps", "3", "--batch-size", "2",
            "--checkpoint-steps", "1", "--max-length", "32"]  # fmt: skip
    assert cli(*args).exit_code == 0
    (out / "manifest.json").unlink()  # as if the run had been killed after its last checkpoint
    (out / "checkpoints" / "checkpoint-3").mkdir(exist_ok=True)
    state = out / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    state.write_text('{"global_step": 3, "log_hist')  # torn in half
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "skipping checkpoint" in result.stderr
    assert (out / "manifest.json").is_file()


def _toml(folder: Path, text: str) -> Path:
    path = folder / "t.toml"
    path.write_text(text)
    return path


def test_unknown_eval_split_is_an_error(cli, world, tmp_path: Path) -> None:
    result = cli("train-reranker", "--mined", world["mine"], "--data", world["data"], "--out", tmp_path / "rr",
                 "--base-model", _fake_base(tmp_path / "base"),
                 "-c", _toml(tmp_path, "[train_reranker]\neval_split = 'tset'\n"))  # fmt: skip
    assert result.exit_code == 1
    assert "eval_split 'tset': no qrels/tset.tsv" in one_error(result)


def test_training_query_with_a_test_query_text_is_refused_or_dropped(cli, tmp_path: Path) -> None:
    from conftest import TINY_QRELS, TINY_QUERIES

    twin = {"_id": "q9", "text": TINY_QUERIES[3]["text"]}  # q4 (test) under another id
    data = write_beir(tmp_path / "d", queries=[*TINY_QUERIES, twin],
                      qrels={"train": [*TINY_QRELS["train"], ("q9", "d7")], "test": TINY_QRELS["test"]})  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("embed", "--data", data, "--out", runs / "e", "--model", "hash:8", "-q").exit_code == 0
    assert cli("mine", "--vectors", runs / "e", "--data", data, "--out", runs / "m", "-q").exit_code == 0
    result = cli("train-reranker", "--mined", runs / "m", "--data", data, "--out", runs / "rr",
                 "--base-model", _fake_base(tmp_path / "base"))  # fmt: skip
    assert result.exit_code == 1
    assert "(0 by id, 1 with the same text under another id; e.g. 'q9')" in one_error(result)
