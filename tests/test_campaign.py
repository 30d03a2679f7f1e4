"""The second bad-input and fault campaign (issue 23), as a hostile user and a flaky machine make them: each case
asserts the exit code, the one `Error:` line (or the warning), and the sha256 of every file of an existing artifact
before and after. A failed write leaves the old artifact as it was; an up-to-date run writes nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import mine_args, one_error, snapshot, write_beir

from hnm_cli.artifacts import output_dir


def read_only(monkeypatch, *folders: Path) -> None:
    """Make `folders` (and what is under them) refuse writes as a read-only mount would, for this process.

    The tests run as root on CI, where chmod refuses nothing: os.access, os.open for writing and os.replace into
    the folders are made to fail with EACCES the way the kernel fails them for a user without write permission.
    """
    roots = [f.resolve() for f in folders]

    def inside(path: object) -> bool:
        p = Path(os.fsdecode(path)).resolve()  # type: ignore[arg-type]
        return any(p == r or r in p.parents for r in roots)

    real_access, real_open, real_replace = os.access, os.open, os.replace

    def access(path, mode, *a, **k):
        if mode & os.W_OK and inside(path):
            return False
        return real_access(path, mode, *a, **k)

    def open_(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(Path(os.fsdecode(path)).parent):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    def replace(src, dst, *a, **k):
        if inside(Path(os.fsdecode(dst)).parent) or inside(Path(os.fsdecode(src)).parent):
            raise PermissionError(13, "Permission denied", os.fsdecode(src), None, os.fsdecode(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace)


# ---------------------------------------------------------------------------------------------
# Bad 7: the staged commit checks its targets first, and rolls back a move that fails all the same
# ---------------------------------------------------------------------------------------------


def test_a_read_only_subfolder_mid_commit_keeps_the_old_artifact(cli, world, monkeypatch) -> None:
    before = snapshot(world["mine"])
    read_only(monkeypatch, world["mine"] / "state")
    result = cli(*mine_args(world, "--force", "-q"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {world['mine'] / 'state'}: Permission denied; {world['mine']} was left as it was"
    )
    assert snapshot(world["mine"]) == before
    assert [p.name for p in world["mine"].iterdir() if p.name.startswith(".")] == []


def test_a_move_that_fails_after_the_check_is_rolled_back(cli, world, monkeypatch) -> None:
    """A full disk or a folder turned read-only between the check and the moves: every move made is undone."""
    before = snapshot(world["mine"])
    real_replace = os.replace
    target = world["mine"] / "state" / "space.json"

    failed = []

    def replace(src, dst, *a, **k):
        if Path(os.fsdecode(dst)) == target and not failed:  # the first move onto it; the rollback's may pass
            failed.append(dst)
            raise OSError(28, "No space left on device", os.fsdecode(src), None, os.fsdecode(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    result = cli(*mine_args(world, "--force", "-q", "--num-negatives", "1"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {world['mine'] / 'state'}: No space left on device; {world['mine']} was left as it was"
    )
    assert snapshot(world["mine"]) == before


def test_embed_force_into_a_read_only_model_folder_keeps_every_manifest(cli, world, monkeypatch) -> None:
    before = snapshot(world["embed"])
    real_replace = os.replace

    failed = []

    def replace(src, dst, *a, **k):
        if Path(os.fsdecode(dst)) == world["embed"] / "hash-8" and not failed:  # the rollback's move may pass
            failed.append(dst)
            raise PermissionError(13, "Permission denied", os.fsdecode(src), None, os.fsdecode(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    result = cli("embed", "--data", world["data"], "--out", world["embed"], "-m", "hash:16", "-m", "hash:8", "--force")
    assert result.exit_code == 1
    assert one_error(result) == f"Error: {world['embed']}: Permission denied; {world['embed']} was left as it was"
    assert snapshot(world["embed"]) == before


# ---------------------------------------------------------------------------------------------
# Bad 4: a read-only artifact that is up to date is a success; writability matters only when writing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["embed", "reduce", "mine", "eval"])
def test_a_read_only_up_to_date_artifact_exits_0(cli, world, monkeypatch, stage: str) -> None:
    args = {
        "embed": ["embed", "--data", world["data"], "--out", world["embed"], "-m", "hash:16", "-m", "hash:8"],
        "reduce": ["reduce", "--embeddings", world["embed"], "--out", world["reduce"], "--n-components", "6"],
        "mine": mine_args(world),
        "eval": ["eval", "--data", world["data"], "--out", world["eval"], "--top-k", "5"],
    }[stage]
    before = snapshot(world[stage])
    read_only(monkeypatch, world[stage])
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stderr
    assert snapshot(world[stage]) == before
    result = cli(*args, "--verify")
    assert result.exit_code == 0, result.stderr
    result = cli(*args, "--force")
    assert result.exit_code == 1
    assert one_error(result) == f"Error: --out {world[stage]} is not writable (permission denied)"
    assert snapshot(world[stage]) == before


# ---------------------------------------------------------------------------------------------
# Weak: what an interrupted run leaves behind
# ---------------------------------------------------------------------------------------------


def test_an_up_to_date_rerun_removes_a_dead_runs_lock_and_staging(cli, world) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    before = snapshot(world["mine"])
    (world["mine"] / ".hnm.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    staging = world["mine"] / f".staging-{dead.pid}"
    (staging / "state").mkdir(parents=True)
    (staging / "rows-00000.jsonl").write_text("{}\n")
    result = cli(*mine_args(world))
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stderr
    assert snapshot(world["mine"]) == before  # the leftovers are gone, the artifact's files unchanged


def test_a_lock_whose_pid_was_reused_by_another_process_is_stale(cli, world) -> None:
    """A killed run's lock names a pid that a later, unrelated process got: its start time tells them apart."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        (world["mine"] / ".hnm.lock").write_text(f"{other.pid} {socket.gethostname()} 1\n")
        result = cli(*mine_args(world, "--force"))
        assert result.exit_code == 0, result.stderr
        assert "removing a stale lock" in result.stderr
        assert not (world["mine"] / ".hnm.lock").exists()
    finally:
        other.kill()
        other.wait()


