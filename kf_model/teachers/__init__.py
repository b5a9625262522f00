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

Every teacher takes ``[0, 1]`` images and returns ``TeacherOutput`` (per-task logits + pooled features of
its last 3 stages); external ones also carry ``input_spec`` (size, channels, normalisation from their own
config), which the data is then prepared with and the bank records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.data.tasks import TASK_MODES
from kf_model.errors import KFError, UnknownNameError
from kf_model.models import Teacher, count_parameters
from kf_model.models.files import load_module
from kf_model.teachers.base import ExternalTeacher, TeacherMismatchError, check_head
from kf_model.teachers.folder import CONFIG_FILE, TeacherFolderConfig, save_teacher_folder
from kf_model.teachers.weights import WeightsMismatchError, conversion_command, load_weights, read_state_dict

SOURCE_FORMS = "a teacher folder, timm:<name>, hf-hub:<org>/<repo>[@rev] or torchvision:<name>"


def create_teacher(source: str, *, tasks: list[TaskSpec], one_vs_rest: bool, weights: str | Path | None = None,
                   image_size: int | None = None, token: str | bool | None = None,
                   some_tasks: bool = False) -> nn.Module:
    """The frozen teacher (eval mode, no gradients) named by ``source``, checked against the data's tasks
    (``some_tasks``: a kf teacher may solve a subset of them, as when evaluating)."""
    teacher = _create(str(source), tasks=tasks, one_vs_rest=one_vs_rest, weights=weights, image_size=image_size,
                      token=token, some_tasks=some_tasks)
    return teacher.eval().requires_grad_(False)


def _create(source: str, *, tasks, one_vs_rest, weights, image_size, token, some_tasks) -> nn.Module:
    if source.startswith("timm:"):
        from kf_model.teachers.timm_teacher import timm_teacher

        return timm_teacher(source[5:], weights=weights, tasks=tasks, one_vs_rest=one_vs_rest, image_size=image_size)
    if source.startswith("torchvision:"):
        from kf_model.teachers.torchvision_teacher import torchvision_teacher

        return torchvision_teacher(source[12:], weights=weights, tasks=tasks, one_vs_rest=one_vs_rest,
                                   image_size=image_size)
    if source.startswith("hf-hub:"):
        from kf_model.teachers.timm_teacher import hub_teacher

        return hub_teacher(source[7:], tasks=tasks, one_vs_rest=one_vs_rest, token=token)
    folder = Path(source)
    if not (folder / CONFIG_FILE).is_file():
        raise UnknownNameError(f"--teacher {source!r}: no such teacher folder; give {SOURCE_FORMS}")
    if "backbone" in _read_keys(folder):
        return kf_teacher(folder, tasks, some_tasks)
    from kf_model.teachers.timm_teacher import folder_teacher

    return folder_teacher(folder, tasks=tasks, one_vs_rest=one_vs_rest)


def _read_keys(folder: Path) -> set[str]:
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def kf_teacher(folder: Path, tasks: list[TaskSpec], some_tasks: bool = False) -> Teacher:
    """A multi-task ``Teacher`` written by ``train_teacher.py`` (kf's own networks)."""
    teacher = load_module(Teacher, folder, f"teacher {folder}")
    names, expected = [t.name for t in teacher.tasks], [t.name for t in tasks]
    if (not set(names) <= set(expected)) if some_tasks else names != expected:
        raise TeacherMismatchError(f"teacher {folder} solves tasks {names[:8]}, but the data has {expected[:8]}")
    return teacher


def source_input_spec(source: str, *, weights: str | Path | None = None, image_size: int | None = None,
                      token: str | bool | None = None) -> InputSpec | None:
    """What the teacher named ``source`` takes (size, channels, normalisation), read from its config alone,
    before any weights: the data is prepared with it. None for kf's own teachers (the dataset decides)."""
    source = str(source)
    if source.startswith("timm:"):
        import timm
        import torch

        from kf_model.teachers.timm_teacher import check_timm_name, timm_input_spec, weights_in_chans

        in_chans = weights_in_chans(source[5:], weights)
        with torch.device("meta"):
            model = timm.create_model(check_timm_name(source[5:]), pretrained=False, in_chans=in_chans)
        return timm_input_spec(model, in_chans, image_size)
    if source.startswith("torchvision:"):
        from kf_model.teachers.torchvision_teacher import check_torchvision_name, torchvision_input_spec

        return torchvision_input_spec(check_torchvision_name(source[12:]), image_size)
    if source.startswith("hf-hub:"):
        from kf_model.teachers.timm_teacher import fetch_hub_teacher

        folder = fetch_hub_teacher(source[7:], token=token, weights=False)
        return TeacherFolderConfig.read(folder).input_spec
    folder = Path(source)
    if (folder / CONFIG_FILE).is_file() and "architecture" in _read_keys(folder):
        return TeacherFolderConfig.read(folder).input_spec
    return None


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
    "SOURCE_FORMS", "TASK_MODES", "ExternalTeacher", "KFError", "TeacherFolderConfig", "TeacherMismatchError",
    "WeightsMismatchError", "check_head", "conversion_command", "create_teacher", "describe_teacher", "kf_teacher",
    "load_weights", "read_state_dict", "save_teacher_folder", "source_input_spec", "teacher_input_spec",
]
