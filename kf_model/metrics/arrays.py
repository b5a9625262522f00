"""Conversions and small helpers shared by the metrics (tensors or arrays in; float64, labels, splits).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from kf_model.errors import InvalidArgumentError

ArrayLike = torch.Tensor | np.ndarray


def to_numpy(x: ArrayLike | Sequence[Any]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_float64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.detach().cpu().to(torch.float64)


def to_labels(x: ArrayLike | Sequence[int]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    return x.detach().cpu().to(torch.int64).reshape(-1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    Probes are small (thousands x tens), so extra threads only add synchronisation; on a shared CPU
    spin-waiting OpenMP threads made them 10-20x slower than one thread in our measurements.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_indices(n: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/held-out split of ``range(n)``; both parts non-empty."""
    if n < 2:
        raise InvalidArgumentError(f"need at least 2 samples to split into train and held-out parts, got {n}")
    if not 0.0 < train_fraction < 1.0:
        raise InvalidArgumentError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = min(max(round(n * train_fraction), 1), n - 1)
    return perm[:n_train], perm[n_train:]


def factor_codes(factors: ArrayLike) -> tuple[np.ndarray, list[int]]:
    """Factors [N, K] of arbitrary discrete values -> class indices 0..C_k-1 per column, and the C_k."""
    factors = to_numpy(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if factors.ndim != 2:
        raise InvalidArgumentError(f"factors must be [N, K], got shape {tuple(factors.shape)}")
    columns, sizes = [], []
    for k in range(factors.shape[1]):
        values, inverse = np.unique(factors[:, k], return_inverse=True)
        columns.append(inverse.reshape(-1).astype(np.int64))
        sizes.append(len(values))
    return np.stack(columns, axis=1), sizes


def codes_2d(codes: ArrayLike, n: int) -> np.ndarray:
    codes = to_numpy(codes).astype(np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[0] != n:
        raise InvalidArgumentError(f"codes must be [N, D] with N = {n} (as factors), got shape {tuple(codes.shape)}")
    return codes


def entropy_in_base(p: np.ndarray, base: int) -> float:
    """Entropy of the distribution ``p`` (sums to 1) with logarithms in ``base``; 0 when base < 2.

    Used by DCI, where the base is the number of factors (rows) or code dims (columns), so the result is
    in [0, 1]. Zero-probability entries contribute 0 (the 0 log 0 = 0 convention), never NaN.
    """
    if base < 2:
        return 0.0
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(base))