def test_a_lock_of_a_live_run_is_respected(cli, world) -> None:
    me = output_dir.lock_text()
    (world["mine"] / ".hnm.lock").write_text(me + "\n")
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {world['mine']} is being written by another hnm process (pid ")
    assert snapshot(world["mine"]) == before


# ---------------------------------------------------------------------------------------------
# Bad 1: the up-to-date check covers every manifest an artifact is made of
# ---------------------------------------------------------------------------------------------


def embed_args(w: dict[str, Path], *extra) -> list:
    return ["embed", "--data", w["data"], "--out", w["embed"], "-m", "hash:16", "-m", "hash:8", *extra]


def vectors_of(folder: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(folder).items() if k.endswith((".npy", ".jsonl")) and "/.cache/" not in k}


@pytest.mark.parametrize("content", [b"", b'{"stage": "embed-mo', b"[1, 2]", b"{}", b'{"stage": "embed-model"}'])
def test_a_damaged_model_manifest_under_an_intact_top_is_repaired(cli, world, content: bytes) -> None:
    model_manifest = world["embed"] / "hash-8" / "manifest.json"
    good = orjson.loads(model_manifest.read_bytes())
    vectors = vectors_of(world["embed"])
    model_manifest.write_bytes(content)
    result = cli(*embed_args(world))
    assert result.exit_code == 0, result.stderr
    assert "up to date (" not in result.stderr.splitlines()[-1]
    repaired = orjson.loads(model_manifest.read_bytes())
    assert repaired["outputs"] == good["outputs"] and repaired["fingerprint"] == good["fingerprint"]
    assert vectors_of(world["embed"]) == vectors  # nothing re-encoded differently
    again = cli(*embed_args(world))
    assert again.exit_code == 0 and "embed: up to date" in again.stderr


def test_a_hand_edited_model_manifest_is_caught_by_verify(cli, world) -> None:
    model_manifest = world["embed"] / "hash-8" / "manifest.json"
    good = orjson.loads(model_manifest.read_bytes())
    st = model_manifest.stat()
    edited = model_manifest.read_bytes().replace(b'"embed-model"', b'"embed-modex"')
    model_manifest.write_bytes(edited)
    os.utime(model_manifest, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only --verify sees it
    assert cli(*embed_args(world)).exit_code == 0
    assert model_manifest.read_bytes() == edited
    result = cli(*embed_args(world, "--verify"))
    assert result.exit_code == 0, result.stderr
    assert "content changed" in result.stderr
    assert orjson.loads(model_manifest.read_bytes())["stage"] == good["stage"]


# ---------------------------------------------------------------------------------------------
# Bad 2: a recorded file the cheap check trusts is parsed with error handling (bit rot: same size, same mtime)
# ---------------------------------------------------------------------------------------------


def bit_rot(path: Path, old: bytes, new: bytes) -> None:
    """Replace `old` by `new` (same length) in `path`, keeping its size and mtime: only --verify can see it."""
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert old in data, data[:200]
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


ROT = [
    ("mine", "state/space.json", b'"space"', b'"spacf"'),
    ("mine", "state/docs.jsonl", b'"h"', b'"k"'),
    ("mine", "state/queries.jsonl", b'{"id"', b'["id"'),
    ("reduce", "fusion.json", b'"scales"', b'"scalez"'),
    ("reduce", "fusion.json", b"16,", b"15,"),
    ("reduce", "pca/components.npy", b"'descr'", b"'dxscr'"),
    ("reduce", "pca/mean.npy", b"'shape': (", b"'shape':[("),
    ("eval", "report.json", b'"runs"', b'"rung"'),
]


@pytest.mark.parametrize(("stage", "rel", "old", "new"), ROT, ids=[f"{r[1]}:{r[2].decode()}" for r in ROT])
def test_bit_rot_in_a_recorded_file_is_one_error_line(cli, world, tmp_path, stage, rel, old, new) -> None:
    bit_rot(world[stage] / rel, old, new)
    before = snapshot(world[stage])
    if stage == "mine":
        result = cli(*mine_args(world, "--update", world["mine"], "--out", tmp_path / "next"))
    elif stage == "reduce":
        result = cli(
            "reduce", "--embeddings", world["embed"], "--out", tmp_path / "next", "--fit-from", world["reduce"]
        )
    else:
        result = cli("eval", "--data", world["data"], "--out", world["eval"], "--top-k", "5")
    assert result.exit_code == 1
    line = one_error(result)
    named = world[stage] / ("pca" if rel.startswith("pca/") else rel)  # a fit is read as one (its arrays must agree)
    assert line.startswith(f"Error: {named} is damaged (")
    assert (
        "Hint: --verify re-hashes every file of an artifact against its manifest; --force rebuilds it" in result.stderr
    )
    assert snapshot(world[stage]) == before
    assert not (tmp_path / "next").exists()
    if stage == "eval":
        shown = cli("show", world["eval"])
        assert shown.exit_code == 1 and f"{world['eval'] / 'report.json'}" in one_error(shown)


# ---------------------------------------------------------------------------------------------
# Bad 13: weights that make a block vanish, and zero vectors that would silently empty a result
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", ["1e-300", "1e-7", "1e300"])
def test_a_weight_that_makes_a_block_vanish_is_refused(cli, world, tmp_path, weight: str) -> None:
    config = tmp_path / "w.toml"
    config.write_text(f'[reduce.weights]\n"hash-8" = {weight}\n')
    before = snapshot(world["reduce"])
    result = cli("reduce", "--embeddings", world["embed"], "--out", world["reduce"], "-c", config, "--force")
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: reduce.weights.hash-8 = {float(weight)!r} makes a model's block vanish in float32 vectors; "
        "give a weight in [1e-06, 1e+06]"
    )
    assert snapshot(world["reduce"]) == before


def test_zero_vectors_are_refused_where_they_would_empty_a_search(cli, world) -> None:
    from conftest import _refresh

    vec = "corpus/vectors-00000.npy"
    x = np.load(world["reduce"] / vec)
    x[2] = 0.0
    np.save(world["reduce"] / vec, x)
    _refresh((world["reduce"], vec))
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {world['reduce'] / vec}: row 2: the vector is all zeros; the vector set is corrupt (rebuild it)"
    )
    assert snapshot(world["mine"]) == before


