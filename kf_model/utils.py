"""Small helpers with one home (each used to live twice)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: assets/, docs/, train/
ASSETS_DIR = REPO_ROOT / "assets"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tensors shared between submodules counted once, as ``parameters()`` yields them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (with "+changes" when files differ from it), for the JSON files that README figures
    come from; "unknown" outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if changed else "")
