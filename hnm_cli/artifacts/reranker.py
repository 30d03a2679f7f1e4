"""The reranker-model contract: what a `--model` value is (a cross-encoder or sentence-transformers folder, a
train-reranker artifact whose `model/` holds the weights, or a `pkg:` / `hash:` spec), decided from small JSON
files only, so a bad value fails before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.manifest import Manifest, changed_output, load_manifest
from hnm_cli.choices import ModelKind, Stage
from hnm_cli.errors import ConfigError, CorruptArtifactError, InputError
from hnm_cli.model_spec import default_model_name

TRAIN_STAGE = Stage.TRAIN_RERANKER
MODEL_DIR = "model"  # where a train-reranker artifact keeps the trained model


@dataclass(frozen=True)
class RerankerRef:
    """A `--model` value, classified.

    Attributes:
        name: the run (arm) name.
        source: what the user gave (a folder, a train-reranker artifact, `pkg:<name>`, `hash:<dim>`).
        kind: cross-encoder or bi-encoder.
        path: the model folder to load (None for `pkg:` / `hash:` specs, which `hnm_cli.encoding.registry` resolves).
        artifact: the train-reranker manifest when `source` is such an artifact (for the leakage check).
    """

    name: str
    source: str
    kind: ModelKind
    path: Path | None = None
    artifact: Manifest | None = None


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def folder_kind(path: Path) -> ModelKind | None:
    """ "cross-encoder", "bi-encoder" or None for a model folder, from its small config files only.

    Rules, first match wins: `config_sentence_transformers.json` with `model_type` CrossEncoder or
    SentenceTransformer (what sentence-transformers >= 4 writes); a `config.json` whose architectures end in
    `ForSequenceClassification` (a plain transformers cross-encoder such as ms-marco-MiniLM); a
    `modules.json` with a Pooling module (an older sentence-transformers bi-encoder).
    """
    st_config = _read_json(path / "config_sentence_transformers.json")
    if isinstance(st_config, dict):
        model_type = st_config.get("model_type")
        if model_type == "CrossEncoder":
            return ModelKind.CROSS_ENCODER
        if model_type == "SentenceTransformer":
            return ModelKind.BI_ENCODER
    config = _read_json(path / "config.json")
    if isinstance(config, dict):
        archs = config.get("architectures") or []
        if any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs):
            return ModelKind.CROSS_ENCODER
    modules = _read_json(path / "modules.json")
    if isinstance(modules, list) and any("Pooling" in str(m.get("type", "")) for m in modules if isinstance(m, dict)):
        return ModelKind.BI_ENCODER
    return None


def detect_model(name: str, source: str, *, deep: bool = False) -> RerankerRef:
    """Classify one `--model` value without loading it.

    Args:
        name: the run name.
        source: a cross-encoder or sentence-transformers folder, a train-reranker artifact directory (its
            `model/` subfolder is used), or a `pkg:` / `hash:` spec (a bi-encoder).

    Raises:
        InputError: the source does not exist, or is a folder that is neither kind of model.
    """
    if source.startswith(("pkg:", "hash:")):
        return RerankerRef(name=name, source=source, kind=ModelKind.BI_ENCODER)
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"--model {name}: {source} does not exist")
    if not path.is_dir():
        raise InputError(f"--model {name}: {source} is a file, expected a model folder")
    artifact = load_manifest(path)
    if artifact is None:
        # A folder inside a train-reranker artifact (its model/, or deeper) is that artifact: its training data
        # must go through the leakage check like the artifact's own path would.
        artifact = enclosing_training_artifact(path)
        if artifact is not None:
            path = artifact.path
    if artifact is not None and artifact.stage == TRAIN_STAGE:
        model_dir = path / MODEL_DIR
        kind = folder_kind(model_dir) if model_dir.is_dir() else None
        if kind is None:
            raise InputError(f"--model {name}: {path} is a train-reranker artifact without a loadable model/ folder")
        problem = changed_output(artifact, deep=deep)
        if problem is not None:
            raise CorruptArtifactError(
                f"--model {name}: {path}/{problem}; the artifact is corrupt. Rebuild it: hnm train-reranker ... "
                f"--out {path} --force"
            )
        return RerankerRef(name=name, source=source, kind=kind, path=model_dir.resolve(), artifact=artifact)
    if artifact is not None:
        raise InputError(f"--model {name}: {path} is a '{artifact.stage}' artifact, not a reranker model")
    kind = folder_kind(path)
    if kind is None:
        raise InputError(
            f"--model {name}: {path} is not a cross-encoder or sentence-transformers model "
            "(no config_sentence_transformers.json, no *ForSequenceClassification config.json, "
            "no modules.json with Pooling)"
        )
    return RerankerRef(name=name, source=source, kind=kind, path=path.resolve())


def trained_model_folder(path: Path) -> Path | None:
    """The `model/` folder of the train-reranker artifact at `path` (to fine-tune further, or to load), or None when
    `path` is not such an artifact."""
    manifest = load_manifest(path) if path.is_dir() else None
    if manifest is None or manifest.stage != TRAIN_STAGE or not (path / MODEL_DIR).is_dir():
        return None
    return path / MODEL_DIR


def enclosing_training_artifact(path: Path, levels: int = 4) -> Manifest | None:
    """The train-reranker artifact that `path` lies inside (up to `levels` folders up), or None."""
    for parent in list(Path(path).resolve().parents)[:levels]:
        manifest = load_manifest(parent)
        if manifest is not None:
            return manifest if manifest.stage == TRAIN_STAGE else None
    return None


def run_name(source: str) -> str:
    """A run name derived from a `--model` source: the folder name, or the artifact folder for `.../model`."""
    path = Path(source)
    if not source.startswith(("pkg:", "hash:")) and path.name == MODEL_DIR and path.parent.name:
        return default_model_name(str(path.parent))
    if source.startswith("hash:"):
        return "hash-" + source.split(":", 1)[1]
    return default_model_name(source)


def parse_model_option(value: str) -> tuple[str, str]:
    """Split one `--model` value into (run name, source): `name=source`, or a source whose name is derived.

    A `name=` prefix counts only when the name has no `/` and is not a `pkg:` / `hash:` spec, so a path or
    spec that contains `=` is still a source.

    Args:
        value: the option's text.

    Returns:
        (run name, source); the name is `run_name(source)` when none is given.

    Raises:
        ConfigError: an empty name or source.
    """
    value = value.strip()
    name, sep, source = value.partition("=")
    if sep and "/" not in name and not name.startswith(("pkg:", "hash:")):
        name, source = name.strip(), source.strip()
        if not name or not source:
            raise ConfigError(f"--model {value!r}: expected NAME=PATH or PATH")
        return name, source
    if not value:
        raise ConfigError("--model: empty value")
    return run_name(value), value
