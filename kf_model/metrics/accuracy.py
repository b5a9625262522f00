"""Accuracy: of logits, per task, and one-vs-rest accuracies of a K-way classifier.
"""

from __future__ import annotations

import torch

from kf_model.errors import InvalidArgumentError
from kf_model.metrics.arrays import (
    ArrayLike,
    to_labels,
    to_numpy,
)


def accuracy(logits: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy of ``logits`` [N, C] (or already-predicted classes [N]) against ``targets`` [N]."""
    logits = torch.as_tensor(to_numpy(logits))
    targets = to_labels(targets)
    pred = logits.argmax(dim=-1) if logits.ndim == 2 else logits.reshape(-1).to(torch.int64)
    if pred.shape[0] != targets.shape[0]:
        raise InvalidArgumentError(f"{pred.shape[0]} predictions for {targets.shape[0]} targets")
    if targets.numel() == 0:
        raise InvalidArgumentError("accuracy of zero samples is undefined")
    return float((pred == targets).to(torch.float64).mean())


def per_task_accuracy(logits: dict[str, ArrayLike], targets: ArrayLike) -> dict[str, float]:
    """Accuracy per task; the i-th entry of ``logits`` is scored against column i of ``targets`` [N, T]."""
    targets = torch.as_tensor(to_numpy(targets))
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise InvalidArgumentError(
            f"targets must be [N, {len(logits)}] (one column per task), got {tuple(targets.shape)}")
    return {name: accuracy(task_logits, targets[:, i]) for i, (name, task_logits) in enumerate(logits.items())}


def one_vs_rest_accuracy_from_multiclass(pred_class: ArrayLike, true_class: ArrayLike, num_classes: int) -> list[float]:
    """For each class k, accuracy of the binary question "is it class k?" read off K-way predictions.

    This is how a K-way teacher is scored on the K one-vs-rest tasks that its factors learn: a sample counts
    as correct for task k when (pred == k) equals (true == k), so most samples are correct for most k.
    """
    pred, true = to_labels(pred_class), to_labels(true_class)
    if pred.shape != true.shape or pred.numel() == 0:
        raise InvalidArgumentError(
            f"need equally many (>0) predictions and targets, got {pred.numel()} and {true.numel()}")
    classes = torch.arange(num_classes)
    correct = (pred[:, None] == classes) == (true[:, None] == classes)  # [N, K]
    return [float(v) for v in correct.to(torch.float64).mean(dim=0)]