# ---------------------------------------------------------------------------------------------
# Bad 11: relevance grades are bounded when qrels are read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grade", ["9" * 400, "2147483648", "-2147483649", "0" * 30 + "1"])
def test_a_huge_relevance_grade_is_refused_by_every_reader(cli, world, grade: str) -> None:
    qrels = world["data"] / "qrels" / "test.tsv"
    qrels.write_text(f"query-id\tcorpus-id\tscore\nq4\td7\t{grade}\n")
    before = snapshot(world["eval"])
    result = cli("eval", "--data", world["data"], "--out", world["eval"], "--top-k", "5")
    if grade.lstrip("0") == "1":  # leading zeros are still a small grade
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 1
    shown = f"{grade[:20]}..." if len(grade) > 20 else grade
    assert one_error(result) == (
        f"Error: {qrels}:2: field 'score': relevance grade {shown} is out of range (at most 2147483647 in absolute "
        "value)"
    )
    assert snapshot(world["eval"]) == before
    (world["data"] / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t{grade}\n")
    before = snapshot(world["mine"])
    result = cli(*mine_args(world))
    assert result.exit_code == 1 and "is out of range" in one_error(result)
    assert snapshot(world["mine"]) == before


# ---------------------------------------------------------------------------------------------
# Bad 12: the leakage guard follows the chain of --base-model train-reranker artifacts
# ---------------------------------------------------------------------------------------------


def _trained(folder: Path, *, mined_split: str | None, base: Path | str) -> Path:
    """A train-reranker artifact as eval sees it: a model folder and a manifest naming its mine and its base."""
    from hnm_cli.artifacts.manifest import write_manifest

    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config_sentence_transformers.json").write_text('{"model_type": "SentenceTransformer"}')
    inputs: list[dict] = [{"role": "base-model", "path": str(base), "sha256": "b"}]
    if mined_split is not None:
        mine = folder.parent / f"{folder.name}-mine"
        write_manifest(mine, stage="mine", fingerprint="x", params={"split": mined_split}, inputs=[], outputs=[],
                       stats={}, started=0.0)  # fmt: skip
        inputs.append({"role": "mined", "path": str(mine), "stage": "mine", "sha256": "z"})
    write_manifest(folder, stage="train-reranker", fingerprint="y", params={}, inputs=inputs, outputs=[], stats={},
                   started=0.0)  # fmt: skip
    return folder


@pytest.mark.parametrize("base_as", ["artifact", "model folder"])
def test_a_model_fine_tuned_from_a_base_trained_on_test_is_refused(cli, world, tmp_path, base_as: str) -> None:
    grand = _trained(tmp_path / "grand", mined_split="test", base="pkg:all-MiniLM-L6-v2")
    parent = _trained(
        tmp_path / "parent", mined_split="train", base=grand if base_as == "artifact" else grand / "model"
    )
    child = _trained(tmp_path / "child", mined_split="train", base=parent / "model")
    result = cli("eval", "--data", world["data"], "--out", tmp_path / "ev", "--model", f"m={child}")
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: --model m: {child} (fine-tuned from {grand}) was trained on the 'test' split, the split being "
        "evaluated"
    )
    assert not (tmp_path / "ev").exists()


