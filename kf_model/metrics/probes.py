"""Linear probes (multinomial logistic regression, L-BFGS) and the leakage matrix they give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kf_model.errors import InvalidArgumentError
from kf_model.metrics.accuracy import accuracy
from kf_model.metrics.arrays import (
    ArrayLike,
    one_thread,
    split_indices,
    to_float64,
    to_labels,
    to_numpy,
)


def fit_linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    num_classes: int,
    *,
    epochs: int = 100,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """Multinomial logistic regression from features to labels; returns (test accuracy, weight [C, D]).

    Features are standardised with the train part's mean and std (constant features become 0), so the
    weight magnitudes are comparable across dims (DCI reads them as importances). The loss is mean
    cross-entropy + ``weight_decay/2 * ||W||^2`` (the bias is not penalised); it is strictly convex, so
    full-batch L-BFGS (``epochs`` = its maximum iterations) from a small ``seed``-ed init reaches the same
    optimum every run (float32 after float64 standardisation: float64 gives the same weights, 2x slower).
    """
    x_tr, x_te = to_float64(train_x), to_float64(test_x)
    y_tr, y_te = to_labels(train_y), to_labels(test_y)
    if x_tr.ndim == 1:
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0] or y_tr.numel() == 0 or y_te.numel() == 0:
        raise InvalidArgumentError("train/test features and labels must be non-empty and have matching lengths")
    for y in (y_tr, y_te):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise InvalidArgumentError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")

    mean = x_tr.mean(dim=0)
    std = x_tr.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    x_tr, x_te = ((x_tr - mean) / std).float(), ((x_te - mean) / std).float()

    gen = torch.Generator().manual_seed(seed)
    weight = (1e-3 * torch.randn(x_tr.shape[1], num_classes, generator=gen)).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=epochs, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_tr @ weight + bias, y_tr) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), one_thread():
        optimizer.step(closure)
    with torch.no_grad():
        test_acc = accuracy(x_te @ weight + bias, y_te)
    return test_acc, weight.detach().T.numpy().copy()


def leakage_matrix(
    features: Sequence[ArrayLike],
    targets: ArrayLike,
    num_classes: Sequence[int],
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    epochs: int = 100,
    weight_decay: float = 1e-3,
) -> dict[str, Any]:
    """How well each source (e.g. each TSN's features) linearly decodes each task, on held-out samples.

    A linear probe is fitted for every (source i, task j) on one random part of the samples (the same split
    for all cells) and scored on the rest. Returns:
    - "accuracy": [S][T] held-out probe accuracy; "excess": [S][T] accuracy - chance;
    - "chance": [T] majority-class frequency of task j on the held-out part;
    - "diagonal_accuracy", "off_diagonal_accuracy", "off_diagonal_excess": means over cells i == j and
      i != j. They need source i to belong to task i, so are defined only when S == T (and off-diagonal
      only when T >= 2); otherwise ``None``;
    - "num_train", "num_test".
    High off-diagonal excess means task-specific features leak other tasks' information.
    """
    targets_t = torch.as_tensor(to_numpy(targets)).to(torch.int64)
    if targets_t.ndim != 2 or targets_t.shape[1] != len(num_classes):
        raise InvalidArgumentError(
            f"targets must be [N, {len(num_classes)}] (one column per task), got {tuple(targets_t.shape)}")
    n, num_tasks = targets_t.shape
    feats = [to_float64(f).reshape(n, -1) for f in features]
    if not feats:
        raise InvalidArgumentError("leakage_matrix needs at least one source of features")
    train_idx, test_idx = split_indices(n, train_fraction, seed)

    chance = []
    for j in range(num_tasks):
        counts = torch.bincount(targets_t[test_idx, j], minlength=num_classes[j])
        chance.append(float(counts.max()) / len(test_idx))
    acc = [[fit_linear_probe(f[train_idx], targets_t[train_idx, j], f[test_idx], targets_t[test_idx, j],
                             num_classes[j], epochs=epochs, weight_decay=weight_decay, seed=seed)[0]
            for j in range(num_tasks)] for f in feats]
    excess = [[a - c for a, c in zip(row, chance)] for row in acc]

    diag = off_acc = off_excess = None
    if len(feats) == num_tasks:
        diag = float(np.mean([acc[i][i] for i in range(num_tasks)]))
        if num_tasks >= 2:
            off = [(i, j) for i in range(num_tasks) for j in range(num_tasks) if i != j]
            off_acc = float(np.mean([acc[i][j] for i, j in off]))
            off_excess = float(np.mean([excess[i][j] for i, j in off]))
    return {"accuracy": acc, "chance": chance, "excess": excess, "diagonal_accuracy": diag,
            "off_diagonal_accuracy": off_acc, "off_diagonal_excess": off_excess,
            "num_train": len(train_idx), "num_test": len(test_idx)}
