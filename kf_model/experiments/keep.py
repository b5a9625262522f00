"""Finished runs kept between machines: a working session gets a fresh machine, and an experiment of several
hours outlives it. ``keep`` copies what a later session needs out of a run folder (every result file, every
finished network without its checkpoints, the newest complete checkpoint of an unfinished training) into a
folder that is committed; ``restore`` copies it back before the same command runs again, which then skips the
finished runs and resumes the interrupted one from its checkpoint."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from kf_model.errors import KFError
from kf_model.experiments.runs import LOCK_SUFFIX, RESULTS_DIR
from kf_model.training.checkpoints import CHECKPOINTS_DIR, MANIFEST, existing_checkpoints
from kf_model.training.loop import TRAINING_FILE

SKIPPED_NAMES = {".lock", "__pycache__"}  # .lock: an old whole-folder lock


def _holds_runs(folder: Path) -> bool:
    """A RunBook's folder, or one above several (``--output``: ``<output>/<scale>/<dataset>/results``); looked for
    no deeper than that, so a mistyped path (a home folder) is not walked whole."""
    patterns = (RESULTS_DIR, f"*/{RESULTS_DIR}", f"*/*/{RESULTS_DIR}", f"*/*/*/{RESULTS_DIR}")
    return folder.is_dir() and any(p.is_dir() for pattern in patterns for p in folder.glob(pattern))


def _kept_files(run_folder: Path) -> Iterator[Path]:
    """The files of ``run_folder`` a later session needs, relative to it."""
    for path in sorted(run_folder.rglob("*")):
        relative = path.relative_to(run_folder)
        if not path.is_file() or path.is_symlink() or SKIPPED_NAMES & set(relative.parts):
            continue
        if path.name.endswith(LOCK_SUFFIX):
            continue  # a run's lock: it belongs to a process of this machine
        if path.name.startswith(".") and path.name.endswith(".partial"):
            continue  # a result being written (runs.write_atomic)
        if CHECKPOINTS_DIR in relative.parts:
            continue  # checkpoints: only the newest complete one of an unfinished training, below
        yield relative
    for checkpoints in sorted(run_folder.rglob(CHECKPOINTS_DIR)):
        training = checkpoints.parent
        if (training / TRAINING_FILE).is_file():
            continue  # finished: its weights are kept, its checkpoints are not needed
        complete = [p for p in existing_checkpoints(training) if (p / MANIFEST).is_file()]
        if complete:
            yield from (p.relative_to(run_folder) for p in sorted(complete[-1].rglob("*")) if p.is_file())


def _check_replaceable(folder: Path) -> None:
    """``keep`` replaces ``folder`` whole: refuse anything but nothing, an empty folder or an earlier keep (it
    holds a ``results/`` folder), so that a mistyped ``--kept`` deletes no one's files."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise KFError(f"{folder} is not a folder: give --kept a new folder or an earlier keep")
    if any(folder.iterdir()) and not _holds_runs(folder):
        raise KFError(f"{folder} holds files that are not kept experiment runs (no {RESULTS_DIR}/ folder in it): "
                      "give --kept a new folder or an earlier keep; nothing was changed")


def keep(run_folder: Path, kept: Path) -> dict[str, int]:
    """Make ``kept`` hold what ``run_folder`` has that a later session needs (and nothing older): returns the
    files and bytes kept."""
    run_folder, kept = Path(run_folder), Path(kept)
    if not _holds_runs(run_folder):
        raise KFError(f"{run_folder} holds no experiment runs (no {RESULTS_DIR}/ folder in it)")
    if (kept.resolve() == run_folder.resolve() or run_folder.resolve() in kept.resolve().parents
            or kept.resolve() in run_folder.resolve().parents):
        raise KFError(f"the kept folder {kept} and the run folder {run_folder} must not hold one another")
    staging = kept.with_name(kept.name + ".keeping")
    for folder in (kept, staging):  # both are replaced whole: only ever an earlier keep (or nothing)
        _check_replaceable(folder)
    wanted = list(_kept_files(run_folder))
    shutil.rmtree(staging, ignore_errors=True)
    for relative in wanted:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_folder / relative, staging / relative)
    if kept.exists():  # replaced whole: an old checkpoint of a training that has finished since goes with it
        shutil.rmtree(kept)
    kept.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(kept)
    return {"files": len(wanted), "bytes": sum((kept / r).stat().st_size for r in wanted)}


def restore(kept: Path, run_folder: Path) -> int:
    """Copy ``kept`` into ``run_folder`` where a file is missing there (local runs are newer and win); returns
    the files copied."""
    kept, run_folder = Path(kept), Path(run_folder)
    if not _holds_runs(kept):
        raise KFError(f"{kept} holds no kept experiment runs (no {RESULTS_DIR}/ folder in it)")
    copied = 0
    for path in sorted(kept.rglob("*")):
        target = run_folder / path.relative_to(kept)
        if path.is_file() and not path.is_symlink() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


__all__ = ["keep", "restore"]
