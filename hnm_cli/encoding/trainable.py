"""Models to fine-tune: locating a base model without loading it, and loading it as a cross-encoder (keeping a
pretrained reranker's head, or growing a fresh 1-label head on a transformer) or as a bi-encoder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hnm_cli.artifacts.reranker import trained_model_folder
from hnm_cli.choices import Engine, ModelKind
from hnm_cli.encoding.registry import resolve_model
from hnm_cli.errors import ConfigError, InputError
from hnm_cli.model_spec import ModelSpec


def resolve_base_model(source: str, kind: str) -> tuple[str, str]:
    """Locate the base model without loading it.

    Args:
        source: `pkg:<name>`, a local folder (a train-reranker artifact stands for its `model/`: a warm start from
            an earlier fine-tune, as `hnm eval --model` reads it), or a hub id.
        kind: "cross-encoder" or "bi-encoder".

    Returns:
        (what to load: a folder path or a hub id, identity for the fingerprint).

    Raises:
        InputError: a folder that is not a model folder (a cross-encoder needs `config.json`), a missing folder.
        ConfigError: an unknown `pkg:` name, or a `hash:` test encoder (nothing to fine-tune).
    """
    if source.startswith("hash:"):
        raise ConfigError(f"base_model '{source}' is a hashing test encoder with no weights; nothing to fine-tune")
    path = Path(source).expanduser()
    if (trained := trained_model_folder(path)) is not None:
        path, source = trained, str(trained)
    if path.exists():
        needs = ("config.json",) if kind == ModelKind.CROSS_ENCODER else ("config.json", "modules.json")
        if not path.is_dir() or not any((path / n).is_file() for n in needs):
            what = (
                "a cross-encoder or transformer model folder" if kind == ModelKind.CROSS_ENCODER else "a model folder"
            )
            raise InputError(
                f"{path} is not {what} (no {' or '.join(needs)} in it)",
                hint="give a CrossEncoder/transformers folder, pkg:all-MiniLM-L6-v2, or a hub id",
            )
    resolved = resolve_model(ModelSpec(name="base_model", source=source))  # its errors read "model 'base_model': ..."
    if resolved.engine != Engine.SENTENCE_TRANSFORMERS:
        raise ConfigError(f"base_model '{source}' runs on the {resolved.engine} engine, which cannot be fine-tuned")
    target = resolved.weights_path()
    if resolved.kind == "folder" and target is not None and kind == ModelKind.CROSS_ENCODER:
        target = _transformer_subfolder(target)
    return (str(target) if target is not None else source.strip()), resolved.identity


def _transformer_subfolder(folder: Path) -> Path:
    """A sentence-transformers folder whose transformer sits in a subfolder (old `0_Transformer` layout)."""
    if (folder / "config.json").is_file():
        return folder
    modules = folder / "modules.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        for module in json.loads(modules.read_text()):
            if module["type"].endswith("Transformer") and (folder / module["path"] / "config.json").is_file():
                return folder / str(module["path"])
    raise InputError(f"{folder} has no transformer weights (no config.json) to build a cross-encoder from")


def short_error(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def load_cross_encoder(target: str, *, max_length: int, device: str) -> tuple[Any, str]:
    """A CrossEncoder with one output label: a reranker as is, or a transformer with a fresh scoring head.

    Returns:
        (model, head) with head "pretrained" (the folder already was a 1-label reranker) or "fresh".

    Raises:
        InputError: the folder/hub id does not load as a transformer, or is a classifier with != 1 labels.
    """
    import transformers
    from sentence_transformers import CrossEncoder

    try:
        config = transformers.AutoConfig.from_pretrained(target)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot load base_model {target} as a cross-encoder: {short_error(err)}") from err
    archs = getattr(config, "architectures", None) or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    if is_classifier and config.num_labels != 1:
        raise InputError(
            f"{target} is a classifier with {config.num_labels} labels; a reranker needs 1 "
            "(give its base transformer to train a fresh 1-label head)"
        )
    head = "pretrained" if is_classifier else "fresh"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "newly initialised head" report: we log our own line
    try:
        kwargs: dict[str, Any] = {} if is_classifier else {"num_labels": 1}
        model = CrossEncoder(target, max_length=max_length, device=device, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"cannot load base_model {target} as a cross-encoder: {short_error(err)}") from err
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model, head


def load_bi_encoder(target: str, *, max_length: int, device: str) -> Any:
    """A SentenceTransformer from a folder (sentence-transformers or plain transformers) or a hub id."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(target, device=device)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(
            f"cannot load base_model {target} as a sentence-transformers model: {short_error(err)}"
        ) from err
    model.max_seq_length = max_length
    return model
