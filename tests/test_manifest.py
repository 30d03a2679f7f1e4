"""Fingerprints, up-to-date logic and upstream checks, and the CLI on an unreadable or edited input manifest."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import mine_args, one_error

from hnm_cli.artifacts import manifest as mf
from hnm_cli.errors import ArtifactMismatchError, IncompleteArtifactError


def _write(out: Path, fingerprint: str = "sha256:x") -> mf.Manifest:
    started = mf.begin_run(out)
    (out / "rows-00000.jsonl").write_text('{"a":1}\n')
    outputs = [mf.output_entry(out, "rows-00000.jsonl", rows=1)]
    return mf.write_manifest(
        out,
        stage="mine",
        fingerprint=fingerprint,
        params={"k": 1},
        inputs=[],
        outputs=outputs,
        stats={},
        started=started,
    )


def test_fingerprint_is_stable_and_sensitive():
    inputs = [{"role": "corpus", "path": "c.jsonl", "sha256": "abc"}]
    a = mf.compute_fingerprint("mine", {"k": 1, "seed": 0}, inputs)
    assert a == mf.compute_fingerprint("mine", {"seed": 0, "k": 1}, list(reversed(inputs)))
    assert a != mf.compute_fingerprint("mine", {"k": 2, "seed": 0}, inputs)
    assert a != mf.compute_fingerprint("reduce", {"k": 1, "seed": 0}, inputs)
    assert a != mf.compute_fingerprint("mine", {"k": 1, "seed": 0}, [{**inputs[0], "sha256": "abd"}])
    assert a.startswith("sha256:") and len(a) == 7 + 64
    moved = [{**inputs[0], "path": "/elsewhere/c.jsonl"}]
    assert a == mf.compute_fingerprint("mine", {"k": 1, "seed": 0}, moved), "a moved input is the same input"


def test_up_to_date_needs_matching_fingerprint_and_intact_outputs(tmp_path: Path):
    written = _write(tmp_path, "sha256:x")
    assert written.output("rows-00000.jsonl")["rows"] == 1
    assert mf.is_up_to_date(tmp_path, "sha256:x") is not None
    assert mf.is_up_to_date(tmp_path, "sha256:y") is None
    (tmp_path / "rows-00000.jsonl").write_text('{"a":12}\n')  # size changed
    assert mf.is_up_to_date(tmp_path, "sha256:x") is None
    (tmp_path / "rows-00000.jsonl").unlink()
    assert mf.is_up_to_date(tmp_path, "sha256:x") is None


def test_manifest_round_trip_and_digest_ignores_everything_but_outputs(tmp_path: Path):
    a = _write(tmp_path / "a", "sha256:1")
    b = _write(tmp_path / "b", "sha256:2")  # other fingerprint, same bytes
    loaded = mf.load_manifest(tmp_path / "a")
    assert loaded is not None and loaded.to_json() == a.to_json()
    assert a.digest == b.digest


def test_digest_leaves_out_outputs_not_read_downstream():
    rows = {"path": "rows-00000.jsonl", "sha256": "a"}
    stats = {"path": "stats.json", "sha256": "timing-1", "downstream": False}
    assert mf.outputs_digest([rows, stats]) == mf.outputs_digest([rows, {**stats, "sha256": "timing-2"}])
    assert mf.outputs_digest([rows, stats]) != mf.outputs_digest([{**rows, "sha256": "b"}, stats])
    assert mf.outputs_digest([rows]) != mf.outputs_digest([rows, {**stats, "downstream": True}])


def test_begin_run_makes_directory_incomplete(tmp_path: Path):
    _write(tmp_path)
    mf.begin_run(tmp_path)
    assert mf.load_manifest(tmp_path) is None


def test_require_artifact_messages(tmp_path: Path):
    with pytest.raises(IncompleteArtifactError) as err:
        mf.require_artifact(tmp_path / "nope", "reduce", fix="hnm reduce --embeddings E --out R")
    assert str(err.value) == f"{tmp_path / 'nope'} does not exist. Run: hnm reduce --embeddings E --out R"
    (tmp_path / "half").mkdir()
    with pytest.raises(IncompleteArtifactError) as err:
        mf.require_artifact(tmp_path / "half", "reduce", fix="hnm reduce ...")
    assert str(err.value) == f"{tmp_path / 'half'} is incomplete (no manifest.json). Rerun: hnm reduce ..."
    _write(tmp_path / "m")
    with pytest.raises(ArtifactMismatchError) as err:
        mf.require_artifact(tmp_path / "m", ("reduce", "embed-model"), fix="x")
    assert str(err.value) == f"{tmp_path / 'm'} is a 'mine' artifact, expected 'reduce' or 'embed-model'"
    assert mf.require_artifact(tmp_path / "m", "mine", fix="x").stage == "mine"


# Through the CLI: the exit code and the one `Error:` line naming the file (and line, field).


@pytest.mark.parametrize("content", [b"", b'{"stage": ', b"[1, 2]", b"\xff\xfe"])
def test_unreadable_manifest_of_an_input(cli, world, content: bytes) -> None:
    (world["reduce"] / "manifest.json").write_bytes(content)
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {world['reduce']}/manifest.json is unreadable")


def test_edited_manifest_digest_is_caught_by_verify(cli, world) -> None:
    manifest = orjson.loads((world["reduce"] / "manifest.json").read_bytes())
    manifest["outputs"][0]["sha256"] = "0" * 64
    (world["reduce"] / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert cli(*mine_args(world, "--force", "-q")).exit_code == 0  # cheap check: sizes and mtimes agree
    result = cli(*mine_args(world, "--force", "--verify"))
    assert result.exit_code == 1
    assert "content changed" in one_error(result)
