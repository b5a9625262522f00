"""Small helpers with one home (each used to live twice)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from torch import nn

from kf_model.errors import UnwritablePathError

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: assets/, docs/, train/
SNAPSHOT_COMMIT_FILE = "COMMIT"
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



def writable_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` checked to be a folder kf can make and write, else a kf error naming ``what`` and the path (not a
    FileNotFoundError from deep inside a run, after the data was read: ``--output-dir /proc/kf``). Folders made
    for the check are removed again: a run refused later leaves nothing behind."""
    folder = Path(path)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UnwritablePathError(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UnwritablePathError(f"{what} {folder}: cannot create it ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UnwritablePathError(f"{what} {folder}: not writable")
    for made in missing:  # deepest first; another process of the run may already be writing into it
        try:
            made.rmdir()
        except OSError:
            break
    return folder


def writable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` checked to be a file kf can write (a new one or one to replace; never a folder), in a folder it can
    make and write (``writable_folder``): the kf error comes before the work, not a FileExistsError after it."""
    file = Path(path)
    if file.is_dir():
        raise UnwritablePathError(f"{what} {file}: a folder, not a file name")
    writable_folder(file.parent, what)
    return file


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit, for the JSON files that README figures come from, with ``-dirty`` when tracked files
    differ from it; a source snapshot made with ``git archive`` (long runs use one, so that edits to the checkout
    cannot reach them) names its commit in a ``COMMIT`` file; "unknown" otherwise."""
    if (root / SNAPSHOT_COMMIT_FILE).is_file() and not (root / ".git").exists():
        return (root / SNAPSHOT_COMMIT_FILE).read_text().strip()
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
