"""Shard naming, atomic writes and vector shard round trips; bad vector sets as every reader sees them (a garbage,
short, swapped, non-finite or integer shard, ids files off by a line or a duplicate, a manifest that does not
describe its files): one `Error:` line naming the file, row or line, and the command that rebuilds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import _refresh, mine_args, one_error, snapshot

from hnm_cli import fileio
from hnm_cli.artifacts import files, vectors
from hnm_cli.errors import IncompleteArtifactError


def test_names_are_zero_padded_and_sort_in_shard_order():
    names = [vectors.vectors_name(i) for i in (0, 2, 10, 100)]
    assert names == ["vectors-00000.npy", "vectors-00002.npy", "vectors-00010.npy", "vectors-00100.npy"]
    assert sorted(names) == names
    assert vectors.ids_name(7) == "ids-00007.jsonl"
    assert files.rows_name(3) == "rows-00003.jsonl"


def test_atomic_write_leaves_no_tmp_file(tmp_path: Path):
    target = tmp_path / "sub" / "a.json"
    fileio.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_atomic_write_keeps_old_file_and_removes_tmp(tmp_path: Path):
    target = tmp_path / "rows.jsonl"
    fileio.write_jsonl(target, [{"x": 1}])

    def rows():
        yield {"x": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        fileio.write_jsonl(target, rows())
    assert target.read_text() == '{"x":1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_vector_shards_round_trip_through_memmap(tmp_path: Path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float64)  # stored as float32 whatever comes in
    b = rng.standard_normal((5, 4)).astype(np.float32)
    vectors.write_vector_shard(tmp_path, 0, ["a0", "a1", "a2"], a)
    vectors.write_vector_shard(tmp_path, 1, [f"b{i}" for i in range(5)], b)
    mm = vectors.open_vector_shards(tmp_path)
    assert [m.dtype for m in mm] == [np.float32, np.float32]
    assert all(m.flags["C_CONTIGUOUS"] for m in mm)
    ids, vecs = vectors.load_vectors(tmp_path)
    assert ids == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    np.testing.assert_array_equal(vecs, np.concatenate([a.astype(np.float32), b]))
    assert vectors.vector_dim(tmp_path) == 4
    blocks = list(vectors.iter_vector_blocks(tmp_path, 2))
    assert [(start, len(block)) for start, block in blocks] == [(0, 2), (2, 1), (3, 2), (5, 2), (7, 1)]


def test_broken_shard_pair_is_reported(tmp_path: Path):
    fileio.save_npy(tmp_path / "vectors-00000.npy", np.zeros((2, 2)))
    with pytest.raises(IncompleteArtifactError, match="has no parallel ids-00000.jsonl"):
        vectors.list_vector_shards(tmp_path)


def test_remove_stale_files_keeps_current_outputs(tmp_path: Path):
    for name in ("rows-00000.jsonl", "rows-00001.jsonl", "rows-00002.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    removed = fileio.remove_stale_files(tmp_path, keep=["rows-00000.jsonl"], patterns=["rows-*.jsonl"])
    assert removed == ["rows-00001.jsonl", "rows-00002.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "rows-00000.jsonl"]


def test_save_npy_notices_a_short_write(tmp_path: Path):
    """np.save writes through C stdio and misses a full disk; save_npy checks the size (RLIMIT_FSIZE as a full disk)."""
    import subprocess
    import sys

    script = (
        "import resource, signal, numpy as np\n"
        "from hnm_cli.fileio import save_npy\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))\n"
        "try:\n"
        "    save_npy('v.npy', np.ones((20, 16)))\n"
        "except OSError as err:\n"
        "    print(err.filename, err.strerror)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout == "v.npy short write (400 of 1408 bytes; disk full?)\n", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the file nor its temp


def test_non_finite_rows_and_non_float_shards_are_refused(tmp_path: Path):
    from hnm_cli.artifacts.vectors import open_vector_source
    from hnm_cli.errors import DataError

    x = np.eye(4, dtype=np.float32)
    x[2, 1] = np.nan
    vectors.write_vector_shard(tmp_path, 0, ["a", "b", "c", "d"], x)
    npy = tmp_path / "vectors-00000.npy"
    message = f"{npy}: row 2: the vector holds NaN or inf"
    with pytest.raises(DataError, match=message):
        list(open_vector_source(tmp_path).blocks(2))
    with pytest.raises(DataError, match=message):
        open_vector_source(tmp_path).take([3, 2])
    assert open_vector_source(tmp_path).take([3, 0]).shape == (2, 4)  # rows not asked for are not read
    with pytest.raises(DataError, match=message):
        vectors.read_vector_rows(npy, 1, 4)
    with pytest.raises(DataError, match=message):
        list(vectors.iter_vector_blocks(tmp_path, 3))
    np.save(npy, np.eye(4, dtype=np.int32))
    with pytest.raises(DataError, match="expected a 2-D float32 array, got shape \\(4, 4\\) of int32"):
        vectors.read_vector_rows(npy, 0, 4)
    np.save(npy, np.eye(4, dtype=np.float16))  # another float width: read with a cast
    assert vectors.read_vector_rows(npy, 0, 4).dtype == np.float32
    assert open_vector_source(tmp_path).take([1])[0, 1] == 1.0


def test_duplicate_ids_are_refused_with_both_lines(tmp_path: Path):
    from hnm_cli.errors import DataError

    vectors.write_vector_shard(tmp_path, 0, ["a", "b"], np.eye(2))
    vectors.write_vector_shard(tmp_path, 1, ["c", "a"], np.eye(2))
    with pytest.raises(
        DataError, match="ids-00001.jsonl:2: field 'id': duplicate id 'a' \\(also at ids-00000.jsonl:1\\)"
    ):
        vectors.read_ids(tmp_path)


# Bad vector sets: every reader (reduce, mine, eval's dense first stage) refuses them with one `Error:` line.


def test_garbage_or_truncated_vector_shard(cli, world) -> None:
    shard = world["reduce"] / "corpus" / "vectors-00000.npy"
    good = shard.read_bytes()
    for damage in (good[:-8], b"not numpy at all" * 10):
        shard.write_bytes(damage)
        result = cli(*mine_args(world, "--force"))
        assert result.exit_code == 1
        assert one_error(result).startswith(f"Error: {world['reduce']}/")


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
