"""Bad inputs and faults, as a hostile user makes them: each case asserts the exit code, the one `Error:` line,
and that an artifact already in `--out` keeps its bytes (issue 11's kinds, on the `hash:` encoders).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import write_beir


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


# ---------------------------------------------------------------------------------------------
# 1. A failing run leaves the good result it was about to replace
# ---------------------------------------------------------------------------------------------


def test_failing_eval_leaves_the_existing_artifact(cli, world, tmp_path: Path) -> None:
    before = snapshot(world["eval"])
    bad = write_beir(tmp_path / "bad", corpus=[{"_id": "d1", "title": "t"}])  # no text field
    result = cli("eval", "--data", bad, "--out", world["eval"], "--top-k", "5")
    assert result.exit_code == 1
    assert "field 'text'" in one_error(result)
    assert snapshot(world["eval"]) == before


@pytest.mark.parametrize("line", ["num_negatives = 2.5", 'seed = "abc"', "top_k = 2.5", 'strategy = "magic"'])
def test_config_of_the_wrong_type_fails_before_touching_the_output(cli, world, tmp_path: Path, line: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[{'eval' if 'top_k' in line else 'mine'}]\n{line}\n")
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "-c", config, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: ")
    assert line.split(" =")[0] in one_error(result)
    assert snapshot(world["mine"]) == before


def test_a_model_that_fails_to_load_leaves_the_embed_artifact(cli, world) -> None:
    before = snapshot(world["embed"])
    result = cli("embed", "--data", world["data"], "--out", world["embed"], "--model", "/no/such/model")
    assert result.exit_code == 1
    one_error(result)
    assert snapshot(world["embed"]) == before


# ---------------------------------------------------------------------------------------------
# 2. Output over input
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 3. One Error line instead of a traceback
# ---------------------------------------------------------------------------------------------


def _qrels(folder: Path, body: str) -> Path:
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + body)
    return folder


@pytest.mark.parametrize("score", ["inf", "nan", "0.5", "1e3", "yes"])
def test_qrels_scores_must_be_integer_grades(cli, world, score: str) -> None:
    _qrels(world["data"], f"q1\td1\t{score}\n")
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {world['data']}/qrels/train.tsv:2: field 'score': expected an integer relevance grade, got '{score}'"
    )


def test_truncated_or_fake_gzip_corpus(cli, tmp_path: Path) -> None:
    data = write_beir(tmp_path / "gz")
    raw = (data / "corpus.jsonl").read_bytes()
    (data / "corpus.jsonl").unlink()
    (data / "corpus.jsonl.gz").write_bytes(gzip.compress(raw)[:-20])
    result = cli("embed", "--data", data, "--out", tmp_path / "e", "--model", "hash:8")
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {data}/corpus.jsonl.gz: not a readable gzip file")
    (data / "corpus.jsonl.gz").write_bytes(raw)  # plain text under a .gz name
    result = cli("embed", "--data", data, "--out", tmp_path / "e", "--model", "hash:8")
    assert result.exit_code == 1
    assert "not a readable gzip file" in one_error(result)


@pytest.mark.parametrize("content", [b"", b'{"stage": ', b"[1, 2]", b"\xff\xfe"])
def test_unreadable_manifest_of_an_input(cli, world, content: bytes) -> None:
    (world["reduce"] / "manifest.json").write_bytes(content)
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {world['reduce']}/manifest.json is unreadable")


def test_garbage_or_truncated_vector_shard(cli, world) -> None:
    shard = world["reduce"] / "corpus" / "vectors-00000.npy"
    good = shard.read_bytes()
    for damage in (good[:-8], b"not numpy at all" * 10):
        shard.write_bytes(damage)
        result = cli(*mine_args(world, "--force"))
        assert result.exit_code == 1
        assert one_error(result).startswith(f"Error: {world['reduce']}/")


# ---------------------------------------------------------------------------------------------
# 4. Corrupt artifacts are refused, with the command that rebuilds them
# ---------------------------------------------------------------------------------------------


def _rewrite_shard(shard: Path, rows) -> None:
    import numpy as np

    np.save(shard, np.asarray(rows, dtype=np.float32))


def test_vector_shard_with_a_row_fewer_than_its_ids(cli, world) -> None:
    import numpy as np

    shard = world["reduce"] / "corpus" / "vectors-00000.npy"
    _rewrite_shard(shard, np.load(shard)[:-1])
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert "corrupt" in one_error(result) and "hnm reduce" in one_error(result)


def test_ids_file_missing_a_line(cli, world) -> None:
    ids = world["reduce"] / "corpus" / "ids-00000.jsonl"
    ids.write_bytes(b"\n".join(ids.read_bytes().splitlines()[:-1]) + b"\n")
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert "corrupt" in one_error(result)


def test_same_size_corruption_and_a_shard_from_another_run(cli, world, tmp_path: Path) -> None:
    import numpy as np

    shard = world["reduce"] / "corpus" / "vectors-00000.npy"
    x = np.load(shard)
    _rewrite_shard(shard, x[::-1])  # same size, other content: a swapped or edited shard
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert "content changed" in one_error(result)
    # The up-to-date check of the artifact itself notices too and rebuilds instead of saying "up to date".
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--n-components", "6")
    assert result.exit_code == 0 and "rebuilding" in result.stderr and "up to date" not in result.stderr
    assert np.array_equal(np.load(shard), x)


def test_edited_manifest_digest_is_caught_by_verify(cli, world) -> None:
    manifest = orjson.loads((world["reduce"] / "manifest.json").read_bytes())
    manifest["outputs"][0]["sha256"] = "0" * 64
    (world["reduce"] / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert cli(*mine_args(world, "--force", "-q")).exit_code == 0  # cheap check: sizes and mtimes agree
    result = cli(*mine_args(world, "--force", "--verify"))
    assert result.exit_code == 1
    assert "content changed" in one_error(result)


# ---------------------------------------------------------------------------------------------
# 6. A torn checkpoint does not block resume (slow: a real, tiny training)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 7. One writer per output folder
# ---------------------------------------------------------------------------------------------


def test_a_second_writer_into_the_same_folder_exits_at_once(cli, world, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from hnm_cli.artifacts.manifest import output_lock\n"
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


# ---------------------------------------------------------------------------------------------
# 8. Leakage guards follow content
# ---------------------------------------------------------------------------------------------


def test_mining_a_test_qrels_file_is_refused(cli, world) -> None:
    result = cli(*mine_args(world, "--qrels", world["data"] / "qrels" / "test.tsv", "--force"))
    assert result.exit_code == 1
    assert "is the 'test' split, an evaluation split" in one_error(result)


def test_unknown_eval_split_is_an_error(cli, world, tmp_path: Path) -> None:
    result = cli("train-reranker", "--mined", world["mine"], "--data", world["data"], "--out", tmp_path / "rr",
                 "--base-model", _fake_base(tmp_path / "base"),
                 "-c", _toml(tmp_path, "[train_reranker]\neval_split = 'tset'\n"))  # fmt: skip
    assert result.exit_code == 1
    assert "eval_split 'tset': no qrels/tset.tsv" in one_error(result)


def _fake_base(folder: Path) -> Path:
    """A folder that passes the base-model check (the guards run before any weights would be loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    return folder


def _toml(folder: Path, text: str) -> Path:
    path = folder / "t.toml"
    path.write_text(text)
    return path


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


def test_eval_recognises_a_trained_artifact_from_its_model_folder(cli, world, tmp_path: Path) -> None:
    from artifact_builders import make_embed_artifact  # noqa: F401  (keeps the builders importable here)

    from hnm_cli.artifacts.manifest import write_manifest

    art = tmp_path / "trained"
    (art / "model").mkdir(parents=True)
    (art / "model" / "config_sentence_transformers.json").write_text('{"model_type": "SentenceTransformer"}')
    mine = tmp_path / "mined-on-test"
    write_manifest(mine, stage="mine", fingerprint="x", params={"split": "test"}, inputs=[], outputs=[], stats={},
                   started=0.0)  # fmt: skip
    write_manifest(art, stage="train-reranker", fingerprint="y", params={},
                   inputs=[{"role": "mined", "path": str(mine), "stage": "mine", "sha256": "z"}], outputs=[],
                   stats={}, started=0.0)  # fmt: skip
    result = cli("eval", "--data", world["data"], "--out", tmp_path / "ev", "--model", f"m={art / 'model'}")
    assert result.exit_code == 1
    assert "was trained on the 'test' split" in one_error(result)


# ---------------------------------------------------------------------------------------------
# 9. Twin queries share exclusions
# ---------------------------------------------------------------------------------------------


def test_twin_queries_never_get_each_others_positive(cli, tmp_path: Path) -> None:
    from conftest import TINY_CORPUS

    queries = [
        {"_id": "a", "text": "mysql on the managed service"},
        {"_id": "b", "text": "MySQL on the  managed service"},
    ]
    data = write_beir(tmp_path / "d", corpus=TINY_CORPUS, queries=queries,
                      qrels={"train": [("a", "d1"), ("b", "d2")]})  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("embed", "--data", data, "--out", runs / "e", "--model", "hash:8", "-q").exit_code == 0
    for extra, allowed in (([], False), (["--keep-twin-positives"], True)):
        out = runs / f"m{len(extra)}"
        args = ["mine", "--vectors", runs / "e", "--data", data, "--out", out, "--strategy", "random",
                "--num-negatives", "7", "-q", *extra]  # fmt: skip
        assert cli(*args).exit_code == 0
        rows = [orjson.loads(x) for x in (out / "rows-00000.jsonl").read_bytes().splitlines()]
        picked = {r["query_id"]: {n["doc_id"] for n in r["negatives"]} for r in rows}
        assert ("d2" in picked["a"] and "d1" in picked["b"]) is allowed
