"""Shared fixtures: a tiny BEIR folder builder and a CLI runner with separate stdout/stderr.

Tests never touch the network: encoders are `hash:<dim>` (deterministic, no weights) unless a test
is marked `slow` and uses a packaged model. Real-data tests skip when ../shared is absent.
"""

from __future__ import annotations

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
