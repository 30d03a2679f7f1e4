"""Checks between artifacts: the data upstream is the data given (by content digest), and no evaluation data
leaks into training. Every stage that crosses an artifact boundary calls these, so the rules live once."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hnm_cli.artifacts.manifest import Manifest, load_manifest
from hnm_cli.artifacts.mined import iter_rows
from hnm_cli.artifacts.reranker import TRAIN_STAGE, RerankerRef, enclosing_training_artifact
from hnm_cli.choices import Stage
from hnm_cli.errors import ArtifactMismatchError, ConfigError, HnmError, InputError, LeakageError
from hnm_cli.fileio import file_sha256
from hnm_cli.inputs import read_queries, resolve_qrels_file, twin_key
from hnm_cli.qrels import read_qrels

if TYPE_CHECKING:
    from hnm_cli.config import TrainRerankerConfig

log = logging.getLogger("hnm")


def recorded_digests(manifest: Manifest, role: str, depth: int = 0) -> list[dict[str, Any]]:
    """Raw-file input records of `role` in a manifest, following upstream artifacts (reduce -> embed)."""
    found = [i for i in manifest.inputs if i.get("role") == role and "stage" not in i]
    if found or depth >= 3:
        return found
    for record in manifest.inputs:
        if "stage" in record and record.get("path"):
            upstream = load_manifest(Path(record["path"]))
            if upstream is not None:
                found += recorded_digests(upstream, role, depth + 1)
    return found


def check_same_files(upstream: Manifest, given: list[dict[str, Any]], role: str, *, who: str = "mine") -> None:
    """Refuse an upstream artifact built from other `role` files (corpus, queries) than the ones given.

    Only content digests are compared (paths may differ: a copied data folder is the same data). An artifact
    that records no digest for `role` is not checked (a warning says so).

    Raises:
        ArtifactMismatchError: the digests differ.
    """
    recorded = recorded_digests(upstream, role)
    if not recorded:
        log.warning(
            "%s: %s records no %s digest; cannot check that it matches %s", who, upstream.path, role, given[0]["path"]
        )
        return
    want = sorted(r["sha256"] for r in recorded)
    have = sorted(g["sha256"] for g in given)
    if want != have:
        raise ArtifactMismatchError(
            f"{upstream.path} was built from a different {role} than {given[0]['path']} "
            f"(sha256 {have[0][:12]} given, {want[0][:12]} recorded); re-embed with this {role} or pass the one "
            "the vectors were built from"
        )


def check_mining_split(split: str, eval_splits: tuple[str, ...], *, allowed: bool) -> None:
    """Mining with an evaluation split's queries turns test answers into training data.

    Raises:
        LeakageError: `split` is one of `eval_splits` and not `allowed`.
    """
    if not eval_splits and not allowed:
        log.warning(
            "mine: warning: eval_splits is empty, so no split is protected from mining (the leakage guard is off)"
        )
    if split in eval_splits and not allowed:
        raise LeakageError(
            f"split '{split}' is an evaluation split ({', '.join(eval_splits)}): mining its queries leaks "
            "evaluation data into training; pass --allow-eval-queries to do it anyway"
        )


def check_mining_qrels(
    qrels_file: Path, folders: Iterable[Path | None], eval_splits: tuple[str, ...], *, allowed: bool
) -> None:
    """Mining an evaluation split's qrels under another name is still mining its queries.

    Refused (unless `allowed`): a qrels file named after an evaluation split; one whose real path (symlinks
    followed) is an evaluation split's; one with the same bytes (sha256) as an evaluation split's qrels file.
    The evaluation splits' files are looked for where `resolve_qrels_file` finds them, in each of `folders` that
    is a folder (the data folder) and beside the qrels file and its real path.

    Raises:
        LeakageError: one line naming the qrels file, the evaluation split and the file it matches.
    """
    if allowed:
        return
    tail = "mining its queries leaks evaluation data into training; pass --allow-eval-queries to do it anyway"
    qrels_file = Path(qrels_file)
    real = qrels_file.resolve()
    for name in (qrels_file.name, real.name):
        if (split := name.split(".")[0]) in eval_splits:
            what = "is" if name == qrels_file.name else f"links to {real},"
            raise LeakageError(f"--qrels {qrels_file} {what} the '{split}' split, an evaluation split: {tail}")
    places = [Path(f) for f in folders if f is not None and Path(f).is_dir()] + [qrels_file.parent, real.parent]
    size, digest = real.stat().st_size, ""
    seen: set[Path] = set()
    ours: frozenset[tuple[str, str]] | None = None
    for folder in places:
        for split in eval_splits:
            with contextlib.suppress(InputError):
                other = resolve_qrels_file(folder, split)
                if (other_real := other.resolve()) in seen:
                    continue
                seen.add(other_real)
                if other_real == real:
                    raise LeakageError(
                        f"--qrels {qrels_file} is {other} (the '{split}' split), an evaluation split: {tail}"
                    )
                same = other_real.stat().st_size == size and (digest := digest or file_sha256(real)) == file_sha256(
                    other
                )
                if not same and ours is None:
                    ours = _pairs(real) or frozenset()
                if same or (ours and ours == _pairs(other)):
                    raise LeakageError(
                        f"--qrels {qrels_file} has the same content as {other}, the '{split}' split (an evaluation "
                        f"split){'' if same else ': the same (query, document) pairs'}: {tail}"
                    )


def _pairs(path: Path) -> frozenset[tuple[str, str]] | None:
    """The (query, document) pairs of a qrels file: a reordered, CRLF or re-graded copy has the same ones.
    None for a file that cannot be read as qrels (it is reported where it is read, not here)."""
    try:
        return frozenset((q, d) for q, docs in read_qrels(path, warn=False).items() for d in docs)
    except HnmError:
        return None


# ---------------------------------------------------------------------------------------------
# train-reranker: no training query may be an evaluation query
# ---------------------------------------------------------------------------------------------


def query_overlap(train_ids: Iterable[str], eval_ids: Iterable[str]) -> list[str]:
    """Training query ids that are also evaluation query ids, sorted."""
    return sorted(set(train_ids) & set(eval_ids))


def text_overlap(train_texts: Iterable[str], eval_texts: Iterable[str]) -> int:
    """How many distinct training query texts are twins of an evaluation query text (`inputs.twin_key`)."""
    return len(({twin_key(t) for t in train_texts} & {twin_key(t) for t in eval_texts}) - {""})


def _eval_qrels_files(data: Path | None, mine: Manifest | None, split: str) -> list[Path]:
    """Existing qrels files of the evaluation split: in the data folder, and beside the mined split's qrels."""
    found: list[Path] = []
    if data is not None and Path(data).is_dir():
        with contextlib.suppress(InputError):
            found.append(resolve_qrels_file(data, split))
    if mine is not None:
        for entry in mine.inputs:
            if entry.get("role") == "qrels":
                sibling = Path(entry["path"]).parent / f"{split}.tsv"
                if sibling.is_file():
                    found.append(sibling)
    unique: dict[Path, Path] = {}
    for f in found:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def check_training_leakage(
    cfg: TrainRerankerConfig,
    *,
    mine: Manifest | None,
    train_query_ids: list[str],
    train_query_texts: list[str],
    data: Path | None,
    queries_path: Path | None,
) -> dict[str, Any]:
    """Refuse training on evaluation queries (LeakageError) unless `cfg.allow_eval_overlap`; return stats.

    Checks, in order: the mine artifact's split is not the evaluation split; the evaluation split's qrels exist
    where the data has qrels (a typo in `eval_split` must not switch the guard off); no training query is an
    evaluation query, by id or by normalised text (SciFact's train 871 repeats test 870 under another id).
    With `cfg.drop_eval_overlap` the overlapping training queries are listed in `stats["dropped_query_ids"]`
    for the caller to leave out, instead of refusing.

    Raises:
        LeakageError: an overlap, unless allowed or dropped.
        ConfigError: `eval_split` names no qrels file although the data folder has qrels.
    """
    flag = "use --drop-eval-overlap to leave those queries out, or --allow-eval-overlap to train anyway"
    split = cfg.eval_split
    stats: dict[str, Any] = {"eval_split": split, "eval_overlap": 0, "eval_qrels": None}
    mined_split = (mine.params.get("split") if mine is not None else None) or None
    if mined_split == split:
        msg = f"{mine.path if mine else ''} was mined on the '{split}' split, which is the evaluation split"
        if not cfg.allow_eval_overlap:
            raise LeakageError(f"{msg}; use --allow-eval-overlap to train anyway")
        log.warning("train-reranker: warning: %s (allowed by --allow-eval-overlap)", msg)
    files = _eval_qrels_files(data, mine, split)
    if not files:
        folders = _qrels_folders(data, mine)
        if folders:
            have = sorted({f.stem for d in folders for f in d.glob("*.tsv")})
            raise ConfigError(
                f"train_reranker.eval_split '{split}': no qrels/{split}.tsv in {folders[0]} (splits there: "
                f"{', '.join(have) or 'none'}); name the split you evaluate on, so the leakage guard can check it"
            )
        log.info("train-reranker: no qrels folder beside the data; leakage guard skipped")
        return stats
    eval_ids: set[str] = set()
    for f in files:
        eval_ids |= set(read_qrels(f))
    stats["eval_qrels"] = [str(f) for f in files]
    queries = read_queries(queries_path) if queries_path is not None else None
    by_id = set(query_overlap(train_query_ids, eval_ids))
    by_text: set[str] = set()
    if queries is not None:
        eval_texts = {twin_key(queries[q].text): q for q in eval_ids if q in queries}
        if train_query_ids:
            by_text = {
                q for q in set(train_query_ids) - by_id if q in queries and twin_key(queries[q].text) in eval_texts
            }
        else:
            by_text = {t for t in train_query_texts if twin_key(t) in eval_texts}
    elif not train_query_ids:
        log.info("train-reranker: no queries file to compare texts with; leakage guard skipped")
        return stats
    overlap = len(by_id) + len(by_text)
    stats["eval_overlap"] = overlap
    stats["eval_overlap_by_text"] = len(by_text)
    if overlap:
        total = len(set(train_query_ids)) if train_query_ids else len(set(train_query_texts))
        example = sorted(by_id or by_text)[0]
        msg = (
            f"{overlap} of {total} training queries are '{split}' queries ({len(by_id)} by id, {len(by_text)} with "
            f"the same text under another id; e.g. {example!r}) in {files[0]}"
        )
        if cfg.drop_eval_overlap and train_query_ids:
            stats["dropped_query_ids"] = sorted(by_id | by_text)
            # What the model was trained with: none of them (eval's guard reads this count).
            stats["eval_overlap"], stats["eval_overlap_dropped"] = 0, overlap
            log.warning("train-reranker: %s: left out (--drop-eval-overlap)", msg)
        elif not cfg.allow_eval_overlap:
            raise LeakageError(f"{msg}; {flag}")
        else:
            log.warning("train-reranker: warning: %s (allowed by --allow-eval-overlap)", msg)
    return stats


