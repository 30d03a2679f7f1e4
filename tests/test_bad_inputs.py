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


# ---------------------------------------------------------------------------------------------
# 10. Config values, devices, the Error line itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('source = "hash:abc"', " 'abc': 'hash:abc' needs a positive integer dimension, e.g. hash:16"),
        ('source = "hash:-4"', " '-4': 'hash:-4' needs a positive integer dimension"),
        (
            'source = "hash:100000000000"',
            " '100000000000': 'hash:100000000000' is too wide; a hash encoder has at most",
        ),
        ('source = ""', ": 'source' must not be empty"),
        ('source = "pkg:nosuch"', " 'nosuch': unknown packaged model 'pkg:nosuch'"),
        ('source = "/nonexistent/model-dir"', " 'model-dir': folder /nonexistent/model-dir does not exist"),
        ('name = "../evil"\nsource = "hash:8"', " '../evil': model name '../evil' cannot be a folder name"),
        ('name = "x"\nsource = "hash:8"\nengine = "bogus"', " 'x': engine must be auto or one of"),
    ],
)
def test_model_table_errors_name_the_config_file(cli, tiny_data: Path, tmp_path: Path, table: str, message: str):
    config = tmp_path / "c.toml"
    config.write_text(f'[[embed.models]]\nsource = "hash:4"\n\n[[embed.models]]\n{table}\n')
    result = cli("embed", "--data", tiny_data, "--out", tmp_path / "embed", "-q", "-c", config)
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: [[embed.models]] #2{message}")
    assert not (tmp_path / "embed").exists()


def test_the_same_spec_from_a_flag_names_no_file(cli, tiny_data: Path, tmp_path: Path) -> None:
    result = cli("embed", "--data", tiny_data, "--out", tmp_path / "embed", "-q", "--model", "hash:100000000000")
    assert result.exit_code == 1
    assert one_error(result).startswith("Error: model 'hash-100000000000': 'hash:100000000000' is too wide")


@pytest.mark.parametrize("body", ["[[mine]]\nseed = 1\n", "mine = 5\n", "[mine]\nquery_block = 0\n",
                                  "[mine]\nhnsw_ef_search = 0\n", "[mine]\nseed = -1\n"])  # fmt: skip
