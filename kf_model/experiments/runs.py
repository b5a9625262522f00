"""Resumable experiments: every run (one network trained, one scoring) leaves its own result file.

An experiment is a list of :class:`Run` s, in an order where each run finds what it needs already done. The
:class:`RunBook` of a folder executes them: a run whose result file exists is skipped, a training run that was
interrupted resumes from its last checkpoint (``fit``'s ``--resume latest``), and each finished run writes
``results/<name>.json`` at once (its result, the git commit, the full command, the seconds it took). The
experiment's JSON is then assembled from the finished runs only and names the runs still missing, so a long
experiment can be stopped at any time and continued by rerunning the same command.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kf_model.errors import KFError
from kf_model.utils import git_commit

RESULTS_DIR = "results"
LOCK_SUFFIX = ".lock"  # results/<run>.lock: the pid of the process running that run
RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9_.=+-]{0,119}$")


@dataclass(frozen=True)
class Run:
    """One unit of an experiment: ``action()`` does the work and returns its JSON-able result."""

    name: str  # unique in its experiment; the result file's name
    kind: str  # "train", "score" or "transfer": what the cost table groups by
    action: Callable[[], dict[str, Any]]

    def __post_init__(self) -> None:
        if not RUN_NAME.match(self.name):
            raise KFError(f"run name {self.name!r} must be a slug (a-z, 0-9, _ . = + -), at most 120 characters")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # two writers never share a partial file
    with partial.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK_WAIT_S = 10.0  # how often a run held by another process is looked at again


def _take(path: Path) -> int:
    """Create the lock file ``path`` holding this pid; 0, or the pid of the live process that holds it."""
    for _ in range(2):
        try:
            with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY), "w") as handle:
                handle.write(str(os.getpid()))
            return 0
        except FileExistsError:
            text = path.read_text().strip() if path.exists() else ""
            pid = int(text) if text.isdigit() else 0
            if pid and pid != os.getpid() and _alive(pid):
                return pid
            path.unlink(missing_ok=True)  # left by a process that died: taken over
    return 0


@contextmanager
def run_lock(path: Path, log: Callable[[str], None] = print, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One process at a time runs a run (two would train the same stage at once): another process's run is waited
    for, so that two experiments sharing a folder run side by side and share their common runs; a lock left by a
    process that died is taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while (pid := _take(path)):
        if not told:
            log(f"{path.stem}: run by another process (pid {pid}); waiting for it (a stale lock can be removed: "
                f"{path})")
            told = True
        time.sleep(wait_s)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


class RunBook:
    """The result files of one experiment folder: what is finished, and running what is not."""

    def __init__(self, folder: Path, command: str, commit: str | None = None) -> None:
        self.folder, self.command = Path(folder), command
        self.commit = commit if commit is not None else git_commit()

    def path(self, name: str) -> Path:
        return self.folder / RESULTS_DIR / f"{name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        """The finished run's record, or None if it has not finished (a damaged file counts as not finished)."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def execute(self, runs: Sequence[Run], log: Callable[[str], None] = print,
                on_finish: Callable[[str], None] | None = None) -> list[str]:
        """Run every unfinished run in order (``on_finish(name)`` after each); returns the names that ran now."""
        names = [run.name for run in runs]
        if len(set(names)) != len(names):
            raise KFError(f"an experiment's runs need distinct names, got {names}")
        if all(self.record(name) is not None for name in names):
            log(f"all {len(names)} runs finished already")
            return []
        ran = []
        for index, run in enumerate(runs, 1):
            if self.record(run.name) is not None:
                log(f"[{index}/{len(runs)}] {run.name}: finished already, skipped")
                continue
            with run_lock(self.folder / RESULTS_DIR / f"{run.name}{LOCK_SUFFIX}", log):
                if self.record(run.name) is not None:  # another process finished it while this one waited
                    log(f"[{index}/{len(runs)}] {run.name}: finished by another process, skipped")
                    continue
                self._run(run, f"[{index}/{len(runs)}]", log)
            ran.append(run.name)
            if on_finish is not None:
                on_finish(run.name)
        return ran

    def _run(self, run: Run, counter: str, log: Callable[[str], None]) -> None:
        log(f"{counter} {run.name} ({run.kind}) ...")
        start = time.perf_counter()
        result = run.action()
        seconds = round(time.perf_counter() - start, 1)
        write_atomic(self.path(run.name), json.dumps({
            "name": run.name, "kind": run.kind, "commit": self.commit, "command": self.command,
            "seconds": seconds, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "result": result}, indent=2) + "\n")
        log(f"{counter} {run.name}: done in {seconds:.0f} s")

    def collect(self, names: Iterable[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """(records of the finished runs among ``names``, names still missing), in ``names``' order."""
        finished, missing = {}, []
        for name in names:
            record = self.record(name)
            if record is None:
                missing.append(name)
            else:
                finished[name] = record
        return finished, missing


def provenance(finished: dict[str, dict[str, Any]], missing: list[str], planned: int) -> dict[str, Any]:
    """What an assembled JSON says about where its numbers come from: per run its commit, command and seconds;
    the runs still missing; whether the experiment is complete."""
    return {
        "complete": not missing, "planned_runs": planned, "finished_runs": len(finished), "missing_runs": missing,
        "commits": sorted({r["commit"] for r in finished.values()}),
        "runs": {name: {**{k: r[k] for k in ("kind", "commit", "command", "seconds", "finished")},
                        "seconds_all_segments": _all_segments(r)} for name, r in finished.items()}}


def _all_segments(record: dict[str, Any]) -> float:
    """A run's seconds, every segment of a training resumed from a checkpoint counted (its own clock)."""
    return max(record["seconds"], float(record["result"].get("wall_time_s", 0.0)))


def cost_table(finished: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Minutes per finished run, grouped by kind: count, mean and total (the projected cost of the rest); a
    resumed training counts all its segments."""
    table: dict[str, dict[str, float]] = {}
    for record in finished.values():
        entry = table.setdefault(record["kind"], {"runs": 0, "minutes_total": 0.0})
        entry["runs"] += 1
        seconds = _all_segments(record)  # a resumed training: its own clock beats this record's last segment
        entry["minutes_total"] = round(entry["minutes_total"] + seconds / 60, 2)
    for entry in table.values():
        entry["minutes_per_run"] = round(entry["minutes_total"] / entry["runs"], 2)
    return table


__all__ = ["LOCK_SUFFIX", "RESULTS_DIR", "Run", "RunBook", "cost_table", "git_commit", "provenance", "run_lock",
           "write_atomic"]
