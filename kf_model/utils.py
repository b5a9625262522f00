"""Small helpers with one home (each used to live twice)."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tensors shared between submodules counted once, as ``parameters()`` yields them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
