"""Banks handed to the user, with only the ticked tasks, in a scratch folder: a zip of a bank folder (loads back
with ``FactorBank.from_pretrained``) or the assembled network as one ONNX file (for runtimes outside Python).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

from kf_model.bank import FactorBank


class ScratchDir:
    """A temporary folder made on first use and removed with this object or at exit, whichever comes first.

    A server that never exports leaves nothing in the temp dir, and one that does leaves nothing once it stops.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    @property
    def path(self) -> Path:
        with self._lock:
            if self._path is None or not self._path.is_dir():
                self._path = Path(tempfile.mkdtemp(prefix=self.prefix))
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, ignore_errors=True)
            return self._path

    def fresh_folder(self, max_age_s: float = 3600.0) -> Path:
        """A new empty folder inside, after removing those older than ``max_age_s`` (Gradio serves its own copy).

        Concurrent callers may remove the same old folder: one that vanished meanwhile is skipped, not an error.
        """
        root = self.path
        now = time.time()
        for old in root.iterdir():
            try:
                if now - old.stat().st_mtime > max_age_s:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                continue
        return Path(tempfile.mkdtemp(dir=root))

    def cleanup(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._path = self._finalizer = None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:100]


def export_stem(prefix: str, names: Sequence[str]) -> str:
    """A file name stem from the bank and its tasks (the tasks' count beyond three)."""
    return _slug(f"{prefix}-{'-'.join(names) if len(names) <= 3 else f'{len(names)}tasks'}")


def write_bank_zip(bank: FactorBank, prefix: str, names: Sequence[str], out_dir: str | os.PathLike) -> Path:
    """A zip, written into ``out_dir``, of ``bank`` saved as a folder (one top folder, named after ``prefix`` and
    the tasks); no temporary file is left behind."""
    stem = export_stem(prefix, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = bank.save_pretrained(Path(tmp) / stem)
        archive = out / f"{stem}.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, Path(stem) / path.relative_to(folder))
    return archive


def write_bank_onnx(bank: FactorBank, prefix: str, names: Sequence[str], out_dir: str | os.PathLike, *,
                    quantize: str | None = None) -> Path:
    """The assembled network of ``names`` as ``out_dir/<stem>.onnx`` (``<stem>-int8.onnx`` when quantized; see
    :mod:`kf_model.export.onnx`)."""
    suffix = f"-{quantize}" if quantize else ""
    return bank.export_onnx(names, Path(out_dir) / f"{export_stem(prefix, names)}{suffix}.onnx", quantize=quantize)