def test_bad_mine_config_fails_before_touching_the_output(cli, world, tmp_path: Path, body: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(body)
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "-c", config, "--force", "-q"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: ")
    assert snapshot(world["mine"]) == before


def test_a_device_this_machine_lacks_is_a_config_error(monkeypatch) -> None:
    import torch

    from hnm_cli.encoding.devices import torch_device
    from hnm_cli.errors import ConfigError

    assert torch_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"^--device 'bogus': must be auto, cpu, cuda, cuda:N or mps$"):
        torch_device("bogus")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device cuda: this torch build has no CUDA \(torch .*\); use --device"):
        torch_device("cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"^--device cuda:0: no CUDA device is visible"):
        torch_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_device("cuda:0") == "cuda:0"
    with pytest.raises(
        ConfigError, match=r"^--device cuda:1: this machine has 1 CUDA device\(s\), cuda:0 \.\. cuda:0$"
    ):
        torch_device("cuda:1")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device mps: MPS is not available here"):
        torch_device("mps")


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


# ---------------------------------------------------------------------------------------------
# 11. hnm show checks what it shows; user data and leakage by content
# ---------------------------------------------------------------------------------------------


def _rows_file(w: dict[str, Path]) -> Path:
    return w["mine"] / "rows-00000.jsonl"


def _refresh_manifest(artifact: Path, rel: str) -> None:
    """Re-record one output (size, sha256, mtime) as if hnm had written the edited file: only the schema is wrong."""
    from hnm_cli.artifacts.manifest import output_entry

    manifest = orjson.loads((artifact / "manifest.json").read_bytes())
    manifest["outputs"] = [output_entry(artifact, rel) if o["path"] == rel else o for o in manifest["outputs"]]
    (artifact / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_show_refuses_malformed_mine_rows_with_file_and_line(cli, world) -> None:
    rows = _rows_file(world)
    lines = rows.read_bytes().splitlines(keepends=True)
    for bad, field in ((b"[1, 2]\n", "expected a JSON object"), (b'{"query_id": 1}\n', "field 'query_id'")):
        rows.write_bytes(lines[0] + bad + b"".join(lines[1:]))
        _refresh_manifest(world["mine"], "rows-00000.jsonl")
        result = cli("show", world["mine"], "--data", world["data"])
        assert result.exit_code == 1
        assert one_error(result).startswith(f"Error: {rows}:2: {field}"), result.stderr


def test_show_names_a_mined_doc_missing_from_data(cli, world, tmp_path: Path) -> None:
    from conftest import TINY_CORPUS

    row = orjson.loads(_rows_file(world).read_bytes().splitlines()[0])
    data = write_beir(tmp_path / "fewer", corpus=[d for d in TINY_CORPUS if d["_id"] != row["positive_id"]])
    result = cli("show", world["mine"], "--data", data)
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {_rows_file(world)}:1: field 'positive_id': document '{row['positive_id']}' is not in "
        f"{data / 'corpus.jsonl'}"
    )
    assert "mined from different corpus files" in result.stderr  # the warning that came first


def test_show_verifies_the_mine_artifact(cli, world) -> None:
    manifest = orjson.loads((world["mine"] / "manifest.json").read_bytes())
    for entry in manifest["outputs"]:
        if entry["path"] == "rows-00000.jsonl":
            entry["sha256"] = "0" * 64  # an edited digest: size and mtime still agree
    (world["mine"] / "manifest.json").write_bytes(orjson.dumps(manifest))
    result = cli("show", world["mine"])
    assert result.exit_code == 1
    assert "rows-00000.jsonl: content changed" in one_error(result)
    _rows_file(world).unlink()
    result = cli("show", world["mine"])
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {world['mine']}/rows-00000.jsonl: missing")


def test_show_with_another_corpus_warns(cli, world, tmp_path: Path) -> None:
    from conftest import TINY_CORPUS

    data = write_beir(tmp_path / "edited", corpus=[{**d, "text": d["text"] + " (v2)"} for d in TINY_CORPUS])
    result = cli("show", world["mine"], "--data", data)
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and "was mined from different corpus files than" in warnings[0], result.stderr


@pytest.mark.parametrize("content", [b"{garbage", b"[]"])
def test_show_refuses_an_unreadable_eval_report(cli, world, content: bytes) -> None:
    report = world["eval"] / "report.json"
    report.write_bytes(content)
    result = cli("show", world["eval"], "--format", "json")
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {report}: ")
    _refresh_manifest(world["eval"], "report.json")  # a manifest that vouches for it: the parse still fails
    result = cli("show", world["eval"], "--format", "json")
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {report} is unreadable (")


def test_mining_a_copy_or_a_link_of_the_test_qrels_is_refused(cli, world, tmp_path: Path) -> None:
    test_qrels = world["data"] / "qrels" / "test.tsv"
    copy = tmp_path / "mine-these" / "train.tsv"
    copy.parent.mkdir()
    copy.write_bytes(test_qrels.read_bytes())
    result = cli(*mine_args(world, "--qrels", copy, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: --qrels {copy} has the same content as {test_qrels}, the 'test'")
    (world["data"] / "qrels" / "holdout.tsv").symlink_to("test.tsv")
    result = cli(*mine_args(world, "--split", "holdout", "--force"))
    assert result.exit_code == 1
    assert f"links to {test_qrels}, the 'test' split" in one_error(result)
    assert cli(*mine_args(world, "--split", "holdout", "--force", "--allow-eval-queries", "-q")).exit_code == 0


def test_conflicting_qrels_rows_warn_once_and_keep_the_last(cli, world) -> None:
    qrels = world["data"] / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q1\td1\t0\nq2\td3\t0\n")
    result = cli(*mine_args(world, "--force", "-q"))
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "qrels" in ln]
    assert warnings == [
        f"qrels: warning: {qrels}: 2 row(s) give a (query, doc) pair another score than an earlier row "
        "(e.g. 'q1' 'd1': 1 at line 2, 0 at line 5); the last score is kept"
    ]


# ---------------------------------------------------------------------------------------------
# 12. Vector sets: manifest, shards and ids agree; reruns repair their own damage; --out of another stage
# ---------------------------------------------------------------------------------------------


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


def _edit_embedded(world, rel: str, edit) -> None:
    """Edit `hash-16/<rel>` of the embed artifact and re-hash it in both manifests (model and top)."""
    edit(world["embed"] / "hash-16" / rel)
    _refresh((world["embed"] / "hash-16", rel), (world["embed"], f"hash-16/{rel}"))
    _refresh((world["embed"], "hash-16/manifest.json"))  # the top manifest lists the model manifest too


def _edit_manifest(folder: Path, edit) -> None:
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    edit(manifest)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def _set_output_field(rel: str, key: str, value):
    def edit(manifest):
        for entry in manifest["outputs"]:
            if entry["path"] == rel:
                entry[key] = value

    return edit


def test_a_vector_set_manifest_must_describe_its_files(cli, world) -> None:
    import shutil

    reduce_dir, vec = world["reduce"], "corpus/vectors-00000.npy"
    good = (reduce_dir / "manifest.json").read_bytes()
    edits = [
        (_set_output_field(vec, "dim", 99), f"outputs '{vec}': field 'dim' is 99 but vectors-00000.npy has 6"),
        (_set_output_field(vec, "rows", 9), f"outputs '{vec}': field 'rows' is 9 but vectors-00000.npy has 8"),
        (lambda m: m.pop("outputs"), "manifest.json lists no outputs"),
    ]
    for edit, message in edits:
        _edit_manifest(reduce_dir, edit)
        for argv in (mine_args(world, "--force"), ["eval", "--data", world["data"], "--out", world["runs"] / "ev",
                                                   "--first-stage", "dense", "--vectors", reduce_dir]):  # fmt: skip
            result = cli(*argv)
            assert result.exit_code == 1, argv
            error = one_error(result)
            assert message in error and f"--out {reduce_dir} --force" in error, error
        (reduce_dir / "manifest.json").write_bytes(good)
    # A shard copied in that the manifest does not list: every reader takes every shard in the folder.
    for name in ("vectors-00001.npy", "ids-00001.jsonl"):
        shutil.copy(reduce_dir / "corpus" / name.replace("1.", "0."), reduce_dir / "corpus" / name)
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {reduce_dir}/corpus/vectors-00001.npy is not in {reduce_dir}/")
    # reduce reads the embed model folders through the same check.
    _edit_manifest(world["embed"] / "hash-16", _set_output_field(vec, "dim", 99))
    _refresh((world["embed"], "hash-16/manifest.json"))
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--force")
    assert result.exit_code == 1
    assert "field 'dim' is 99 but vectors-00000.npy has 16" in one_error(result)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_vectors_are_refused_by_every_reader(cli, world, bad: str) -> None:
    import numpy as np

    def poison(path: Path) -> None:
        x = np.load(path)
        x[3, 1] = float(bad)
        np.save(path, x)

    vec = "corpus/vectors-00000.npy"
    poison(world["reduce"] / vec)
    _refresh((world["reduce"], vec))
    expected = f"Error: {world['reduce'] / vec}: row 3: the vector holds NaN or inf"
    for argv in (mine_args(world, "--force"), ["eval", "--data", world["data"], "--out", world["runs"] / "ev",
                                               "--first-stage", "dense", "--vectors", world["reduce"]]):  # fmt: skip
        result = cli(*argv)
        assert result.exit_code == 1, argv
        assert one_error(result).startswith(expected), argv
    _edit_embedded(world, vec, poison)
    before = snapshot(world["reduce"])
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--force")
    assert result.exit_code == 1  # not numpy's LinAlgError from the PCA
    assert one_error(result).startswith(f"Error: {world['embed'] / 'hash-16' / vec}: row 3: ")
    assert snapshot(world["reduce"]) == before


def test_ids_files_are_checked_line_by_line(cli, world) -> None:
    ids = "corpus/ids-00000.jsonl"

    def line(i: int, content: bytes):
        def edit(path: Path) -> None:
            lines = path.read_bytes().splitlines(keepends=True)
            lines[i] = content
            path.write_bytes(b"".join(lines))

        return edit

    # A duplicate (a row silently given to the wrong id) and an id that is not in the corpus.
    for edit, message in (
        (line(5, b'{"id": "d1"}\n'), f"{ids}:6: field 'id': duplicate id 'd1' (also at ids-00000.jsonl:1)"),
        (line(2, b'{"id": "dZZZ"}\n'), f"{ids}:3: field 'id': 'dZZZ' is not in the corpus of --data"),
    ):
        good = (world["reduce"] / ids).read_bytes()
        edit(world["reduce"] / ids)
        _refresh((world["reduce"], ids))
        result = cli(*mine_args(world, "--force"))
        assert result.exit_code == 1
        assert one_error(result).startswith(f"Error: {world['reduce'] / ids.split(':')[0]}:"), result.stderr
        assert message in one_error(result)
        (world["reduce"] / ids).write_bytes(good)
        _refresh((world["reduce"], ids))
    # A record without its 'id' key: reduce names the line (it used to die in a KeyError).
    _edit_embedded(world, ids, line(3, b'{"doc": "d4"}\n'))
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--force")
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {world['embed'] / 'hash-16' / ids}:4: field 'id': ")


def test_vector_shards_must_hold_floats(cli, world) -> None:
    import numpy as np

    vec = "corpus/vectors-00000.npy"
    x = np.load(world["embed"] / "hash-16" / vec)
    _edit_embedded(world, vec, lambda p: np.save(p, (x * 100).astype(np.int32)))
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--force")
    assert result.exit_code == 1  # not cast silently
    assert "expected a 2-D float32 array, got shape (8, 16) of int32" in one_error(result)
    # Another float width is read with a cast: float64 holds the float32 values exactly, so nothing changes.
    rows = (world["reduce"] / "corpus" / "vectors-00000.npy").read_bytes()
    _edit_embedded(world, vec, lambda p: np.save(p, x.astype(np.float64)))
    assert cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--force", "-q").exit_code == 0
    assert (world["reduce"] / "corpus" / "vectors-00000.npy").read_bytes() == rows


def _flip_tail(path: Path, *, keep_mtime: bool = False) -> None:
    """Same size, other bytes (a bit-rotted or hand-edited shard); optionally with its old mtime."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 40, len(data) - 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_embed_rerun_reencodes_a_shard_changed_since_it_was_written(cli, world, tmp_path: Path) -> None:
    args = ["embed", "--data", world["data"], "--model", "hash:16", "--model", "hash:8", "-q"]
    assert cli(*args, "--out", tmp_path / "clean").exit_code == 0
    clean = snapshot(tmp_path / "clean" / "hash-16" / "corpus")
    shard = world["embed"] / "hash-16" / "corpus" / "vectors-00000.npy"
    ids = world["embed"] / "hash-16" / "corpus" / "ids-00000.jsonl"
    damages = [
        (lambda: _flip_tail(shard), []),
        (lambda: _flip_tail(shard, keep_mtime=True), ["--verify"]),  # only a full re-hash sees this one
        # ids swapped and both manifests gone: only the shard markers are left to judge the files by
        (lambda: (ids.write_bytes(b"".join(reversed(ids.read_bytes().splitlines(keepends=True)))),
                  (world["embed"] / "manifest.json").unlink(),
                  (world["embed"] / "hash-16" / "manifest.json").unlink()), []),
    ]  # fmt: skip
    for damage, extra in damages:
        damage()
        result = cli(*args, "--out", world["embed"], *extra)
        assert result.exit_code == 0, result.stderr
        assert "changed since it was written" in result.stderr
        shards = snapshot(world["embed"] / "hash-16" / "corpus")
        assert {k: shards[k] for k in clean if not k.startswith(".done")} == {
            k: v for k, v in clean.items() if not k.startswith(".done")
        }
        # and the repaired artifact is up to date, even under --verify
        again = cli(*args, "--out", world["embed"], "--verify")
        assert again.exit_code == 0 and "changed" not in again.stderr, again.stderr


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
