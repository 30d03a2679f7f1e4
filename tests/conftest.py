"""Shared fixtures: a tiny BEIR folder builder, a CLI runner with separate stdout/stderr, and `world` (a finished
embed -> reduce -> mine chain and an eval) with the helpers the bad-input cases of every module share:
`one_error` (the single `Error:` line), `snapshot` (sha256 of every file of an artifact), `mine_args`.

Tests never touch the network: encoders are `hash:<dim>` (deterministic, no weights) unless a test
is marked `slow` and uses a packaged model. Real-data tests skip when ../shared is absent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCIFACT = SHARED_DATA / "scifact"
EXAMPLE = REPO / "examples" / "cloud-docs"

# Eight short documents in two look-alike families, and four queries with qrels in train and test.
TINY_CORPUS = [
    {
        "_id": "d1",
        "title": "Deploy MySQL on the managed service",
        "text": "Create a managed MySQL database system in the console.",
    },
    {
        "_id": "d2",
        "title": "Deploy MySQL on-premise",
        "text": "Install MySQL server on your own hosts and manage backups yourself.",
    },
    {
        "_id": "d3",
        "title": "VCN overview",
        "text": "A virtual cloud network (VCN) is a private network in one region.",
    },
    {
        "_id": "d4",
        "title": "VNIC overview",
        "text": "A virtual network interface card (VNIC) attaches an instance to a subnet.",
    },
    {
        "_id": "d5",
        "title": "WAF policies",
        "text": "A web application firewall filters HTTP requests with rules.",
    },
    {
        "_id": "d6",
        "title": "Network firewall",
        "text": "A network firewall inspects traffic between subnets at layers 3 and 4.",
    },
    {
        "_id": "d7",
        "title": "Block volume backups",
        "text": "Schedule backups of block volumes with a backup policy.",
    },
    {
        "_id": "d8",
        "title": "Object storage lifecycle",
        "text": "Lifecycle rules move objects to archive storage after a number of days.",
    },
]
TINY_QUERIES = [
    {"_id": "q1", "text": "how do I create a managed mysql database"},
    {"_id": "q2", "text": "what is a vcn"},
    {"_id": "q3", "text": "filter http requests with firewall rules"},
    {"_id": "q4", "text": "back up my block volume every night"},
]
TINY_QRELS = {"train": [("q1", "d1"), ("q2", "d3"), ("q3", "d5")], "test": [("q4", "d7")]}


def write_beir(folder: Path, corpus=None, queries=None, qrels=None) -> Path:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and return it."""
    corpus = TINY_CORPUS if corpus is None else corpus
    queries = TINY_QUERIES if queries is None else queries
    qrels = TINY_QRELS if qrels is None else qrels
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in corpus))
    (folder / "queries.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in queries))
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A fresh tiny BEIR folder under tmp_path/data."""
    return write_beir(tmp_path / "data")


@pytest.fixture
def cli():
    """Invoke the Typer app in-process; returns click's Result with separate .stdout / .stderr."""
    from typer.testing import CliRunner

    from hnm_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def scifact() -> Path:
    """The real SciFact folder, or skip when ../shared is absent (a user's clone)."""
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip("../shared/data/scifact not present")
    return SCIFACT


# An existing artifact chain, and the helpers the bad-input cases of every stage share.


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error(result) -> str:
    """The single `Error:` line of a failed run (no traceback, nothing else after it but a Hint)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert all(ln.startswith("Hint: ") for ln in lines[lines.index(errors[0]) + 1 :]), result.stderr
    return errors[0]


@pytest.fixture
def world(cli, tiny_data: Path, tmp_path: Path) -> dict[str, Path]:
    """A finished embed -> reduce -> mine chain on the tiny data, and an eval of the first stage."""
    runs = tmp_path / "runs"
    steps = [
        ("embed", "--data", tiny_data, "--out", runs / "embed", "--model", "hash:16", "--model", "hash:8", "-q"),
        ("reduce", "--embeddings", runs / "embed", "--out", runs / "reduce", "--n-components", "6", "-q"),
        ("mine", "--vectors", runs / "reduce", "--data", tiny_data, "--out", runs / "mine", "-q"),
        ("eval", "--data", tiny_data, "--out", runs / "eval", "--top-k", "5", "-q"),
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, result.stderr
    return {"data": tiny_data, "runs": runs, **{s: runs / s for s in ("embed", "reduce", "mine", "eval")}}


def mine_args(w: dict[str, Path], *extra) -> list:
    return ["mine", "--vectors", w["reduce"], "--data", w["data"], "--out", w["mine"], *extra]


def _refresh(*entries: tuple[Path, str]) -> None:
    """Make each artifact's manifest agree with a file edited on purpose (a user who re-hashed it)."""
    from hnm_cli.artifacts.manifest import output_entry

    for folder, rel in entries:
        path = folder / "manifest.json"
        manifest = orjson.loads(path.read_bytes())
        fresh = output_entry(folder, rel)
        for entry in manifest["outputs"]:
            if entry["path"] == rel:
                entry.update({k: v for k, v in fresh.items() if k != "path"})
        path.write_bytes(orjson.dumps(manifest))


def _fake_base(folder: Path) -> Path:
    """A folder that passes the base-model check (the guards run before any weights would be loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    return folder