# ---------------------------------------------------------------------------------------------
# Bad 10 and weak: a manifest's inputs are validated, and its output paths stay inside the artifact
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("inputs", ["corpus.jsonl"], "its 'inputs' is not a list of files"),
        ("inputs", {"path": "x"}, "its 'inputs' is not a list of files"),
        ("params", [], "its 'params' is not a JSON object"),
        ("stage", 7, "its 'stage' is not a string"),
        ("outputs", [{"path": "../../../etc/passwd", "bytes": 1}], "its output '../../../etc/passwd' lies outside"),
        ("outputs", [{"path": "/etc/passwd", "bytes": 1}], "its output '/etc/passwd' lies outside the artifact"),
    ],
)
def test_a_manifest_with_bad_fields_is_one_error_line(cli, world, field: str, value, why: str) -> None:
    path = world["mine"] / "manifest.json"
    data = orjson.loads(path.read_bytes())
    data[field] = value
    path.write_bytes(orjson.dumps(data))
    before = snapshot(world["mine"])
    result = cli("show", world["mine"])
    assert result.exit_code == 1
    line = one_error(result)
    assert line.startswith(f"Error: {path} is unreadable ({why}"), line
    assert snapshot(world["mine"]) == before


def test_a_model_name_with_dotdot_in_an_embed_manifest_is_refused(cli, world, tmp_path) -> None:
    path = world["embed"] / "manifest.json"
    data = orjson.loads(path.read_bytes())
    data["params"]["models"][1]["name"] = "../../elsewhere"
    path.write_bytes(orjson.dumps(data))
    result = cli("reduce", "--embeddings", world["embed"], "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {path}: model name '../../elsewhere' is not a folder of the artifact; rebuild it with --force"
    )


