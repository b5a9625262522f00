"""The files of a bank on disk: paths that cannot leave the folder, and its TSNs, each checked against the
manifest (one network per folder: ``kf_model.models.files``).
"""

from __future__ import annotations

import os
from pathlib import Path

from kf_model.bank.manifest import MANIFEST_FILE, Manifest
from kf_model.errors import (
    IncompatibleFactorsError,
    InvalidConfigError,
)
from kf_model.models import TaskSpecificNetwork
from kf_model.models.files import CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, load_module, save_module


def bank_path(folder: Path, *parts: str) -> Path:
    """``folder/parts...``, refused unless it stays inside ``folder`` (names are data from a manifest).

    Checked on the path as written (not resolved): a Hub snapshot's files are symlinks into the cache's blob
    store by design, while a ``..`` or an absolute part never belongs in a bank path.
    """
    path = folder.joinpath(*parts)
    relative = os.path.relpath(os.path.normpath(path), os.path.normpath(folder))  # "." as the folder works too
    if any(Path(p).is_absolute() for p in parts) or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise InvalidConfigError(f"refusing the path {'/'.join(parts)!r}: it leads outside the bank folder {folder}")
    return path


def load_tsn(folder: Path, manifest: Manifest, name: str, source: str) -> TaskSpecificNetwork:
    """The TSN in ``tsn/<name>/``; its own config must describe the task the manifest gives that folder."""
    label = f"{source}: tsn/{name}"
    tsn = load_module(TaskSpecificNetwork, bank_path(folder, "tsn", name), label)
    expected = next(t for t in manifest.tasks if t.name == name)
    if tsn.task.name != name:
        raise IncompatibleFactorsError(f"{label}: the TSN in this folder was trained for task {tsn.task.name!r}, "
                                       f"not {name!r}")
    if tsn.task.labels != expected.labels:
        raise IncompatibleFactorsError(f"{label}: the TSN's classes differ from those {MANIFEST_FILE} gives the task")
    return tsn


__all__ = ["CONFIG_FILE", "PICKLE_SUFFIXES", "WEIGHTS_FILE", "bank_path", "load_module", "load_tsn", "save_module"]
