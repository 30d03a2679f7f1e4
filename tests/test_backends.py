"""Inference backends (ONNX Runtime, OpenVINO): vectors close to torch's, part of the fingerprint, exported once
and reused, and a clear error when the runtime is missing. A tiny BERT built offline keeps these fast; the
packaged MiniLM runs in the slow tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_tiny_bert

from hnm_cli.artifacts.vectors import load_vectors

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="the backends extra is not installed",
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY_CORPUS, TINY_QUERIES

    texts = [d["title"] + " " + d["text"] for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    return build_tiny_bert(tmp_path_factory.mktemp("m") / "tiny", words=texts)


def _embed(cli, data: Path, out: Path, model: Path, *extra: str):
    return cli("embed", "--data", data, "--out", out, "--model", model, *extra)


@pytest.mark.parametrize(("backend", "quantize", "floor"), [("openvino", "none", 0.9999), ("onnx", "none", 0.9999),
                                                            ("onnx", "int8", 0.98), ("openvino", "int8", 0.98)])  # fmt: skip
def test_backend_vectors_match_torch(cli, tiny_data: Path, tmp_path: Path, tiny_model: Path, monkeypatch,
                                     backend: str, quantize: str, floor: float) -> None:  # fmt: skip
    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path / "cache"))
    assert _embed(cli, tiny_data, tmp_path / "t", tiny_model, "--backend", "torch").exit_code == 0
    result = _embed(cli, tiny_data, tmp_path / "b", tiny_model, "--backend", backend, "--quantize", quantize)
    assert result.exit_code == 0, result.stderr
    for part in ("corpus", "queries"):
        ids_t, a = load_vectors(tmp_path / "t" / "tiny" / part)
        ids_b, b = load_vectors(tmp_path / "b" / "tiny" / part)
        assert ids_t == ids_b
        assert float((a * b).sum(axis=1).min()) > floor


def test_backend_is_in_the_fingerprint_and_the_export_is_reused(cli, tiny_data, tmp_path, tiny_model, monkeypatch):
    import orjson

    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path / "cache"))
    assert _embed(cli, tiny_data, tmp_path / "t", tiny_model, "--backend", "torch").exit_code == 0
    assert _embed(cli, tiny_data, tmp_path / "o", tiny_model, "--backend", "openvino").exit_code == 0
    fp = {n: orjson.loads((tmp_path / n / "manifest.json").read_bytes())["fingerprint"] for n in ("t", "o")}
    assert fp["t"] != fp["o"]
    params = orjson.loads((tmp_path / "o" / "tiny" / "manifest.json").read_bytes())["params"]
    assert (params["backend"], params["quantize"]) == ("openvino", "none")
    torch_params = orjson.loads((tmp_path / "t" / "tiny" / "manifest.json").read_bytes())["params"]
    assert "backend" not in torch_params  # torch artifacts keep the fingerprint they had before backends existed
    exports = sorted((tmp_path / "cache" / "exports").iterdir())
    assert len(exports) == 1
    stamp = (exports[0] / "model.xml").stat().st_mtime_ns
    again = _embed(cli, tiny_data, tmp_path / "o2", tiny_model, "--backend", "openvino")
    assert again.exit_code == 0 and "reusing the openvino export" in again.stderr
    assert (exports[0] / "model.xml").stat().st_mtime_ns == stamp
    # A damaged cache entry is rebuilt, never used.
    (exports[0] / "model.bin").write_bytes(b"broken")
    assert _embed(cli, tiny_data, tmp_path / "o3", tiny_model, "--backend", "openvino").exit_code == 0
    _, a = load_vectors(tmp_path / "o" / "tiny" / "corpus")
    _, b = load_vectors(tmp_path / "o3" / "tiny" / "corpus")
    assert np.array_equal(a, b)


def test_a_missing_runtime_is_one_line_naming_the_extra(cli, tiny_data, tmp_path, tiny_model, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # what an uninstalled package looks like to `import`
    result = _embed(cli, tiny_data, tmp_path / "o", tiny_model, "--backend", "openvino")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --backend openvino needs openvino, which is not installed: pip install 'hnm_cli[backends]'"
    )


def test_unsupported_combinations_fail_before_anything_runs(cli, tiny_data, tmp_path, tiny_model) -> None:
    result = _embed(cli, tiny_data, tmp_path / "x", tiny_model, "--backend", "torch", "--quantize", "int8")
    assert result.exit_code == 1 and "--quantize int8 needs --backend onnx or openvino" in result.stderr
    result = _embed(cli, tiny_data, tmp_path / "x", tiny_model, "--backend", "onnx", "--precision", "bf16")
    assert result.exit_code == 1 and "--backend onnx has no bf16 path" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_packaged_minilm_on_openvino_bf16_is_close_to_torch_fp32(cli, tiny_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path / "cache"))
    model = "pkg:all-MiniLM-L6-v2"
    assert cli("embed", "--data", tiny_data, "--out", tmp_path / "t", "--model", model).exit_code == 0
    result = cli("embed", "--data", tiny_data, "--out", tmp_path / "o", "--model", model, "--backend", "openvino",
                 "--precision", "bf16")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    _, a = load_vectors(tmp_path / "t" / "all-MiniLM-L6-v2" / "corpus")
    _, b = load_vectors(tmp_path / "o" / "all-MiniLM-L6-v2" / "corpus")
    assert float((a * b).sum(axis=1).min()) > 0.999