# ---------------------------------------------------------------------------------------------
# Bad 6 and weak: the config and every input file must be a regular file; anything else is named for what it is
# ---------------------------------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "kind"), [(_fifo, "a named pipe (FIFO)"), (lambda p: Path("/dev/zero"), "a character device")]
)
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(cli, world, tmp_path, make, kind: str) -> None:
    config = make(tmp_path / "c.toml")
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "-c", config, "--force"))  # a FIFO would block here forever, /dev/zero eat RAM
    assert result.exit_code == 1
    assert one_error(result) == f"Error: config {config} is {kind}; expected a TOML file"
    assert snapshot(world["mine"]) == before


@pytest.mark.parametrize("option", ["--corpus", "--queries", "--qrels"])
def test_an_input_that_is_a_fifo_is_named_as_one(cli, world, tmp_path, option: str) -> None:
    fifo = _fifo(tmp_path / "pipe")
    before = snapshot(world["eval"])
    result = cli("eval", "--data", world["data"], option, fifo, "--out", world["eval"], "--top-k", "5")
    assert result.exit_code == 1
    expected = "a qrels TSV file or a folder" if option == "--qrels" else "a JSONL file or a folder"
    assert one_error(result) == f"Error: {fifo} is a named pipe (FIFO); expected {expected}"
    assert snapshot(world["eval"]) == before


def test_a_beir_file_that_is_a_fifo_or_a_device_is_named(cli, world, tmp_path) -> None:
    data = write_beir(tmp_path / "d")
    (data / "qrels" / "train.tsv").unlink()
    _fifo(data / "qrels" / "train.tsv")
    result = cli(*mine_args(world, "--data", data, "--out", tmp_path / "m"))
    assert result.exit_code == 1
    assert (
        one_error(result) == f"Error: {data / 'qrels' / 'train.tsv'} is a named pipe (FIFO); expected a qrels TSV file"
    )
    (data / "corpus.jsonl").unlink()
    (data / "corpus.jsonl").symlink_to("/dev/zero")
    result = cli("embed", "--data", data, "--out", tmp_path / "e", "-m", "hash:8")
    assert result.exit_code == 1
    assert one_error(result) == f"Error: {data / 'corpus.jsonl'} is a character device; expected a JSONL file"
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------
# Bad 5, 8, 9: caches are rebuilt when they do not fit, never trusted, never followed out of the artifact
# ---------------------------------------------------------------------------------------------


