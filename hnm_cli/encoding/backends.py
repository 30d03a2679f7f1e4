"""Inference backends for sentence-transformers models: ONNX Runtime and OpenVINO, next to torch.

A model is exported once, offline, from its local weights into hnm's model cache (`$HNM_CACHE_DIR/exports/`),
keyed by the weights' identity, the backend, the quantization and the runtime's version, and reused by every
later run. The exported graph is the whole SentenceTransformer after tokenization (Transformer, Pooling and any
Dense modules) up to a trailing Normalize module, which the encoder applies in float32; so its vectors are the
torch model's up to the runtime's arithmetic; tokenization stays sentence-transformers' own
(`SentenceTransformer.preprocess`, prompts included).

Why not sentence-transformers' `backend=` argument: it goes through optimum (optimum-onnx needs transformers
< 4.58, optimum-intel < 5.6), which cannot be installed beside the transformers 5 that sentence-transformers 6
needs. The runtimes' own converters are what optimum calls underneath: `openvino.convert_model`,
`torch.onnx.export`, `onnxruntime.quantization.quantize_dynamic` and NNCF's weight compression.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.choices import Backend, Precision, Quantize
from hnm_cli.errors import ConfigError
from hnm_cli.fileio import file_sha256, remove_path

log = logging.getLogger("hnm")

EXTRA = "backends"  # pyproject's optional extra that brings the runtimes
# Bump when the exported graph changes, so old cache entries are not reused. 2: the graph stops before a trailing
# Normalize module (the encoder normalises in float32, and averages windows of long texts before normalising).
EXPORT_FORMAT = 2
_RUNTIME = {Backend.ONNX: "onnxruntime", Backend.OPENVINO: "openvino"}


def require_runtime(backend: Backend) -> Any:
    """Import the runtime of `backend`, or a one-line ConfigError naming the extra that installs it."""
    import importlib

    name = _RUNTIME[backend]
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(
            f"--backend {backend} needs {name}, which is not installed: pip install 'hnm_cli[{EXTRA}]'"
        ) from err


def runtime_version(backend: Backend) -> str:
    """The installed runtime's version (part of the export key: a new runtime re-exports)."""
    return str(require_runtime(backend).__version__)


def check_supported(backend: Backend, quantize: Quantize, precision: Precision, where: str) -> None:
    """Refuse combinations a backend cannot run, before anything is loaded."""
    if backend == Backend.TORCH and quantize != Quantize.NONE:
        raise ConfigError(f"{where}: --quantize {quantize} needs --backend onnx or openvino (torch runs fp32/bf16)")
    if backend == Backend.ONNX and precision == Precision.BF16:
        raise ConfigError(
            f"{where}: --backend onnx has no bf16 path on CPUs; use --precision fp32 (optionally --quantize int8) "
            "or --backend openvino"
        )


