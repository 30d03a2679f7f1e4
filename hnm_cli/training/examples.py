"""Training examples of `hnm train-reranker`: groups from mined rows or exported files, and each loss's columns.

Plain Python (no torch, no paths): mined rows or exported records go in, `Group`s and column dicts (for
`datasets.Dataset.from_dict`) come out, so the stage runner can validate data and refuse leakage before
anything heavy is imported. The losses that read these columns are in `hnm_cli.training.losses`.

Which examples each loss sees (one *group* is one labelled (query, positive) pair with its mined negatives):

| kind          | loss     | columns                                    | groups without a negative |
|---------------|----------|--------------------------------------------|---------------------------|
| cross-encoder | margin   | anchor, positive, negative (one per neg.)  | skipped                   |
| cross-encoder | bce      | query, passage, label (1 / 0)              | positive kept (label 1)   |
| cross-encoder | listwise | query, docs [positive, negatives...]       | skipped                   |
|               |          | (+ teacher [sims] with distillation)       |                           |
| bi-encoder    | mnrl     | anchor, positive, negative_1..negative_n   | kept: a second dataset of |
|               |          | (pairs: anchor, positive)                  | pairs, in-batch negatives |
| bi-encoder    | margin   | anchor, positive, negative (one per neg.)  | skipped                   |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hnm_cli.choices import ExportLayout, Loss, ModelKind, PairsWithoutNegative
from hnm_cli.errors import DataError


@dataclass(frozen=True)
class Group:
    """One labelled (query, positive) pair with the texts of its negatives (possibly none)."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    query_id: str | None = None  # None for exported text-only records
    # The miner's similarities of [positive, negatives...] to the query (1 - the row's distances): soft labels
    # for listwise distillation. None where the rows carry no distances.
    teacher: tuple[float, ...] | None = None


