"""`hnm show` checks what it shows: malformed mined rows and eval reports name file and line, the mine artifact
is verified, and a mined doc missing from --data (or another corpus) is an error (or a warning).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import one_error, write_beir


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