def export_key(identity: str, backend: Backend, quantize: Quantize, dim: int) -> str:
    """Hex digest naming one exported model in the cache."""
    payload = json.dumps(
        {
            "weights": identity,
            "backend": str(backend),
            "quantize": str(quantize),
            "runtime": runtime_version(backend),
            "format": EXPORT_FORMAT,
            "dim": dim,
        },  # fmt: skip
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def modules_before_normalize(st_model: Any) -> list[Any]:
    """The SentenceTransformer's modules without a trailing Normalize module: what the exported graph and the torch
    encoder's windows run, so that window vectors are averaged before they are normalised."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    modules = list(st_model)
    return modules[:-1] if modules and isinstance(modules[-1], Normalize) else modules


class _Graph:
    """The SentenceTransformer's modules after tokenization, as one traceable torch module."""

    @staticmethod
    def build(st_model: Any, input_names: list[str]) -> Any:
        import torch

        modules = modules_before_normalize(st_model)

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st_model

            def forward(self, *tensors: Any) -> Any:
                features: dict[str, Any] = dict(zip(input_names, tensors, strict=True))
                for module in modules:
                    features = module(features)
                return features["sentence_embedding"]

        return Graph().eval()


def _files_digest(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "export.json"}


def exported_model(
    st_model: Any, name: str, identity: str, backend: Backend, quantize: Quantize, cache: Path
) -> tuple[Path, bool]:
    """The folder of the exported model (built now if the cache has no valid copy) and whether it was reused.

    The export is written to a temporary folder and renamed into place, so a killed export is never reused; a
    cached copy whose files no longer match the checksums in its `export.json` is rebuilt.
    """
    dim = int(st_model.get_embedding_dimension() or 0)
    key = export_key(identity, backend, quantize, dim)
    folder = cache / "exports" / f"{name}-{backend}-{quantize}-{key[:16]}"
    meta = folder / "export.json"
    if (folder.exists() or folder.is_symlink()) and (folder.is_symlink() or not folder.is_dir()):
        log.warning("%s: cached %s export %s is not a folder; exporting again", name, backend, folder)
    elif meta.is_file():
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(meta.read_text())
            if recorded.get("key") == key and recorded.get("files") == _files_digest(folder):
                return folder, True
        log.warning("%s: cached %s export is damaged; exporting again", name, backend)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        input_names: list[str] = [
            n for n in ("input_ids", "attention_mask", "token_type_ids") if n in _input_names(st_model)
        ]
        example = st_model.preprocess(["an example text to trace the graph", "a second, longer example text here"])
        args = tuple(example[n] for n in input_names)
        graph = _Graph.build(st_model, input_names)
        if backend == Backend.OPENVINO:
            _export_openvino(graph, args, input_names, quantize, tmp)
        else:
            _export_onnx(graph, args, input_names, quantize, tmp)
        (tmp / "export.json").write_text(
            json.dumps({"key": key, "model": name, "weights": identity, "backend": str(backend),
                        "quantize": str(quantize), "inputs": input_names, "files": _files_digest(tmp)}, indent=2)
        )  # fmt: skip
        remove_path(folder)  # an old export, or whatever replaced it (a file, a link): rebuilt, never reused
        os.replace(tmp, folder)
        log.info("%s: exported to %s (%s, %s) in %.1f s", name, folder, backend, quantize, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, False


def _input_names(st_model: Any) -> list[str]:
    tokenizer = getattr(st_model, "tokenizer", None)
    return list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))


def _export_openvino(graph: Any, args: tuple[Any, ...], names: list[str], quantize: Quantize, out: Path) -> None:
    import openvino as ov
    import torch

    with torch.no_grad():
        model = ov.convert_model(graph, example_input=args)
    for port, name in zip(model.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    if quantize == Quantize.INT8:
        import nncf

        # Weight-only int8 (data-free): the export must not depend on which texts happened to be encoded first.
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)


def _export_onnx(graph: Any, args: tuple[Any, ...], names: list[str], quantize: Quantize, out: Path) -> None:
    import torch

    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
    path = out / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            graph, args, str(path), input_names=names, output_names=["embedding"], dynamic_axes=axes,
            opset_version=17, dynamo=False,
        )  # fmt: skip
    if quantize == Quantize.INT8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMul weights only, per channel: quantizing every op (the library default) cost cosine 0.90-0.96 to
        # fp32 on all-MiniLM-L6-v2; MatMul-only per-channel stays above 0.99.
        tmp = out / "model.fp32.onnx"
        os.replace(path, tmp)
        quantize_dynamic(str(tmp), str(path), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)  # fmt: skip
        tmp.unlink()


class RuntimeSession:
    """A compiled exported model: `run(features) -> float32 (n, dim)`."""

    def __init__(self, folder: Path, backend: Backend, precision: Precision) -> None:
        meta = json.loads((folder / "export.json").read_text())
        self.inputs: list[str] = list(meta["inputs"])
        self.backend = backend
        if backend == Backend.OPENVINO:
            import openvino as ov

            core = ov.Core()
            # bf16 is what OpenVINO picks by itself on CPUs with AMX/AVX512-BF16; fp32 asks for exact float32.
            hint = "bf16" if precision == Precision.BF16 else "f32"
            self._ov = core.compile_model(
                str(folder / "model.xml"), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
            )
            self.precision_used = str(self._ov.get_property("INFERENCE_PRECISION_HINT"))
        else:
            import onnxruntime as ort

            self._ort = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
            self.precision_used = "f32"

    def run(self, features: dict[str, Any]) -> np.ndarray:
        feeds = {n: np.asarray(features[n].cpu().numpy() if hasattr(features[n], "cpu") else features[n], np.int64)
                 for n in self.inputs}  # fmt: skip
        if self.backend == Backend.OPENVINO:
            out = self._ov(feeds)[0]
        else:
            out = self._ort.run(None, feeds)[0]
        return np.asarray(out, dtype=np.float32)
