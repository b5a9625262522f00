"""The item protocol every kf dataset shares: one ``get_batch`` serves single items and the DataLoader's batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class BatchedDataset(Dataset):
    """A subclass implements ``get_batch(items) -> (images [B, C, H, W], targets [B, T])``; items one at a time
    and the DataLoader's batched fetch (``__getitems__``) both go through it, in one call a batch."""

    def get_batch(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.get_batch([item])
        return images[0], targets[0]

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images, targets = self.get_batch(items)
        return list(zip(images, targets))
