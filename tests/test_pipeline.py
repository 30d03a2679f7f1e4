"""All five stages end to end in seconds: the `hash:` encoders, a tiny BERT built offline, the tiny BEIR folder.

What the slow tests check with real models, this one checks for wiring: every stage reads what the previous one
wrote, prints its manifest path on stdout, and a second run of the whole chain is up to date everywhere.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tiny_models import build_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY_CORPUS, TINY_QUERIES

    texts = [d["title"] + " " + d["text"] for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", words=texts)


def _chain(cli, data: Path, runs: Path, base: Path) -> list:
    return [
        cli("embed", "--data", data, "--out", runs / "embed", "--model", "hash:16", "--model", "hash:8", "-q"),
        cli("reduce", "--embeddings", runs / "embed", "--out", runs / "reduce", "--n-components", "6", "-q"),
        cli("mine", "--vectors", runs / "reduce", "--data", data, "--out", runs / "mine", "--num-negatives", "2",
            "--strategy", "rule", "--relative-margin", "none", "--fallback", "next", "--fill", "short", "-q"),
        cli("train-reranker", "--mined", runs / "mine", "--data", data, "--out", runs / "reranker",
            "--kind", "bi-encoder", "--loss", "mnrl", "--base-model", base, "--max-steps", "2", "--batch-size", "2",
            "--max-length", "32", "-q"),
        cli("eval", "--data", data, "--out", runs / "eval", "--model", f"tuned={runs / 'reranker'}",
            "--model", f"base={base}", "--top-k", "5", "--max-length", "32", "-q"),
    ]  # fmt: skip


def test_five_stages_chain_and_rerun_up_to_date(cli, tiny_data: Path, tmp_path: Path, tiny_bert: Path) -> None:
    runs = tmp_path / "runs"
    first = _chain(cli, tiny_data, runs, tiny_bert)
    assert [r.exit_code for r in first] == [0] * 5, [r.stderr for r in first]
    for result, stage in zip(first[:4], ("embed", "reduce", "mine", "reranker"), strict=True):
        assert result.stdout.strip() == str(runs / stage / "manifest.json")
    report = orjson.loads(first[4].stdout)
    assert {"first-stage", "tuned", "base"} <= set(report["runs"])
    rows = [orjson.loads(line) for line in (runs / "mine" / "rows-00000.jsonl").read_bytes().splitlines()]
    assert len(rows) == 3 and all(len(r["negatives"]) == 2 for r in rows)

    manifests = sorted(runs.glob("*/manifest.json"))
    stamps = [m.stat().st_mtime_ns for m in manifests]
    again = _chain(cli, tiny_data, runs, tiny_bert)
    assert [r.exit_code for r in again] == [0] * 5
    assert [m.stat().st_mtime_ns for m in manifests] == stamps  # every stage up to date: nothing rewritten
    assert again[4].stdout == first[4].stdout

    shown = cli("show", runs / "mine", "-n", "2")
    assert shown.exit_code == 0 and shown.stdout.startswith("Example triplets from")
    table = cli("show", runs / "eval")
    assert table.exit_code == 0 and "tuned" in table.stdout