@dataclass
class ExampleStats:
    """What the examples were built from, for the manifest's stats."""

    pairs: int = 0  # groups read
    pairs_used: int = 0  # groups that produced at least one example
    pairs_skipped_no_negative: int = 0  # groups without a negative, skipped by a contrastive loss
    pairs_positive_only: int = 0  # bce: groups without a negative that still gave a label-1 example
    pairs_padded: int = 0  # mnrl: groups with fewer negatives than columns, filled by repeating their own
    pairs_in_batch_only: int = 0  # mnrl: groups without a negative trained with in-batch negatives alone
    negatives_used: int = 0
    examples: int = 0  # dataset rows
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for manifest stats."""
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return out | self.extra


# ---------------------------------------------------------------------------------------------
# Groups from mined rows / exported records
# ---------------------------------------------------------------------------------------------


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise DataError(f"{where}: field '{key}': missing")
    return row[key]


def groups_from_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    queries: Mapping[str, str],
    docs: Mapping[str, str],
    negatives_per_positive: int,
) -> list[Group]:
    """Turn mine rows into groups, keeping the first `negatives_per_positive` negatives of each row.

    Args:
        rows: (where, row) with `where` = "file:line" for error messages; each row has `query_id`,
            `positive_id` and `negatives` ([{doc_id, ...}], best first, possibly empty).
        queries: query id -> query text.
        docs: doc id -> document text (`Doc.full_text`).
        negatives_per_positive: how many negatives of each row to keep (in the row's order).

    Raises:
        DataError: a missing field, or an id that is not in the queries/corpus given (`file:line: field ...`).
    """
    groups = []
    for where, row in rows:
        qid = str(_field(row, "query_id", where))
        pid = str(_field(row, "positive_id", where))
        negs = _field(row, "negatives", where)
        if not isinstance(negs, list):
            raise DataError(f"{where}: field 'negatives': expected a list, got {type(negs).__name__}")
        if qid not in queries:
            raise DataError(f"{where}: field 'query_id': unknown query id '{qid}' (not in the queries given)")
        if pid not in docs:
            raise DataError(f"{where}: field 'positive_id': unknown document id '{pid}' (not in the corpus given)")
        texts = []
        for i, neg in enumerate(negs[:negatives_per_positive]):
            did = neg.get("doc_id") if isinstance(neg, Mapping) else None
            if did is None:
                raise DataError(f"{where}: field 'negatives[{i}].doc_id': missing")
            if str(did) not in docs:
                raise DataError(
                    f"{where}: field 'negatives[{i}].doc_id': unknown document id '{did}' (not in the corpus given)"
                )
            texts.append(docs[str(did)])
        kept = negs[:negatives_per_positive]
        distances = [n.get("d_qd") for n in kept]
        d_qp = kept[0].get("d_qp") if kept else None
        teacher = None
        if kept and d_qp is not None and all(isinstance(d, int | float) for d in distances):
            teacher = (1.0 - float(d_qp), *(1.0 - float(d) for d in distances))
        groups.append(Group(queries[qid], docs[pid], tuple(texts), qid, teacher))
    return groups


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(row, key, where)
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}': expected a string, got {type(value).__name__}")
    return value


def _negative_key_order(key: str) -> int:
    return 0 if key == "negative" else int(key.split("_", 1)[1])


def groups_from_records(
    records: Iterable[tuple[str, Mapping[str, Any]]], negatives_per_positive: int
) -> tuple[list[Group], str]:
    """Groups from an exported training file (sentence-transformers layouts, as `hnm mine --export` writes).

    Accepted layouts, detected from the first record's keys:
      * triplet / n-tuple: `anchor`, `positive`, `negative` or `negative_1..negative_n`;
      * labeled-list: `query`, `docs`, `labels` (docs with label > 0 are positives, each its own group);
      * labeled-pair: `query`, `passage`, `label` (gathered per query text, in file order).

    Returns:
        (groups, layout name).

    Raises:
        DataError: an unknown layout, a record whose keys differ from the first one's, a non-string text.
    """
    groups: list[Group] = []
    layout = ""
    pairs: dict[str, tuple[list[str], list[str]]] = {}  # labeled-pair: query -> (positives, negatives)
    for where, rec in records:
        keys = set(rec)
        if not layout:
            if {"anchor", "positive"} <= keys:
                layout = ExportLayout.TRIPLET
            elif {"query", "docs", "labels"} <= keys:
                layout = ExportLayout.LABELED_LIST
            elif {"query", "passage", "label"} <= keys:
                layout = ExportLayout.LABELED_PAIR
            else:
                raise DataError(
                    f"{where}: unknown training-file layout with fields {sorted(keys)}; expected anchor/positive/"
                    "negative[_i] (triplet, n-tuple), query/docs/labels (labeled-list) or query/passage/label"
                )
        if layout == ExportLayout.TRIPLET:
            neg_keys = sorted((k for k in rec if k == "negative" or k.startswith("negative_")), key=_neg_sort(where))
            negs = tuple(_text(rec, k, where) for k in neg_keys)[:negatives_per_positive]
            groups.append(Group(_text(rec, "anchor", where), _text(rec, "positive", where), negs))
        elif layout == ExportLayout.LABELED_LIST:
            docs, labels = _field(rec, "docs", where), _field(rec, "labels", where)
            if not isinstance(docs, list) or not isinstance(labels, list) or len(docs) != len(labels):
                raise DataError(f"{where}: field 'labels': expected two lists of equal length (docs, labels)")
            query = _text(rec, "query", where)
            negs = tuple(str(d) for d, lab in zip(docs, labels, strict=True) if not lab > 0)[:negatives_per_positive]
            groups.extend(Group(query, str(d), negs) for d, lab in zip(docs, labels, strict=True) if lab > 0)
        else:
            query, passage, label = (
                _text(rec, "query", where),
                _text(rec, "passage", where),
                _field(rec, "label", where),
            )
            if not isinstance(label, int | float) or isinstance(label, bool):
                raise DataError(f"{where}: field 'label': expected a number, got {type(label).__name__}")
            pos, neg = pairs.setdefault(query, ([], []))
            (pos if label > 0 else neg).append(passage)
    for query, (pos, neg) in pairs.items():
        groups.extend(Group(query, p, tuple(neg[:negatives_per_positive])) for p in pos)
    return groups, layout


def _neg_sort(where: str) -> Any:
    def key(k: str) -> int:
        try:
            return _negative_key_order(k)
        except ValueError as err:
            raise DataError(f"{where}: field '{k}': expected negative or negative_<n>") from err

    return key


# ---------------------------------------------------------------------------------------------
# Columns per loss
# ---------------------------------------------------------------------------------------------


PAIRS_DATASET = "pairs"  # the name of the (anchor, positive) dataset of groups without a negative


def build_datasets(
    groups: Sequence[Group],
    kind: str,
    loss: str,
    negatives_per_positive: int,
    *,
    pairs_without_negative: str,
    teacher: bool = False,
) -> tuple[dict[str, dict[str, list[Any]]], ExampleStats]:
    """The training datasets' columns, by dataset name: "hard" (`build_columns`), and for mnrl with
    ``pairs_without_negative="in-batch"`` also "pairs" (anchor, positive) for the groups without a negative,
    which MultipleNegativesRankingLoss trains with the batch's other positives as negatives. Arms that differ
    in how many pairs their miner covered then train on the same positives and differ only in their negatives.
    """
    cols, stats = build_columns(groups, kind, loss, negatives_per_positive, teacher=teacher)
    out = {"hard": cols} if stats.examples else {}
    if kind == ModelKind.BI_ENCODER and loss == Loss.MNRL and pairs_without_negative == PairsWithoutNegative.IN_BATCH:
        bare = [g for g in groups if not g.negatives]
        if bare:
            out[PAIRS_DATASET] = {"anchor": [g.query for g in bare], "positive": [g.positive for g in bare]}
            stats.pairs_in_batch_only = len(bare)
            stats.pairs_skipped_no_negative = 0
            stats.pairs_used += len(bare)
            stats.examples += len(bare)
    return out, stats


def build_columns(
    groups: Sequence[Group], kind: str, loss: str, negatives_per_positive: int, *, teacher: bool = False
) -> tuple[dict[str, list[Any]], ExampleStats]:
    """The training dataset's columns (in the order the loss reads them) for `kind` and `loss`.

    Args:
        groups: training groups (negatives already cut to `negatives_per_positive`).
        kind: "cross-encoder" or "bi-encoder".
        loss: see the module table.
        negatives_per_positive: the number of `negative_i` columns for bi-encoder mnrl (capped at the
            largest number of negatives any group has).

    Returns:
        (columns, stats). Columns may be empty lists (no usable group): the caller reports that.

    Raises:
        ValueError: an unknown kind/loss combination (config validation prevents it).
    """
    stats = ExampleStats(pairs=len(groups))
    if kind == ModelKind.CROSS_ENCODER and loss == Loss.BCE:
        cols: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
        seen: dict[str, set[str]] = {}
        for g in groups:
            if not g.negatives:
                stats.pairs_positive_only += 1
            stats.pairs_used += 1
            done = seen.setdefault(g.query, set())
            for text, label in [(g.positive, 1.0), *((n, 0.0) for n in g.negatives)]:
                if text in done:  # two positives of one query share negatives: one labelled pair each
                    continue
                done.add(text)
                stats.negatives_used += label == 0.0
                cols["query"].append(g.query)
                cols["passage"].append(text)
                cols["label"].append(label)
        stats.examples = len(cols["query"])
        return cols, stats
    usable = [g for g in groups if g.negatives]
    stats.pairs_skipped_no_negative = len(groups) - len(usable)
    stats.pairs_used = len(usable)
    stats.negatives_used = sum(len(g.negatives) for g in usable)
    if loss == Loss.MARGIN and kind in tuple(ModelKind):
        cols = {"anchor": [], "positive": [], "negative": []}
        for g in usable:
            for neg in g.negatives:
                cols["anchor"].append(g.query)
                cols["positive"].append(g.positive)
                cols["negative"].append(neg)
        stats.examples = len(cols["anchor"])
    elif kind == ModelKind.CROSS_ENCODER and loss == Loss.LISTWISE:
        cols = {"query": [g.query for g in usable], "docs": [[g.positive, *g.negatives] for g in usable]}
        if teacher:
            missing = [g for g in usable if g.teacher is None]
            if missing:
                raise DataError(
                    f"distillation needs the miner's distances on every row; {len(missing)} of {len(usable)} pairs "
                    "have none (mined rows from random or BM25 without distances, or an exported file)"
                )
            cols["teacher"] = [list(g.teacher or ()) for g in usable]
        stats.examples = len(usable)
    elif kind == ModelKind.BI_ENCODER and loss == Loss.MNRL:
        n = min(negatives_per_positive, max((len(g.negatives) for g in usable), default=0))
        cols = {"anchor": [], "positive": []}
        cols |= {f"negative_{i + 1}": [] for i in range(n)}
        for g in usable:
            negs = list(g.negatives)
            if len(negs) < n:  # every row needs n columns: cycle the group's own negatives, never borrow
                stats.pairs_padded += 1
                negs = [negs[i % len(negs)] for i in range(n)]
            cols["anchor"].append(g.query)
            cols["positive"].append(g.positive)
            for i in range(n):
                cols[f"negative_{i + 1}"].append(negs[i])
        stats.examples = len(usable)
        stats.extra["negative_columns"] = n
    else:
        raise ValueError(f"no {loss!r} loss for kind {kind!r}")
    return cols, stats