def _add_doc(data: Path) -> None:
    """One more document: the next embed run encodes it (and reads the cache for the rest)."""
    with open(data / "corpus.jsonl", "ab") as fh:
        fh.write(orjson.dumps({"_id": "d9", "title": "New", "text": "A brand new document about DNS zones."}) + b"\n")


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_an_embedding_cache_that_is_a_file_or_a_link_is_rebuilt(cli, world, tmp_path, what: str) -> None:
    cache = world["embed"] / "hash-8" / ".cache"
    elsewhere = tmp_path / "elsewhere"
    import shutil

    shutil.rmtree(cache)
    if what == "file":
        cache.write_text("not a folder\n")
    else:
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("mine\n")
        cache.symlink_to(elsewhere, target_is_directory=True)
    _add_doc(world["data"])
    result = cli(*embed_args(world))
    assert result.exit_code == 0, result.stderr
    assert f"embed: {cache} is not a folder (a file or a link); starting the cache afresh" in result.stderr
    assert cache.is_dir() and not cache.is_symlink() and list(cache.glob("seg-*.json"))
    assert (world["embed"] / "manifest.json").is_file() and (world["embed"] / "hash-8" / "manifest.json").is_file()
    if what == "symlink":
        assert snapshot(elsewhere) == {"keep.txt": snapshot(elsewhere)["keep.txt"]} and len(snapshot(elsewhere)) == 1


