"""Small helpers with one home (each used to live twice)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: assets/, docs/, train/
ASSETS_DIR = REPO_ROOT / "assets"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tensors shared between submodules counted once, as ``parameters()`` yields them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
