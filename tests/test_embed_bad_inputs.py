"""`hnm embed` on bad input and damaged artifacts (kept apart from tests/test_stage_embed.py for size): a model
that fails to load leaves the old artifact's bytes, and a rerun re-encodes a shard changed since it was written.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import one_error, snapshot


def test_a_model_that_fails_to_load_leaves_the_embed_artifact(cli, world) -> None:
    before = snapshot(world["embed"])
    result = cli("embed", "--data", world["data"], "--out", world["embed"], "--model", "/no/such/model")
    assert result.exit_code == 1
    one_error(result)
    assert snapshot(world["embed"]) == before


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
