"""Teachers from anywhere, picked by the form of their name (as timm's factory picks a model source).

=============================================  ===========================================================
``--teacher``                                  what is loaded
=============================================  ===========================================================
a folder written by ``train_teacher.py``       kf's multi-task ``Teacher`` (one head per task), or a
                                               timm/torchvision head fitted on your data (``--from``)
a folder with timm's ``config.json``           that timm model (``model.safetensors`` beside it)
``timm:<name>`` + ``--teacher-weights F``      a timm architecture with your safetensors weights
``hf-hub:<org>/<repo>[@rev]``                  a timm model on the Hub (config.json + model.safetensors only)
``torchvision:<name>`` + ``--teacher-weights`` a torchvision architecture with your safetensors weights
=============================================  ===========================================================

Each form is one :class:`~kf_model.teachers.sources.TeacherSource` (``teachers/sources.py``): the name is parsed
once into it, and it knows the teacher's input spec, how to build it and how to give it a new head.

Any of them that is one K-way classifier can answer a task map's coarser questions instead of its own classes
(:func:`create_task_map_teacher`, ``factorize.py --task-map FILE.json``; ``kf_model.teachers.task_maps``). A
trusted pickled checkpoint becomes a teacher folder with ``python -m kf_model.teachers convert``.

Every teacher takes ``[0, 1]`` images and returns ``TeacherOutput`` (per-task logits + pooled features of
its last 3 stages); external ones also carry ``input_spec`` (size, channels, normalisation from their own
config), which the data is then prepared with and the bank records.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec, distinct_labels
from kf_model.models import Teacher, count_parameters
from kf_model.models.files import load_module
from kf_model.teachers.base import (
    ExternalTeacher,
    TeacherMismatchError,
)
from kf_model.teachers.folder import CONFIG_FILE, TeacherFolderConfig, save_teacher_folder
from kf_model.teachers.sources import (
    SOURCE_FORMS,
    SOURCES,
    FolderSource,
    TeacherSource,
    parse_source,
)
from kf_model.teachers.task_maps import TaskMap, TaskMapTeacher
from kf_model.teachers.weights import (
    WeightsMismatchError,
    load_weights,
    read_state_dict,
)


def create_teacher(source: str, *, tasks: list[TaskSpec], one_vs_rest: bool, weights: str | Path | None = None,
                   image_size: int | None = None, token: str | bool | None = None,
                   some_tasks: bool = False) -> nn.Module:
    """The frozen teacher (eval mode, no gradients) named by ``source``, checked against the data's tasks
    (``some_tasks``: a kf teacher may solve a subset of them, as when evaluating)."""
    teacher = parse_source(source).build(tasks=tasks, one_vs_rest=one_vs_rest, weights=weights,
                                         image_size=image_size, token=token, some_tasks=some_tasks)
    return teacher.eval().requires_grad_(False)


def create_task_map_teacher(source: str, task_map: TaskMap, *, weights: str | Path | None = None,
                            image_size: int | None = None, token: str | bool | None = None) -> TaskMapTeacher:
    """The frozen K-way teacher named by ``source`` answering ``task_map``'s tasks (group probabilities)."""
    parsed, classes = parse_source(source), task_map.teacher_classes
    folder = Path(str(source))
    if isinstance(parsed, FolderSource) and parsed.is_kf_teacher():
        teacher: nn.Module = load_module(Teacher, folder, f"teacher {folder}")
        if not teacher.one_vs_rest or len(teacher.tasks) != classes:
            raise TeacherMismatchError(f"teacher {folder} is not one {classes}-way classifier (the task map's "
                                       "teacher_classes); a task map groups the classes of a K-way teacher")
    else:
        labels = None
        if isinstance(parsed, FolderSource) and (folder / CONFIG_FILE).is_file():
            labels = TeacherFolderConfig.read(folder).label_names
        names = distinct_labels(labels) if labels else [str(i) for i in range(classes)]
        own = [TaskSpec("class", tuple(names), "the teacher's own classes")]
        try:
            teacher = parsed.build(tasks=own, one_vs_rest=False, weights=weights, image_size=image_size, token=token)
        except TeacherMismatchError as error:  # its words speak of "the data": here the map sets the class count
            found = re.search(r"predicts (\d+) classes", str(error))
            raise TeacherMismatchError(
                f"the task map groups the classes of a {classes}-way teacher (its teacher_classes), but {source} "
                f"predicts {found.group(1) if found else 'another number of'} classes: use a task map made for this "
                "teacher, or the teacher the map was made for") from None
    return TaskMapTeacher(teacher, task_map).eval().requires_grad_(False)


def source_input_spec(source: str, *, weights: str | Path | None = None, image_size: int | None = None,
                      token: str | bool | None = None) -> InputSpec | None:
    """What the teacher named ``source`` takes (size, channels, normalisation), read from its config alone,
    before any weights: the data is prepared with it. None for kf's own teachers (the dataset decides)."""
    return parse_source(source).input_spec(weights=weights, image_size=image_size, token=token)


def with_new_head(source: str, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                  image_size: int | None = None, input_spec: InputSpec | None = None) -> ExternalTeacher:
    """``timm:<name>`` / ``torchvision:<name>`` with its trunk from ``weights`` (optional: random init without)
    and a fresh classifier sized for ``tasks`` (``train_teacher.py --from``; several labels: one head per task,
    side by side). ``input_spec`` replaces the architecture's own (a network trained from scratch takes the
    data's size)."""
    return parse_source(source).with_new_head(weights=weights, tasks=tasks, one_vs_rest=one_vs_rest,
                                              image_size=image_size, input_spec=input_spec)


def teacher_input_spec(teacher: nn.Module) -> InputSpec | None:
    """What an external teacher was trained on (None for kf's own teachers: the dataset decides)."""
    return getattr(teacher, "input_spec", None) if isinstance(teacher, ExternalTeacher | TaskMapTeacher) else None


def describe_teacher(teacher: nn.Module, source: str, dataset: str) -> dict[str, Any]:
    """The teacher summary a bank's manifest and model card show."""
    if isinstance(teacher, ExternalTeacher | TaskMapTeacher):
        return {**teacher.describe(), "path": source}
    backbone = teacher.init_config["backbone"]
    kind = "K-way classifier read as one-vs-rest tasks" if teacher.one_vs_rest else "multi-task network"
    return {"description": f"{backbone['arch']} (width {backbone['width']}) {kind} trained on {dataset}",
            "params": count_parameters(teacher), "backbone": backbone, "one_vs_rest": teacher.one_vs_rest,
            "path": source}


__all__ = [
    "SOURCES", "SOURCE_FORMS", "ExternalTeacher", "TaskMap", "TaskMapTeacher", "TeacherFolderConfig",
    "TeacherMismatchError", "TeacherSource", "WeightsMismatchError", "create_task_map_teacher", "create_teacher",
    "describe_teacher", "load_weights", "parse_source", "read_state_dict", "save_teacher_folder",
    "source_input_spec", "teacher_input_spec", "with_new_head",
]
