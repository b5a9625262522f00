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

Every teacher takes ``[0, 1]`` images and returns ``TeacherOutput`` (per-task logits + pooled features of
its last 3 stages); external ones also carry ``input_spec`` (size, channels, normalisation from their own
config), which the data is then prepared with and the bank records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.models import count_parameters
from kf_model.teachers.base import (
    ExternalTeacher,
    TeacherMismatchError,
)
from kf_model.teachers.folder import TeacherFolderConfig, save_teacher_folder
from kf_model.teachers.sources import (
    SOURCE_FORMS,
    SOURCES,
    TeacherSource,
    parse_source,
)
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


def source_input_spec(source: str, *, weights: str | Path | None = None, image_size: int | None = None,
                      token: str | bool | None = None) -> InputSpec | None:
    """What the teacher named ``source`` takes (size, channels, normalisation), read from its config alone,
    before any weights: the data is prepared with it. None for kf's own teachers (the dataset decides)."""
    return parse_source(source).input_spec(weights=weights, image_size=image_size, token=token)


def with_new_head(source: str, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                  image_size: int | None = None) -> ExternalTeacher:
    """``timm:<name>`` / ``torchvision:<name>`` with its trunk from ``weights`` (optional: random init without)
    and a fresh classifier sized for ``tasks`` (``train_teacher.py --from``)."""
    return parse_source(source).with_new_head(weights=weights, tasks=tasks, one_vs_rest=one_vs_rest,
                                              image_size=image_size)


def teacher_input_spec(teacher: nn.Module) -> InputSpec | None:
    """What an external teacher was trained on (None for kf's own teachers: the dataset decides)."""
    return getattr(teacher, "input_spec", None) if isinstance(teacher, ExternalTeacher) else None


def describe_teacher(teacher: nn.Module, source: str, dataset: str) -> dict[str, Any]:
    """The teacher summary a bank's manifest and model card show."""
    if isinstance(teacher, ExternalTeacher):
        return {**teacher.describe(), "path": source}
    backbone = teacher.init_config["backbone"]
    kind = "K-way classifier read as one-vs-rest tasks" if teacher.one_vs_rest else "multi-task network"
    return {"description": f"{backbone['arch']} (width {backbone['width']}) {kind} trained on {dataset}",
            "params": count_parameters(teacher), "backbone": backbone, "one_vs_rest": teacher.one_vs_rest,
            "path": source}


__all__ = [
    "SOURCES", "SOURCE_FORMS", "ExternalTeacher", "TeacherFolderConfig", "TeacherMismatchError", "TeacherSource",
    "WeightsMismatchError", "create_teacher", "describe_teacher", "load_weights", "parse_source", "read_state_dict",
    "save_teacher_folder", "source_input_spec", "with_new_head",
]
