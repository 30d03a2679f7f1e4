"""Pure helpers of `hnm train-reranker`: training groups, loss-specific columns, and the ranking losses.

Everything above `loss_classes()` is plain Python (no torch, no paths): mined rows or exported records go in,
`Group`s and column dicts (for `datasets.Dataset.from_dict`) come out, so the stage runner can validate data
and refuse leakage before anything heavy is imported. The loss modules need torch and are built lazily by
`loss_classes()`; they follow the interface of sentence-transformers' losses (`forward(inputs, labels,
prompt=None, task=None)` over the dataset's text columns), so `CrossEncoderTrainer` drives them like its own.

Which examples each loss sees (one *group* is one labelled (query, positive) pair with its mined negatives):

| kind          | loss     | columns                                    | groups without a negative |
|---------------|----------|--------------------------------------------|---------------------------|
| cross-encoder | margin   | anchor, positive, negative (one per neg.)  | skipped                   |
| cross-encoder | bce      | query, passage, label (1 / 0)              | positive kept (label 1)   |
| cross-encoder | listwise | query, docs [positive, negatives...]       | skipped                   |
| bi-encoder    | mnrl     | anchor, positive, negative_1..negative_n   | kept: a second dataset of |
|               |          | (pairs: anchor, positive)                  | pairs, in-batch negatives |
| bi-encoder    | margin   | anchor, positive, negative (one per neg.)  | skipped                   |
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hnm_cli.errors import DataError
from hnm_cli.inputs import normalize_text

CROSS_ENCODER_LOSSES = ("margin", "bce", "listwise")
BI_ENCODER_LOSSES = ("mnrl", "margin")


@dataclass(frozen=True)
class Group:
    """One labelled (query, positive) pair with the texts of its negatives (possibly none)."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    query_id: str | None = None  # None for exported text-only records


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
        groups.append(Group(queries[qid], docs[pid], tuple(texts), qid))
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
                layout = "triplet"
            elif {"query", "docs", "labels"} <= keys:
                layout = "labeled-list"
            elif {"query", "passage", "label"} <= keys:
                layout = "labeled-pair"
            else:
                raise DataError(
                    f"{where}: unknown training-file layout with fields {sorted(keys)}; expected anchor/positive/"
                    "negative[_i] (triplet, n-tuple), query/docs/labels (labeled-list) or query/passage/label"
                )
        if layout == "triplet":
            neg_keys = sorted((k for k in rec if k == "negative" or k.startswith("negative_")), key=_neg_sort(where))
            negs = tuple(_text(rec, k, where) for k in neg_keys)[:negatives_per_positive]
            groups.append(Group(_text(rec, "anchor", where), _text(rec, "positive", where), negs))
        elif layout == "labeled-list":
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
    groups: Sequence[Group], kind: str, loss: str, negatives_per_positive: int, *, pairs_without_negative: str
) -> tuple[dict[str, dict[str, list[Any]]], ExampleStats]:
    """The training datasets' columns, by dataset name: "hard" (`build_columns`), and for mnrl with
    ``pairs_without_negative="in-batch"`` also "pairs" (anchor, positive) for the groups without a negative,
    which MultipleNegativesRankingLoss trains with the batch's other positives as negatives. Arms that differ
    in how many pairs their miner covered then train on the same positives and differ only in their negatives.
    """
    cols, stats = build_columns(groups, kind, loss, negatives_per_positive)
    out = {"hard": cols} if stats.examples else {}
    if kind == "bi-encoder" and loss == "mnrl" and pairs_without_negative == "in-batch":
        bare = [g for g in groups if not g.negatives]
        if bare:
            out[PAIRS_DATASET] = {"anchor": [g.query for g in bare], "positive": [g.positive for g in bare]}
            stats.pairs_in_batch_only = len(bare)
            stats.pairs_skipped_no_negative = 0
            stats.pairs_used += len(bare)
            stats.examples += len(bare)
    return out, stats


