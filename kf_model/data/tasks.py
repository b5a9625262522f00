"""Labels -> tasks: how the label columns of a data source become kf tasks and integer targets.

A source gives one or more *attributes* (a class folder, a metadata column, a 🤗 label feature), each with
its class names in index order, and the class index of every item. With several attributes each is one
task (the multi-attribute setting, as dSprites or CelebA). A single attribute with K classes becomes, as
for the built-in Fashion-MNIST:

- ``task_mode="one-vs-rest"``: K binary tasks named ``slugify(class)``, labels ``("not <class>", <class>)``,
  one-hot targets ``[K]`` (the paper's setting: a K-way classifier read as K tasks);
- ``task_mode="kway"``: one K-way task named after the attribute (``"class"`` for a folder tree).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from kf_model.data.specs import TaskSpec, slugify
from kf_model.errors import InvalidConfigError, InvalidDataError, UnknownNameError, name_list
from kf_model.limits import MAX_CLASSES, MAX_TASKS

TASK_MODES = ("one-vs-rest", "kway")


@dataclass(frozen=True)
class Attribute:
    """One label column: its name (a column, or "class" for a folder tree) and its class names in index order."""

    name: str
    classes: tuple[str, ...]


def check_task_mode(task_mode: str) -> str:
    if task_mode not in TASK_MODES:
        raise UnknownNameError(f"unknown task mode {task_mode!r}; known modes: {', '.join(TASK_MODES)}")
    return task_mode


def natural_key(text: str) -> tuple:
    """Sort key of class names: numbers by value ("2" before "10", "0.5" before "1"), other names as timm's
    folder reader orders them (case-insensitive, digit runs as numbers: "img2" before "img10")."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return (0, value, text)
    parts = re.split(r"(\d+)", text.lower())
    return (1, tuple((0, int(p), "") if p.isdecimal() else (1, 0, p) for p in parts if p), text)


def class_codes(values: Sequence[str], column: str, where: str, *,
                fix: str = "add items of another class, or pick other label_columns") -> tuple[Attribute, torch.Tensor]:
    """The attribute of a column of class names (classes in natural order) and each value's class index."""
    classes = sorted(set(values), key=natural_key)
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "no value"
        raise InvalidDataError(f"{where}: {column!r} has {found}; a task needs at least 2 classes: {fix}")
    if len(classes) > MAX_CLASSES:
        raise InvalidDataError(f"{where}: {column!r} has {len(classes):,} different values; the limit is "
                               f"{MAX_CLASSES:,} classes (an id or caption column? pick the labels with label_columns)")
    index = {name: i for i, name in enumerate(classes)}
    return Attribute(column, tuple(classes)), torch.tensor([index[v] for v in values], dtype=torch.int64)


def _unique_slugs(names: Iterable[str], what: str) -> list[str]:
    slugs: dict[str, str] = {}
    for name in names:
        slug = slugify(name)
        if slug in slugs:
            raise InvalidDataError(f"{what} {slugs[slug]!r} and {name!r} both give the task name {slug!r}; "
                                   "rename one of them")
        slugs[slug] = name
    return list(slugs)


def make_tasks(attributes: Sequence[Attribute], task_mode: str) -> tuple[list[TaskSpec], bool]:
    """The tasks of these attributes, and whether they are the one-vs-rest tasks of a single K-way label."""
    check_task_mode(task_mode)
    if len(attributes) == 1 and task_mode == "one-vs-rest":
        (attribute,) = attributes
        if len(attribute.classes) > MAX_TASKS:
            raise InvalidDataError(f"{len(attribute.classes):,} classes would be as many one-vs-rest tasks; "
                                   f"the limit is {MAX_TASKS:,}: use task_mode='kway'")
        names = _unique_slugs(attribute.classes, "the classes")
        return [TaskSpec(name, (f"not {c}", c), f"Is it {c}? (one-vs-rest)")
                for name, c in zip(names, attribute.classes)], True
    if len(attributes) > MAX_TASKS:
        raise InvalidDataError(f"{len(attributes):,} label columns; the limit is {MAX_TASKS:,} tasks")
    names = _unique_slugs((a.name for a in attributes), "the label columns")
    return [TaskSpec(name, a.classes, f"Which {a.name}? ({len(a.classes)} classes)")
            for name, a in zip(names, attributes)], False


def encode_targets(codes: torch.Tensor, attributes: Sequence[Attribute], one_vs_rest: bool) -> torch.Tensor:
    """Targets int64 ``[N, T]`` from class indices ``[N, A]``: one-hot over K classes, or the indices as they are."""
    if one_vs_rest:
        return torch.nn.functional.one_hot(codes[:, 0], len(attributes[0].classes))
    return codes


def pick_columns(available: Sequence[str], wanted: Sequence[str] | None, default: Sequence[str],
                 where: str) -> list[str]:
    """`wanted` label columns, checked against the `available` ones (or `default` when none are asked for)."""
    if isinstance(wanted, str):
        wanted = [wanted]
    columns = list(default if wanted is None else wanted)
    if not columns:
        raise InvalidConfigError(f"{where}: no label column; the columns are {name_list(available, 12)}")
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise UnknownNameError(f"{where}: unknown label column {name_list(unknown, 3)}; the columns are "
                               f"{name_list(available, 12)}")
    if len(set(columns)) != len(columns):
        raise InvalidConfigError(f"{where}: a label column is named twice in {name_list(columns)}")
    return columns
