"""Growing a bank safely: every file ``add_task`` will touch checked before any training, and the grown bank
written all or nothing.

A bank is data from outside: its ``factors.json`` summaries (``metrics``, ``training``) and its
``evaluation/results.json`` are rewritten when a task is added. A value of the wrong shape there (``metrics.tasks``
as a list, ``num_tasks: 0``, text where a table is expected, deep nesting) used to fail *after* training, with
the new TSN already written. :func:`check_growable` refuses such a bank before training, naming the file and the
key; :func:`write_atomically` stages the grown bank in a sibling folder and swaps it in only once it is complete.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kf_model.bank.manifest import EVALUATION_DIR, MANIFEST_FILE, RESULTS_JSON
from kf_model.errors import InvalidConfigError
from kf_model.limits import MAX_MANIFEST_BYTES, read_json

Result = TypeVar("Result")


def _is_scalar(value: Any) -> bool:
    """A plain table value: text, a yes/no, a finite number or nothing."""
    return value is None or isinstance(value, str | bool) or (isinstance(value, numbers.Real)
                                                              and math.isfinite(value))


def _table_problems(value: Any, key: str) -> list[str]:
    """``value`` must be an object of objects of plain values: {task: {metric: number}}."""
    if not isinstance(value, dict):
        return [f"{key!r} must be an object of per-task objects, got {type(value).__name__}"]
    for name, row in value.items():
        if not isinstance(row, dict) or not all(_is_scalar(v) for v in row.values()):
            return [f"{key}.{name} must be an object of plain values (numbers, text)"]
    return []


def manifest_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong, for adding a task, with the summaries of a parsed ``factors.json`` (empty: nothing)."""
    problems: list[str] = []
    metrics, training = data.get("metrics", {}), data.get("training", {})
    for key, value in (("metrics", metrics), ("training", training)):
        if not isinstance(value, dict):
            return [f"{key!r} must be an object, got {type(value).__name__}"]
    if "tasks" in metrics:
        problems += _table_problems(metrics["tasks"], "metrics.tasks")
    summary = metrics.get("summary", {})
    if not isinstance(summary, dict) or not all(_is_scalar(v) for v in summary.values()):
        problems.append("'metrics.summary' must be an object of plain values (numbers, text)")
    added = training.get("added_tasks", {})
    if not isinstance(added, dict) or not all(isinstance(v, dict) for v in added.values()):
        problems.append("'training.added_tasks' must be an object of per-task objects")
    commands = training.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        problems.append("'training.commands' must be a list of strings")
    return problems


def evaluation_problems(results: Any) -> list[str]:
    """What is wrong, for adding a task, with a parsed ``evaluation/results.json`` (empty: nothing)."""
    if not isinstance(results, dict):
        return [f"it must be a JSON object, got {type(results).__name__}"]
    problems: list[str] = []
    for key in ("models", "accuracy", "added_tasks", "parameters"):
        if key in results and not isinstance(results[key], dict):
            problems.append(f"{key!r} must be an object, got {type(results[key]).__name__}")
    bank = (results.get("models") or {}).get("bank", {}) if isinstance(results.get("models"), dict) else {}
    if not isinstance(bank, dict):
        problems.append("'models.bank' must be an object")
    accuracy = results.get("accuracy")
    if isinstance(accuracy, dict) and not isinstance(accuracy.get("factor", {}), dict):
        problems.append("'accuracy.factor' must be an object")
    if isinstance(results.get("parameters"), dict):
        problems += parameters_problems(results["parameters"])[:1]
    added = results.get("added_tasks")
    if isinstance(added, dict):
        problems += [f"'added_tasks.{name}' must be an object with a numeric accuracy" for name, row in added.items()
                     if not isinstance(row, dict) or not isinstance(row.get("accuracy"), numbers.Real)
                     or not isinstance(row.get("samples", 0), numbers.Integral)][:1]
    return problems


def parameters_problems(params: Any) -> list[str]:
    """What is wrong with ``results.json``'s ``parameters`` table (the Explain tab divides by ``num_tasks``)."""
    if not isinstance(params, dict):
        return [f"'parameters' must be an object, got {type(params).__name__}"]
    problems = [f"'parameters.{key}' must be a whole number of at least {low}" for key, low in
                (("num_tasks", 1), ("ckn_params", 0), ("bank_params", 0), ("subset_students_params_paper", 0))
                if isinstance(params.get(key), bool) or not isinstance(params.get(key), numbers.Integral)
                or params[key] < low]
    tsn = params.get("tsn_params")
    if not isinstance(tsn, list) or not tsn or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                       for v in tsn):
        problems.append("'parameters.tsn_params' must be a list of whole numbers")
    for key in ("teacher_params", "kd_student_params"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            problems.append(f"'parameters.{key}' must be a whole number")
    return problems


def check_growable(folder: Path | None, source: str | None = None) -> None:
    """Refuse, before training, a bank whose ``factors.json`` or ``evaluation/results.json`` adding a task would
    fail on (each problem named with its file and key). ``folder`` holds the bank's files (a Hub snapshot too)."""
    if folder is None:
        return
    source = source or str(folder)
    manifest = folder / MANIFEST_FILE
    data = read_json(manifest, f"{source}/{MANIFEST_FILE}", max_bytes=MAX_MANIFEST_BYTES)
    problems = manifest_problems(data) if isinstance(data, dict) else ["it must be a JSON object"]
    if problems:
        raise InvalidConfigError(f"{source}/{MANIFEST_FILE}: {problems[0]}; a task cannot be added to this bank "
                                 "until it is fixed")
    results = folder / EVALUATION_DIR / RESULTS_JSON
    if results.is_file():
        where = f"{source}/{EVALUATION_DIR}/{RESULTS_JSON}"
        problems = evaluation_problems(read_json(results, where))
        if problems:
            raise InvalidConfigError(f"{where}: {problems[0]}; fix it or remove {EVALUATION_DIR}/ before adding a "
                                     "task")


def write_atomically(folder: Path, write: Callable[[Path], Result]) -> Result:
    """Run ``write(staging)`` on a copy of ``folder`` made beside it, then swap the copy in: the bank folder is
    the old one or the grown one, never half of each (an error leaves it untouched and removes the copy).

    The swap is two renames in the same parent folder; a crash between them leaves the old bank complete under
    ``.<name>.old-*`` next to the new one.
    """
    folder = Path(folder)
    parent = folder.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.growing-", dir=parent))
    old: Path | None = None
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True, symlinks=True)
        result = write(staging)
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=parent))
        os.rmdir(old)
        os.rename(folder, old)
        os.rename(staging, folder)
    except BaseException:
        if old is not None and old.exists() and not folder.exists():
            os.rename(old, folder)  # put the old bank back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return result