def _rewrite_segment(cache: Path, edit) -> None:
    """Replace the vectors of the cache's one segment by `edit(vectors)`, re-recording its json (a consistent
    segment, as a hostile copy or another model's cache would be)."""
    import hashlib

    (desc,) = cache.glob("seg-*.json")
    seg = desc.name[: -len(".json")]
    vectors = edit(np.load(cache / f"{seg}.vectors.npy"))
    np.save(cache / f"{seg}.vectors.npy", vectors)
    info = orjson.loads(desc.read_bytes())
    info["dim"] = int(vectors.shape[1])
    info["sha256"]["vectors"] = hashlib.sha256((cache / f"{seg}.vectors.npy").read_bytes()).hexdigest()
    desc.write_bytes(orjson.dumps(info))


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda v: np.concatenate([v, v], axis=1), "vectors of dimension 16, the encoder's is 8"),
        (lambda v: np.where(np.arange(len(v))[:, None] == 1, np.nan, v).astype(np.float32), "holds NaN or inf"),
        (lambda v: np.where(np.arange(len(v))[:, None] == 1, 0, v).astype(np.float32), "or is all zeros"),
    ],
)
def test_a_cache_segment_that_does_not_fit_is_dropped_and_encoded_again(cli, world, tmp_path, edit, why: str) -> None:
    _rewrite_segment(world["embed"] / "hash-8" / ".cache", edit)
    _add_doc(world["data"])  # every shard is rebuilt: from the cache, were the segment trusted
    result = cli(*embed_args(world))
    assert result.exit_code == 0, result.stderr
    assert "is damaged (" in result.stderr and why in result.stderr
    clean = tmp_path / "clean"
    assert cli(*embed_args({**world, "embed": clean})).exit_code == 0
    assert vectors_of(world["embed"]) == vectors_of(clean)  # encoded again: a cold run's bytes


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_an_export_cache_entry_replaced_by_a_file_is_rebuilt(tmp_path, monkeypatch, what: str) -> None:
    from hnm_cli.choices import Backend, Quantize
    from hnm_cli.encoding import backends

    class Model:  # what exported_model asks of a sentence-transformers model before the (faked) export
        def get_embedding_dimension(self) -> int:
            return 8

        def preprocess(self, texts):
            return {"input_ids": [[1, 2]], "attention_mask": [[1, 1]]}

    def export(graph, args, names, quantize, out: Path) -> None:
        (out / "model.onnx").write_bytes(b"graph")

    monkeypatch.setattr(backends, "_input_names", lambda m: ["input_ids", "attention_mask"])
    monkeypatch.setattr(backends._Graph, "build", staticmethod(lambda m, names: None))
    monkeypatch.setattr(backends, "_export_onnx", export)
    folder, reused = backends.exported_model(Model(), "m", "w", Backend.ONNX, Quantize.NONE, tmp_path)
    assert not reused and (folder / "model.onnx").read_bytes() == b"graph"
    import shutil

    shutil.rmtree(folder)
    if what == "file":
        folder.write_text("junk\n")
    else:
        (tmp_path / "other").mkdir()
        folder.symlink_to(tmp_path / "other", target_is_directory=True)
    again, reused = backends.exported_model(Model(), "m", "w", Backend.ONNX, Quantize.NONE, tmp_path)
    assert again == folder and not reused and folder.is_dir() and not folder.is_symlink()
    assert backends.exported_model(Model(), "m", "w", Backend.ONNX, Quantize.NONE, tmp_path) == (folder, True)
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------------
# Bad 3: a --ray-address pointing at nothing fails within a bounded connect timeout, naming the address
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # importing ray takes seconds
@pytest.mark.parametrize("kind", ["closed port", "unresolvable host", "ray:// closed port"])
def test_a_ray_address_pointing_at_nothing_fails_at_once(cli, world, kind: str) -> None:
    pytest.importorskip("ray")
    import time

    port = _closed_port()
    address = {"closed port": f"127.0.0.1:{port}", "unresolvable host": "no-such-host.invalid:6379",
               "ray:// closed port": f"ray://127.0.0.1:{port}"}[kind]  # fmt: skip
    before = snapshot(world["embed"])
    started = time.monotonic()
    result = cli(*embed_args(world, "--executor", "ray", "--ray-address", address, "--force"))
    assert time.monotonic() - started < 60  # ray.init alone kept retrying past 150 s
    assert result.exit_code == 1
    host = "no-such-host.invalid" if kind == "unresolvable host" else "127.0.0.1"
    line = one_error(result)
    assert line.startswith(f"Error: --ray-address {address}: nothing answers at {host}:{address.rsplit(':', 1)[1]} (")
    assert snapshot(world["embed"]) == before


# ---------------------------------------------------------------------------------------------
# Weak: leakage gaps a user can hit without trying
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("copy", ["reordered", "crlf", "regraded"])
def test_a_reordered_or_crlf_copy_of_the_test_qrels_is_refused(cli, world, tmp_path, copy: str) -> None:
    rows = [("q4", "d7"), ("q4", "d8")]
    (world["data"] / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in rows)
    )
    body = {
        "reordered": "query-id\tcorpus-id\tscore\nq4\td8\t1\nq4\td7\t1\n",
        "crlf": "query-id\tcorpus-id\tscore\r\nq4\td7\t1\r\nq4\td8\t1\r\n",
        "regraded": "query-id\tcorpus-id\tscore\nq4\td7\t2\nq4\td8\t2\n",
    }[copy]
    mined_as = world["data"] / "qrels" / "mine-me.tsv"
    mined_as.write_bytes(body.encode())
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "--qrels", mined_as, "--force"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: --qrels {mined_as} has the same content as {world['data'] / 'qrels' / 'test.tsv'}, the 'test' split "
        "(an evaluation split): the same (query, document) pairs: mining its queries leaks evaluation data into "
        "training; pass --allow-eval-queries to do it anyway"
    )
    assert snapshot(world["mine"]) == before