def build_columns(
    groups: Sequence[Group], kind: str, loss: str, negatives_per_positive: int
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
    if kind == "cross-encoder" and loss == "bce":
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
    if loss == "margin" and kind in ("cross-encoder", "bi-encoder"):
        cols = {"anchor": [], "positive": [], "negative": []}
        for g in usable:
            for neg in g.negatives:
                cols["anchor"].append(g.query)
                cols["positive"].append(g.positive)
                cols["negative"].append(neg)
        stats.examples = len(cols["anchor"])
    elif kind == "cross-encoder" and loss == "listwise":
        cols = {"query": [g.query for g in usable], "docs": [[g.positive, *g.negatives] for g in usable]}
        stats.examples = len(usable)
    elif kind == "bi-encoder" and loss == "mnrl":
        n = min(negatives_per_positive, max((len(g.negatives) for g in usable), default=0))
        cols = {"anchor": [], "positive": []} | {f"negative_{i + 1}": [] for i in range(n)}
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


# ---------------------------------------------------------------------------------------------
# Leakage guard
# ---------------------------------------------------------------------------------------------


def query_overlap(train_ids: Iterable[str], eval_ids: Iterable[str]) -> list[str]:
    """Training query ids that are also evaluation query ids, sorted."""
    return sorted(set(train_ids) & set(eval_ids))


def text_overlap(train_texts: Iterable[str], eval_texts: Iterable[str]) -> int:
    """How many distinct training query texts equal an evaluation query text (case/space-insensitive)."""
    return len({normalize_text(t) for t in train_texts} & {normalize_text(t) for t in eval_texts})


# ---------------------------------------------------------------------------------------------
# Losses (torch; built on first use so importing this module stays light)
# ---------------------------------------------------------------------------------------------


def margin_ranking_loss(pos_scores: Any, neg_scores: Any, margin: float) -> Any:
    """The paper's loss, averaged over the batch: mean(max(0, m - s(Q,PD) + s(Q,HN))).

    Args:
        pos_scores: tensor (B,) of scores of (query, positive).
        neg_scores: tensor (B,) of scores of (query, hard negative), same order.
        margin: m.
    """
    return (margin - pos_scores + neg_scores).clamp(min=0).mean()


def group_softmax_loss(scores: Any, sizes: Sequence[int]) -> Any:
    """Listwise loss: cross-entropy of a softmax over each group, the positive (column 0) being the target.

    Args:
        scores: tensor (sum(sizes),) of scores, group after group, each group's positive first.
        sizes: number of documents (1 + negatives) of each group.
    """
    import torch

    width = max(sizes)
    matrix = torch.full((len(sizes), width), float("-inf"), dtype=scores.dtype, device=scores.device)
    rows = torch.repeat_interleave(
        torch.arange(len(sizes), device=scores.device), torch.tensor(sizes, device=scores.device)
    )
    cols = torch.cat([torch.arange(s, device=scores.device) for s in sizes])
    matrix = matrix.index_put((rows, cols), scores)
    target = torch.zeros(len(sizes), dtype=torch.long, device=scores.device)
    return torch.nn.functional.cross_entropy(matrix, target)


@functools.cache
def loss_classes() -> dict[str, type]:
    """The cross-encoder loss modules, created on first call (imports torch).

    Returns:
        {"margin": CrossEncoderMarginLoss, "listwise": CrossEncoderGroupSoftmaxLoss}.
    """
    from torch import Tensor, nn

    def scores(model: Any, pairs: list[tuple[str, str]], prompt: str | None, task: str | None) -> Tensor:
        features = model.preprocess(pairs, prompt=prompt, task=task)
        # What sentence_transformers.util.batch_to_device does, without importing the whole package here.
        features = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return model(features)["scores"].view(-1)

    class CrossEncoderMarginLoss(nn.Module):
        """max(0, m - s(Q,PD) + s(Q,HN)) on raw cross-encoder logits, for (anchor, positive, negative) columns."""

        def __init__(self, model: Any, margin: float = 1.0) -> None:
            super().__init__()
            self.model = model
            self.margin = margin

        def forward(
            self,
            inputs: list[list[str]],
            labels: Tensor | None = None,
            prompt: str | None = None,
            task: str | None = None,
        ) -> Tensor:
            if len(inputs) != 3:
                raise ValueError(f"margin loss expects (anchor, positive, negative) columns, got {len(inputs)}")
            anchors, positives, negatives = inputs
            n = len(anchors)
            # One forward pass over positives and negatives together: same batch statistics for both sides.
            both = scores(
                self.model, [*zip(anchors, positives, strict=True), *zip(anchors, negatives, strict=True)], prompt, task
            )
            return margin_ranking_loss(both[:n], both[n:], self.margin)

        def get_config_dict(self) -> dict[str, float]:
            return {"margin": self.margin}

    class CrossEncoderGroupSoftmaxLoss(nn.Module):
        """Softmax cross-entropy over [positive, negatives...] per query, for (query, docs) columns."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            inputs: list[list[Any]],
            labels: Tensor | None = None,
            prompt: str | None = None,
            task: str | None = None,
        ) -> Tensor:
            if len(inputs) != 2:
                raise ValueError(f"listwise loss expects (query, docs) columns, got {len(inputs)}")
            queries, docs_lists = inputs
            pairs = [(q, d) for q, docs in zip(queries, docs_lists, strict=True) for d in docs]
            return group_softmax_loss(scores(self.model, pairs, prompt, task), [len(d) for d in docs_lists])

        def get_config_dict(self) -> dict[str, Any]:
            return {}

    return {"margin": CrossEncoderMarginLoss, "listwise": CrossEncoderGroupSoftmaxLoss}


def make_loss(model: Any, kind: str, loss: str, margin: float) -> Any:
    """The loss module for `kind`/`loss` bound to `model` (imports torch and sentence-transformers)."""
    if kind == "cross-encoder":
        if loss == "bce":
            from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

            return BinaryCrossEntropyLoss(model)
        if loss == "margin":
            return loss_classes()["margin"](model, margin=margin)
        if loss == "listwise":
            return loss_classes()["listwise"](model)
    elif kind == "bi-encoder":
        from sentence_transformers.sentence_transformer import losses

        if loss == "mnrl":
            return losses.MultipleNegativesRankingLoss(model)
        if loss == "margin":
            # TripletLoss with cosine distance is max(0, m - cos(Q,PD) + cos(Q,HN)): the paper's loss on cosines.
            return losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE, triplet_margin=margin)
    raise ValueError(f"no {loss!r} loss for kind {kind!r}")
