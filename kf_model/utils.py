"""Small helpers with one home (each used to live twice)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: assets/, docs/, train/
ASSETS_DIR = REPO_ROOT / "assets"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tensors shared between submodules counted once, as ``parameters()`` yields them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def module_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (a storage shared by several tensors counted once)."""
    storages: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