def test_empty_eval_splits_says_the_mining_guard_is_off(cli, world, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[mine]\neval_splits = []\n")
    result = cli(*mine_args(world, "-c", config))
    assert result.exit_code == 0, result.stderr
    assert "mine: warning: eval_splits is empty, so no split is protected from mining (the leakage guard is off)" in (
        result.stderr
    )


@pytest.mark.parametrize("twin", ["Back up my block volume, every night!", "ｂａｃｋ up my block volume every night"])
def test_twin_queries_differing_by_punctuation_or_unicode_form_are_caught(cli, tmp_path, twin: str) -> None:
    from conftest import TINY_QRELS, TINY_QUERIES, _fake_base

    data = write_beir(tmp_path / "d", queries=[*TINY_QUERIES, {"_id": "q9", "text": twin}],
                      qrels={"train": [*TINY_QRELS["train"], ("q9", "d7")], "test": TINY_QRELS["test"]})  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("embed", "--data", data, "--out", runs / "e", "--model", "hash:8", "-q").exit_code == 0
    assert cli("mine", "--vectors", runs / "e", "--data", data, "--out", runs / "m", "-q").exit_code == 0
    result = cli("train-reranker", "--mined", runs / "m", "--data", data, "--out", runs / "rr",
                 "--base-model", _fake_base(tmp_path / "base"))  # fmt: skip
    assert result.exit_code == 1
    assert "(0 by id, 1 with the same text under another id; e.g. 'q9')" in one_error(result)
    assert not (runs / "rr").exists()


# ---------------------------------------------------------------------------------------------
# Weak: interrupted runs (the lock and staging items are above, with bad 7)
# ---------------------------------------------------------------------------------------------


def test_a_shard_rebuilt_from_the_cache_records_its_distinct_texts(cli, world) -> None:
    marker = world["embed"] / "hash-8" / "corpus" / ".done" / "00000.json"
    first = orjson.loads(marker.read_bytes())
    for shard in (world["embed"] / "hash-8" / "corpus").glob("*-00000.*"):
        shard.unlink()  # the shard goes; its texts are all in the cache
    marker.unlink()
    result = cli(*embed_args(world))
    assert result.exit_code == 0, result.stderr
    again = orjson.loads(marker.read_bytes())
    assert again["unique"] == first["unique"] == 8 and again == first


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_keeps_what_it_encoded_in_the_cache(tmp_path, stop) -> None:
    from test_stage_embed import HASH16, cfg, paths

    from hnm_cli.artifacts.embed_cache import EmbeddingCache, text_key
    from hnm_cli.encoding.encoders import load_encoder
    from hnm_cli.stages import embed

    corpus = [{"_id": f"d{i}", "title": "", "text": f"document number {i} about topic {i % 3}"} for i in range(12)]
    data = write_beir(tmp_path / "data", corpus=corpus)
    seen: list[str] = []

    def factory(resolved, precision="fp32", device="cpu"):
        inner = load_encoder(resolved, precision=precision, device=device)

        class Stops:
            name, dim = inner.name, inner.dim

            def encode(self, texts, kind, batch_size):
                if len(seen) >= 8:
                    raise stop("simulated stop")
                seen.extend(texts)
                return inner.encode(texts, kind, batch_size)

        return Stops()

    out = tmp_path / "out"
    with pytest.raises(stop):
        embed.run(paths(data), out, cfg(HASH16, shard_size=4, batch_size=4), progress=False, encoder_factory=factory)
    plan = embed.plan(paths(data), cfg(HASH16, shard_size=4, batch_size=4))
    cache = EmbeddingCache(out / "hash-16", plan.encoder_fps["hash-16"])
    found, _ = cache.lookup([text_key("document", t) for t in seen])
    assert len(seen) == 8 and found.all()  # both shards encoded before the stop are in the cache