def _qrels_folders(data: Path | None, mine: Manifest | None) -> list[Path]:
    """qrels/ folders the evaluation split's file would be looked for in."""
    folders = []
    if data is not None and (Path(data) / "qrels").is_dir():
        folders.append(Path(data) / "qrels")
    if mine is not None:
        folders += [Path(e["path"]).parent for e in mine.inputs if e.get("role") == "qrels"]
    return [f for f in folders if f.is_dir()]


def mined_from_mismatch(mine: Manifest, ours: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(role, message) when a corpus or queries file given differs from the one the mine artifact recorded."""
    for role in ("corpus", "queries"):
        theirs = {e.get("sha256") for e in mine.inputs if e.get("role") == role and "stage" not in e}
        given = [e for e in ours if e.get("role") == role]
        if theirs and given and theirs != {e["sha256"] for e in given}:
            return (
                role,
                f"{mine.path} was mined from different {role} files than {given[0]['path']} (file digests differ)",
            )
    return None


def check_mined_from(mine: Manifest, ours: list[dict[str, Any]]) -> None:
    """Refuse a corpus or queries file other than the one the mine artifact recorded (ids would not match)."""
    if (found := mined_from_mismatch(mine, ours)) is not None:
        role, message = found
        raise ArtifactMismatchError(message, hint=f"give the {role} the mine stage read, or rerun hnm mine")


# ---------------------------------------------------------------------------------------------
# eval: a trained model must not have seen the evaluated queries
# ---------------------------------------------------------------------------------------------


def mine_manifest(artifact: Manifest) -> Manifest | None:
    """The mine manifest a train-reranker artifact was trained from, or None when none is recorded or it has no manifest.

    Args:
        artifact: the train-reranker manifest.

    Returns:
        The upstream mine manifest (from its `inputs`), or None.
    """
    for entry in artifact.inputs:
        if entry.get("stage") == Stage.MINE or entry.get("role") == "mined":
            return load_manifest(Path(entry["path"]))
    return None


def training_chain(artifact: Manifest) -> list[Manifest]:
    """`artifact` and every train-reranker artifact it was fine-tuned from (`--base-model`), nearest first.

    A model fine-tuned from a base that was itself trained on the evaluated queries has seen them too: the leakage
    guard follows the chain as far as the recorded base models are train-reranker artifacts that still exist.
    """

    chain, seen = [artifact], {artifact.path.resolve()}
    while True:
        base = next((e for e in chain[-1].inputs if e.get("role") == "base-model"), None)
        source = str(base.get("path", "")) if base is not None else ""
        if not source or source.startswith(("pkg:", "hash:")) or not Path(source).is_dir():
            return chain
        try:
            found = load_manifest(Path(source)) or enclosing_training_artifact(Path(source))
        except HnmError:
            return chain
        if found is None or found.stage != TRAIN_STAGE or found.path.resolve() in seen:
            return chain
        chain.append(found)
        seen.add(found.path.resolve())


def _training_chains(refs: Sequence[RerankerRef]) -> Iterator[tuple[RerankerRef, Manifest, str]]:
    """(ref, artifact, how to name it) for each train-reranker artifact behind each model, bases included."""
    for ref in refs:
        if ref.artifact is None:
            continue
        for artifact in training_chain(ref.artifact):
            named = ref.source if artifact is ref.artifact else f"{ref.source} (fine-tuned from {artifact.path})"
            yield ref, artifact, named


def check_eval_leakage(refs: Sequence[RerankerRef], split: str, eval_qids: set[str]) -> int:
    """Refuse a train-reranker artifact trained on the evaluation split or on any evaluated query.

    Two checks, from the artifact's upstream mine manifest: its split name, and the query ids of its rows.
    A model given as a plain folder cannot be checked (that is the user's explicit choice).

    Args:
        refs: the classified models; only train-reranker artifacts are checked.
        split: the split being evaluated.
        eval_qids: the evaluated query ids (empty: check the split names only).

    Returns:
        The number of artifacts whose training data could not be located (logged as a warning).

    Raises:
        LeakageError: the model was trained on the evaluation split or on evaluated queries.
    """
    unchecked = 0
    for ref, artifact, source in _training_chains(refs):
        # train-reranker records its own overlap check (it can be forced); an overlap with this split is final.
        stats = artifact.stats
        trained_with = int(stats.get("eval_overlap") or 0)
        if "eval_overlap_dropped" not in stats:  # artifacts of before the split count: the dropped were counted
            trained_with -= len(stats.get("dropped_query_ids", ()))
        if stats.get("eval_split") == split and trained_with > 0:
            raise LeakageError(
                f"--model {ref.name}: {source} was trained with {trained_with} queries of the "
                f"'{split}' split (train-reranker --allow-eval-overlap)",
                hint="evaluate on a split the model never saw (--split), or retrain without the overlap",
            )
        mine = mine_manifest(artifact)
        seen: set[str] | None = None
        problem = "its mine artifact is not readable"
        if mine is not None:
            try:
                seen = {row["query_id"] for _, row in iter_rows(mine.path, mine)}
            except HnmError as err:  # a damaged upstream artifact: the guard cannot look, and says so
                problem = f"its mine artifact is not readable: {err.message}"
        if mine is None or seen is None:
            unchecked += 1
            log.warning(
                "eval: cannot check %s for leakage (%s); make sure it was not trained on '%s' queries",
                source,
                problem,
                split,
            )
            continue
        if mine.params.get("split") == split:
            raise LeakageError(
                f"--model {ref.name}: {source} was trained on the '{split}' split, the split being evaluated",
                hint="evaluate on a split the model never saw (--split), or train on another split",
            )
        seen -= set(stats.get("dropped_query_ids", ()))  # left out of training by --drop-eval-overlap
        overlap = sorted(q for q in seen if q in eval_qids)
        if overlap:
            raise LeakageError(
                f"--model {ref.name}: {source} was trained on {len(overlap)} of the {len(eval_qids)} "
                f"evaluated queries (e.g. '{overlap[0]}')",
                hint="mine and train on a split disjoint from the evaluation split",
            )
    return unchecked


# ---------------------------------------------------------------------------------------------
# Every stage: the output folder is not one of its inputs, and can be written
# ---------------------------------------------------------------------------------------------


def check_output_path(out: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse an `--out` that is a file, lies under a file, cannot be created, or is, contains or lies inside
    one of the stage's inputs (writing it would destroy what the run reads). Checked before anything is written.

    Raises:
        InputError: one line naming `--out` and the input it collides with.
    """
    out = Path(out)
    target = out.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the artifact")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"--out {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
                raise InputError(f"--out {out}: cannot create it in {parent} (permission denied)")
            break
    # An existing --out that cannot be written is refused when the run has something to write (`output_lock`):
    # a read-only artifact that is up to date is a success.
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == target:
            how = "is"
        elif target in source.parents:
            how = "contains"
        elif source in target.parents:
            how = "lies inside"
        else:
            continue
        raise InputError(f"--out {out} {how} the input {given}; write the artifact to another folder")
