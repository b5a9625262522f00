"""Training checkpoints that a kill cannot leave half-written: the ones ``fit`` saves and ``--resume`` reads.

A checkpoint is the folder ``<output-dir>/checkpoints/checkpoint_N``: what ``Accelerator.save_state`` writes
(model, optimizer, registered objects, one RNG state per process) plus ``checkpoint.json``, the manifest of
those files (size and SHA-256), written last. The files are written into ``checkpoint_N.incomplete`` and the
folder is renamed to ``checkpoint_N`` only once the manifest is in it, so a kill during a save leaves an
``.incomplete`` folder, never a ``checkpoint_N`` that looks usable. Old checkpoints are deleted (renamed to
``.deleting``, then removed) only after the new one is in place. Only the main process renames and deletes;
every process writes its own RNG state, so the folder must be on storage every process sees.

``--resume latest`` takes the newest checkpoint with a manifest and names the ones it skipped; a checkpoint
whose files do not match its manifest (truncated, missing, edited) is refused with the name of the file
and of the newest intact checkpoint.

Test hook: with ``KF_TEST_KILL_DURING_SAVE=N`` in the environment, the main process kills itself (SIGKILL)
while saving ``checkpoint_N``, after every file is written and before the manifest and the rename: the worst
moment for a kill, which tests/test_checkpoints.py recovers from.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from kf_model.errors import KFError

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "checkpoint.json"
INCOMPLETE, DELETING = ".incomplete", ".deleting"  # suffixes of folders a kill may leave behind
KILL_HOOK = "KF_TEST_KILL_DURING_SAVE"
FORMAT = 1


class CheckpointError(KFError):
    """A checkpoint that cannot be resumed from; the message names the file and what to resume from instead."""


def checkpoint_number(path: Path) -> int:
    """N of ``checkpoint_N`` (-1 for any other name)."""
    match = re.fullmatch(r"checkpoint_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def existing_checkpoints(output_dir: Path) -> list[Path]:
    """Every ``checkpoint_N`` folder of ``output_dir``, oldest first, complete or not."""
    folder = output_dir / CHECKPOINTS_DIR
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_number(p) >= 0] if folder.is_dir() else []
    return sorted(found, key=checkpoint_number)


def leftovers(output_dir: Path) -> list[Path]:
    """Folders of saves or deletions that a kill interrupted."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.suffix in (INCOMPLETE, DELETING)
                  and checkpoint_number(p.with_suffix("")) >= 0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
        os.fsync(file.fileno())  # on disk before the rename makes the checkpoint visible
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_manifest(folder: Path, step: int, world_size: int) -> None:
    """``checkpoint.json``: size and SHA-256 of every file ``save_state`` wrote, the step and the world size."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, "step": step, "world_size": world_size, "files": files}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    _sha256(path)  # fsync


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a checkpoint, checked to be well formed (it becomes file names and sizes)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        ok = (manifest.get("format") == FORMAT and isinstance(manifest.get("world_size"), int)
              and isinstance(files, dict)
              and all(re.fullmatch(r"[\w.-]+", name) and name not in (".", "..") and isinstance(entry, dict)
                      and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)
                      for name, entry in files.items()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise CheckpointError(f"{folder / MANIFEST} cannot be read as a kf checkpoint manifest")
    return manifest


def problem(folder: Path) -> tuple[str, str] | None:
    """None for an intact checkpoint; else ("incomplete" | "damaged", why)."""
    if not (folder / MANIFEST).is_file():
        return "incomplete", f"no {MANIFEST}: its save never finished"
    try:
        manifest = read_manifest(folder)
    except CheckpointError:
        return "damaged", f"{MANIFEST} is unreadable"
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return "damaged", f"{name} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return "damaged", f"{name} has {size:,} bytes, {entry['bytes']:,} were written"
        if _sha256(path) != entry["sha256"]:
            return "damaged", f"{name} differs from the file that was written (SHA-256)"
    return None


def _damaged(folder: Path, why: str, candidates: list[Path]) -> CheckpointError:
    """The refusal of a damaged checkpoint, naming the newest intact one among ``candidates``."""
    intact = next((c for c in reversed(candidates) if c != folder and problem(c) is None), None)
    advice = (f"resume from the intact {intact} (--resume {intact})" if intact is not None
              else "no intact checkpoint is left: start afresh (without --resume)")
    return CheckpointError(f"checkpoint {folder} cannot be resumed from: {why}; {advice}")


def resolve_resume(resume: str | None, output_dir: Path, num_processes: int = 1,
                   process_index: int = 0) -> tuple[Path | None, list[str]]:
    """(the checkpoint to resume from or None, notes to print). ``latest``: the newest complete checkpoint of
    ``output_dir`` (skipping unfinished saves, each named in the notes); a path must be an intact checkpoint."""
    if resume is None:
        return None, []
    notes: list[str] = []
    if resume == "latest":
        found = existing_checkpoints(output_dir)
        notes += [f"--resume latest: skipped {p} (a save or deletion that was interrupted)"
                  for p in leftovers(output_dir)]
        chosen = None
        for folder in reversed(found):
            trouble = problem(folder)
            if trouble is None:
                chosen = folder
                break
            kind, why = trouble
            if kind == "damaged":
                raise _damaged(folder, why, [f for f in found if checkpoint_number(f) < checkpoint_number(folder)])
            notes.append(f"--resume latest: skipped {folder} ({why})")
        if chosen is None:
            return None, notes
    else:
        chosen = Path(resume)
        if not chosen.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
        trouble = problem(chosen)
        if trouble is not None:
            siblings = sorted((p for p in chosen.parent.iterdir() if p.is_dir() and checkpoint_number(p) >= 0),
                              key=checkpoint_number)
            raise _damaged(chosen, trouble[1], siblings)
    manifest = read_manifest(chosen)
    written_by = manifest["world_size"]
    if f"random_states_{process_index}.pkl" not in manifest["files"]:
        raise CheckpointError(f"checkpoint {chosen} was written by {written_by} process(es) and holds no random "
                              f"state for process {process_index}: resume it with {written_by} process(es)")
    if written_by != num_processes:
        notes.append(f"checkpoint {chosen} was written by {written_by} process(es), this run has {num_processes}: "
                     "the data order differs from an uninterrupted run")
    return chosen, notes


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    """``load_state`` of a checkpoint ``resolve_resume`` accepted; a mismatch (other options) is a KFError."""
    try:
        accelerator.load_state(str(folder))
    except (RuntimeError, ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError) as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[:2])[:300] or type(error).__name__
        raise CheckpointError(f"cannot resume from {folder} (was it written with other options?): {detail}"
                              ) from error


class Checkpointer:
    """Saves ``checkpoint_N``, N counting on after every folder already there, and keeps the newest ``keep``."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, keep: int) -> None:
        self.accelerator, self.folder, self.keep = accelerator, output_dir / CHECKPOINTS_DIR, keep
        numbers = [checkpoint_number(p) for p in existing_checkpoints(output_dir)]
        numbers += [checkpoint_number(p.with_suffix("")) for p in leftovers(output_dir)]
        self.next = max(numbers, default=-1) + 1
        accelerator.wait_for_everyone()  # every process counted before the main one changes the folder

    def save(self, step: int) -> Path:
        """Write the accelerator's state as the next checkpoint; every process must call it."""
        accelerator, main = self.accelerator, self.accelerator.is_main_process
        final = self.folder / f"checkpoint_{self.next}"
        partial = final.with_name(final.name + INCOMPLETE)
        if main:
            for stale in leftovers(self.folder.parent):
                shutil.rmtree(stale)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()  # every process's random state is written
        if main:
            if os.environ.get(KILL_HOOK) == str(self.next):
                os.kill(os.getpid(), signal.SIGKILL)
            write_manifest(partial, step, accelerator.num_processes)
            partial.rename(final)
            _fsync_folder(self.folder)
            self.rotate()
        accelerator.wait_for_everyone()
        self.next += 1
        return final

    def rotate(self) -> None:
        """Delete all but the newest ``keep`` complete checkpoints (after a new one is in place)."""
        found = existing_checkpoints(self.folder.parent)
        kept = [p for p in found if (p / MANIFEST).is_file()][-self.keep:]
        for old in found:
            if old not in kept:
                doomed = old.with_name(old.name + DELETING)
                old.rename(doomed)  # a kill during rmtree leaves a .deleting folder, not a half checkpoint
                shutil.rmtree(doomed)


__all__ = ["CHECKPOINTS_DIR", "CheckpointError", "Checkpointer", "existing_checkpoints", "load_checkpoint",
           "problem", "resolve_resume"]
