"""The quick validation at the end of a run: predictions gathered over processes, accuracies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kf_model.data.specs import TaskSpec


@dataclass
class Predictions:
    """Gathered over processes, each sample exactly once (``gather_for_metrics``)."""

    predicted: Tensor  # [N, T] predicted class per task
    positive: Tensor | None  # [N, T] probability of the positive class (binary tasks only)
    targets: Tensor  # [N, T]

    def __len__(self) -> int:
        return len(self.targets)


@torch.no_grad()
def collect_predictions(accelerator: Accelerator, predict: Callable[[Tensor], dict[str, Tensor]], dataset: Dataset,
                        *, batch_size: int, num_workers: int = 0) -> Predictions:
    """Run ``predict`` (images -> {task: logits}) over ``dataset`` split across processes, gather everything."""
    loader = accelerator.prepare_data_loader(
        DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers))
    predicted, positive, targets = [], [], []
    for images, batch_targets in loader:
        with accelerator.autocast():
            logits = list(predict(images).values())
        binary = all(lg.shape[1] == 2 for lg in logits)
        pred = torch.stack([lg.argmax(dim=1) for lg in logits], dim=1)
        pos = torch.stack([lg.float().softmax(dim=1)[:, 1] for lg in logits], dim=1) if binary else pred.float()
        pred, pos, batch_targets = accelerator.gather_for_metrics((pred, pos, batch_targets))
        predicted.append(pred.cpu())
        positive.append(pos.cpu() if binary else None)
        targets.append(batch_targets.cpu())
    has_positive = bool(positive) and all(p is not None for p in positive)
    return Predictions(torch.cat(predicted), torch.cat(positive) if has_positive else None, torch.cat(targets))


def accuracy_report(predictions: Predictions, tasks: Sequence[TaskSpec], one_vs_rest: bool,
                    kway_model: bool = False) -> dict[str, Any]:
    """Per-task accuracy (percent) and their mean; one-vs-rest: also the K-way accuracy of the argmax of the
    positive-class probabilities. A K-way model (a one-vs-rest Teacher) is read as the evaluation reads it:
    task i is predicted positive iff its K-way argmax is i (for factors: their own binary decision)."""
    predicted = predictions.predicted
    if one_vs_rest and kway_model and predictions.positive is not None:
        predicted = torch.nn.functional.one_hot(predictions.positive.argmax(dim=1), len(tasks))
    correct = (predicted == predictions.targets).float().mean(dim=0) * 100
    report: dict[str, Any] = {
        "samples": len(predictions),
        "accuracy": {t.name: round(float(c), 3) for t, c in zip(tasks, correct)},
        "mean_accuracy": round(float(correct.mean()), 3),
    }
    if one_vs_rest and predictions.positive is not None:
        kway = (predictions.positive.argmax(dim=1) == predictions.targets.argmax(dim=1)).float().mean() * 100
        report["kway_accuracy"] = round(float(kway), 3)
    return report


def compare(report: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Points by which ``report`` beats ``reference`` (negative: behind), per task, mean and K-way."""
    delta = {name: round(acc - reference["accuracy"][name], 3) for name, acc in report["accuracy"].items()}
    delta["min"] = min(delta.values())
    delta["mean"] = round(report["mean_accuracy"] - reference["mean_accuracy"], 3)
    if "kway_accuracy" in report:
        delta["kway"] = round(report["kway_accuracy"] - reference["kway_accuracy"], 3)
    return delta
