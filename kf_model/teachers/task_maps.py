"""Task maps: a K-way classifier factorized into the coarser questions a person asks (``--task-map FILE.json``).

A task is a named group of the teacher's classes, read one-vs-rest (P(task | x) = the teacher's softmax summed
over the group), or a K-way task over K disjoint groups (+ "rest" when they do not cover every class). These
group probabilities are exact answers of the teacher, so they are what KD distils: a task map needs no labels.

File format (``kf-task-map/1``)::

    {"format": "kf-task-map/1", "teacher_classes": 1000, "derived_by": "<command>",
     "tasks": [{"name": "dog", "description": "...", "classes": [151, 152, ...]},
               {"name": "pet", "description": "...", "groups": {"dog": [...], "cat": [...]}}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kf_model.data.specs import TaskSpec, validate_task_name
from kf_model.errors import InvalidConfigError
from kf_model.limits import MAX_CLASSES, MAX_TASKS
from kf_model.models import TeacherOutput

FORMAT = "kf-task-map/1"
REST = "rest"
MAX_TASK_MAP_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class MappedTask:
    """One task of a map: ``groups`` is {label: class indices}; one group = a one-vs-rest task."""

    name: str
    groups: dict[str, tuple[int, ...]]
    description: str = ""

    @property
    def one_vs_rest(self) -> bool:
        return len(self.groups) == 1

    def labels(self, num_classes: int) -> tuple[str, ...]:
        if self.one_vs_rest:
            return (f"not {self.name}", self.name)
        covered = sum(len(g) for g in self.groups.values()) == num_classes
        return tuple(self.groups) + (() if covered else (REST,))

    def spec(self, num_classes: int) -> TaskSpec:
        return TaskSpec(self.name, self.labels(num_classes), self.description or f"is it a {self.name}?")


@dataclass(frozen=True)
class TaskMap:
    teacher_classes: int
    tasks: tuple[MappedTask, ...]
    derived_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def task_specs(self) -> list[TaskSpec]:
        return [t.spec(self.teacher_classes) for t in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        tasks = []
        for t in self.tasks:
            entry: dict[str, Any] = {"name": t.name, "description": t.description}
            if t.one_vs_rest:
                entry["classes"] = list(next(iter(t.groups.values())))
            else:
                entry["groups"] = {k: list(v) for k, v in t.groups.items()}
            tasks.append(entry)
        return {"format": FORMAT, "teacher_classes": self.teacher_classes, "derived_by": self.derived_by,
                **self.extra, "tasks": tasks}

    @classmethod
    def from_dict(cls, data: Any, where: str = "task map") -> TaskMap:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidConfigError(f"{where}: not a task map (needs \"format\": \"{FORMAT}\")")
        classes = data.get("teacher_classes")
        if not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
            raise InvalidConfigError(f"{where}: teacher_classes must be an integer in [2, {MAX_CLASSES}]")
        raw = data.get("tasks")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TASKS:
            raise InvalidConfigError(f"{where}: tasks must be a list of 1 to {MAX_TASKS} tasks")
        tasks = tuple(_read_task(t, classes, f"{where}, task {i}") for i, t in enumerate(raw))
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            repeated = sorted(n for n in set(names) if names.count(n) > 1)
            raise InvalidConfigError(f"{where}: task names repeat ({repeated})")
        extra = {k: v for k, v in data.items() if k not in ("format", "teacher_classes", "derived_by", "tasks")}
        return cls(classes, tasks, str(data.get("derived_by", "")), extra)

    @classmethod
    def read(cls, path: str | Path) -> TaskMap:
        path = Path(path)
        if not path.is_file():
            raise InvalidConfigError(f"--task-map {path}: no such file")
        if path.stat().st_size > MAX_TASK_MAP_BYTES:
            raise InvalidConfigError(f"--task-map {path}: over {MAX_TASK_MAP_BYTES >> 20} MiB")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidConfigError(f"--task-map {path}: not JSON ({error})") from None
        return cls.from_dict(data, f"--task-map {path}")

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _read_task(entry: Any, num_classes: int, where: str) -> MappedTask:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidConfigError(f"{where}: a task is an object with a \"name\"")
    name = entry["name"]
    try:
        validate_task_name(name)
    except InvalidConfigError as error:
        raise InvalidConfigError(f"{where}: {error}") from None
    if ("classes" in entry) == ("groups" in entry):
        raise InvalidConfigError(f"{where} ({name}): give either \"classes\" (one-vs-rest) or \"groups\" (K-way)")
    raw_groups = {name: entry["classes"]} if "classes" in entry else entry["groups"]
    if not isinstance(raw_groups, dict) or not raw_groups or len(raw_groups) > MAX_CLASSES:
        raise InvalidConfigError(f"{where} ({name}): groups must be a non-empty object of label: [classes]")
    groups: dict[str, tuple[int, ...]] = {}
    seen: set[int] = set()
    for label, members in raw_groups.items():
        if not isinstance(members, list) or not members or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes for c in members):
            raise InvalidConfigError(f"{where} ({name}/{label}): classes must be a non-empty list of indices in "
                                     f"[0, {num_classes})")
        if seen & set(members):
            raise InvalidConfigError(f"{where} ({name}): groups overlap (class {min(seen & set(members))})")
        if label == REST:
            raise InvalidConfigError(f"{where} ({name}): \"{REST}\" is the classes no group holds; rename the group")
        seen |= set(members)
        groups[str(label)] = tuple(sorted(set(members)))
    if len(groups) == 1 and len(seen) == num_classes:
        raise InvalidConfigError(f"{where} ({name}): a one-vs-rest group holding every class is always 'yes'")
    return MappedTask(name, groups, str(entry.get("description", "")))


def group_log_probabilities(class_logits: Tensor, groups: list[tuple[int, ...]], add_rest: bool) -> Tensor:
    """[B, K] class logits -> [B, G (+1)] log P(group) = logsumexp of the log-softmax over each group (exact,
    stable), + the classes no group holds as the last column when ``add_rest``."""
    log_p = class_logits.float().log_softmax(dim=1)
    columns = [log_p[:, list(g)].logsumexp(dim=1) for g in groups]
    if add_rest:
        held = torch.zeros(class_logits.shape[1], dtype=torch.bool, device=class_logits.device)
        for g in groups:
            held[list(g)] = True
        columns.append(log_p[:, ~held].logsumexp(dim=1))
    return torch.stack(columns, dim=1)


def task_logits(class_logits: Tensor, task: MappedTask, num_classes: int) -> Tensor:
    """A mapped task's logits from the teacher's: [log(1 - P), log P] one-vs-rest, log P per group K-way."""
    groups = list(task.groups.values())
    if task.one_vs_rest:
        return group_log_probabilities(class_logits, groups, add_rest=True).flip(1)
    return group_log_probabilities(class_logits, groups, add_rest=len(task.labels(num_classes)) > len(groups))


class TaskMapTeacher(nn.Module):
    """A K-way teacher answering a task map's questions: same features, logits per mapped task."""

    def __init__(self, teacher: nn.Module, task_map: TaskMap) -> None:
        super().__init__()
        self.teacher, self.task_map = teacher, task_map
        self.tasks = task_map.task_specs()
        self.one_vs_rest = False
        self.source = getattr(teacher, "source", "")
        self.architecture = getattr(teacher, "architecture", "")
        self.input_spec = getattr(teacher, "input_spec", None)
        self.__dict__["network"] = getattr(teacher, "network", teacher)

    @property
    def feature_widths(self) -> list[int]:
        return self.teacher.feature_widths

    def forward(self, x: Tensor) -> TeacherOutput:
        out = self.teacher(x)
        class_logits = next(iter(out.logits.values())) if out.class_logits is None else out.class_logits
        logits = {t.name: task_logits(class_logits, t, self.task_map.teacher_classes) for t in self.task_map.tasks}
        return TeacherOutput(logits, out.features, class_logits)

    def describe(self) -> dict[str, Any]:
        inner = self.teacher.describe() if hasattr(self.teacher, "describe") else {}
        return {**inner, "description": f"{inner.get('description', self.source)}, read through a task map of "
                                        f"{len(self.tasks)} tasks", "one_vs_rest": False,
                "task_map": self.task_map.to_dict()}
