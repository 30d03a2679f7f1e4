"""The ranking losses hnm adds to sentence-transformers' own: the paper's margin loss and a listwise softmax.

The loss modules need torch and are built lazily by `loss_classes()`; they follow the interface of
sentence-transformers' losses (`forward(inputs, labels, prompt=None, task=None)` over the dataset's text
columns), so `CrossEncoderTrainer` drives them like its own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from hnm_cli.choices import Loss, ModelKind


def margin_ranking_loss(pos_scores: Any, neg_scores: Any, margin: float) -> Any:
    """The paper's loss, averaged over the batch: mean(max(0, m - s(Q,PD) + s(Q,HN))).

    Args:
        pos_scores: tensor (B,) of scores of (query, positive).
        neg_scores: tensor (B,) of scores of (query, hard negative), same order.
        margin: m.
    """
    return (margin - pos_scores + neg_scores).clamp(min=0).mean()


def group_softmax_loss(
    scores: Any,
    sizes: Sequence[int],
    teacher: Sequence[Sequence[float]] | None = None,
    teacher_weight: float = 0.0,
    temperature: float = 0.05,
) -> Any:
    """Listwise loss: cross-entropy of a softmax over each group, the positive (column 0) being the target.

    With a teacher (distillation), the target is `(1 - w) * onehot(positive) + w * softmax(teacher / T)`: the
    first stage's own similarities as soft labels, so a fresh scoring head starts from what the ensemble knows
    (which documents are close) instead of from nothing, while the hard label still says which one is right.

    Args:
        scores: tensor (sum(sizes),) of scores, group after group, each group's positive first.
        sizes: number of documents (1 + negatives) of each group.
        teacher: per group, the teacher's similarities in the same order (or None).
        teacher_weight: w in [0, 1].
        temperature: T for the teacher's softmax (cosine similarities differ by ~0.05-0.2 within a group).
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
    if teacher is None or teacher_weight == 0:
        return torch.nn.functional.cross_entropy(matrix, target)
    t = torch.full((len(sizes), width), float("-inf"), dtype=torch.float32, device=scores.device)
    flat = torch.tensor([v for group in teacher for v in group], dtype=torch.float32, device=scores.device)
    t = t.index_put((rows, cols), flat / temperature)
    soft = torch.softmax(t, dim=1)
    hard = torch.nn.functional.one_hot(target, width).to(soft.dtype)
    dist = (1 - teacher_weight) * hard + teacher_weight * soft
    logp = torch.log_softmax(matrix.float(), dim=1).masked_fill(torch.isinf(matrix), 0.0)
    return -(dist * logp).sum(dim=1).mean()


@functools.cache
def loss_classes() -> dict[str, type]:
    """The cross-encoder loss modules, created on first call (imports torch).

    Returns:
        {Loss.MARGIN: CrossEncoderMarginLoss, Loss.LISTWISE: CrossEncoderGroupSoftmaxLoss}.
    """
    from torch import Tensor, nn

    def scores(model: Any, pairs: list[tuple[str, str]], prompt: str | None, task: str | None) -> Tensor:
        features = model.preprocess(pairs, prompt=prompt, task=task)
        # What sentence_transformers.util.batch_to_device does, without importing the whole package here.
        features = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in features.items()}
        flat: Tensor = model(features)["scores"].view(-1)
        return flat

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
            loss: Tensor = margin_ranking_loss(both[:n], both[n:], self.margin)
            return loss

        def get_config_dict(self) -> dict[str, float]:
            return {"margin": self.margin}

    class CrossEncoderGroupSoftmaxLoss(nn.Module):
        """Softmax cross-entropy over [positive, negatives...] per query, for (query, docs) columns."""

        def __init__(self, model: Any, teacher_weight: float = 0.0, temperature: float = 0.05) -> None:
            super().__init__()
            self.model = model
            self.teacher_weight = teacher_weight
            self.temperature = temperature

        def forward(
            self,
            inputs: list[list[Any]],
            labels: Tensor | None = None,
            prompt: str | None = None,
            task: str | None = None,
        ) -> Tensor:
            if len(inputs) not in (2, 3):
                raise ValueError(f"listwise loss expects (query, docs[, teacher]) columns, got {len(inputs)}")
            queries, docs_lists = inputs[0], inputs[1]
            teacher = inputs[2] if len(inputs) == 3 else None
            pairs = [(q, d) for q, docs in zip(queries, docs_lists, strict=True) for d in docs]
            loss: Tensor = group_softmax_loss(
                scores(self.model, pairs, prompt, task),
                [len(d) for d in docs_lists],
                teacher=teacher,
                teacher_weight=self.teacher_weight,
                temperature=self.temperature,
            )
            return loss

        def get_config_dict(self) -> dict[str, Any]:
            return {"teacher_weight": self.teacher_weight, "temperature": self.temperature}

    return {Loss.MARGIN: CrossEncoderMarginLoss, Loss.LISTWISE: CrossEncoderGroupSoftmaxLoss}


def make_loss(
    model: Any,
    kind: str,
    loss: str,
    margin: float,
    *,
    teacher_weight: float = 0.0,
    temperature: float = 0.05,
    negatives_per_positive: int = 1,
    gather_across_devices: bool = False,
) -> Any:
    """The loss module for `kind`/`loss` bound to `model` (imports torch and sentence-transformers).

    BCE weighs each positive by the number of negatives per positive (`pos_weight`), as sentence-transformers'
    reranker guide does: without it, 3 negatives per positive teach the head that "not relevant" is the safe answer.
    `gather_across_devices` (several ranks): mnrl scores each query against the in-batch negatives of every
    rank's slice of the batch, not only its own; the other losses compare a query with its own documents only.
    """
    if kind == ModelKind.CROSS_ENCODER:
        if loss == Loss.BCE:
            import torch
            from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

            return BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(max(negatives_per_positive, 1))))
        if loss == Loss.MARGIN:
            return loss_classes()[Loss.MARGIN](model, margin=margin)
        if loss == Loss.LISTWISE:
            return loss_classes()[Loss.LISTWISE](model, teacher_weight=teacher_weight, temperature=temperature)
    elif kind == ModelKind.BI_ENCODER:
        from sentence_transformers.sentence_transformer import losses

        if loss == Loss.MNRL:
            return losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather_across_devices)
        if loss == Loss.MARGIN:
            # TripletLoss with cosine distance is max(0, m - cos(Q,PD) + cos(Q,HN)): the paper's loss on cosines.
            return losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE, triplet_margin=margin)
    raise ValueError(f"no {loss!r} loss for kind {kind!r}")
