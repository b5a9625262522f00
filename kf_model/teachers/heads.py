"""A pretrained trunk with a new head for your classes: the first step when the teacher's head does not
match your labels (an ImageNet model and your 7 classes). ``train/train_teacher.py --from`` trains the head
(a linear probe) or everything (``--finetune``), and saves a teacher folder that ``--teacher`` then loads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import UnknownNameError
from kf_model.teachers.base import ExternalTeacher, head_labels
from kf_model.teachers.folder import TeacherFolderConfig, save_teacher_folder
from kf_model.teachers.weights import load_weights, read_state_dict


def classifier_prefix(model: nn.Module) -> str:
    """The name of the final classifier module (timm says it; torchvision: the last Linear)."""
    if hasattr(model, "pretrained_cfg") and model.pretrained_cfg.get("classifier"):
        return str(model.pretrained_cfg["classifier"])
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UnknownNameError(f"{type(model).__name__} has no Linear classifier to replace")
    return linears[-1]


def with_new_head(source: str, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                  image_size: int | None = None, input_spec: InputSpec | None = None) -> ExternalTeacher:
    """``timm:<name>`` / ``torchvision:<name>`` with its trunk from ``weights`` (optional: random init without)
    and a fresh classifier sized for ``tasks`` (several labels: one head per task, side by side).
    ``input_spec`` replaces the architecture's own (a network trained from scratch takes the data's size)."""
    num_classes = len(head_labels(tasks, one_vs_rest))
    state = read_state_dict(weights) if weights is not None else None
    if source.startswith("timm:"):
        from kf_model.teachers.timm_teacher import (
            TimmTeacher,
            create_timm_model,
            stage_widths,
            timm_input_spec,
            weights_in_chans,
        )

        in_chans = input_spec.channels if input_spec is not None else weights_in_chans(source[5:], weights)
        model = create_timm_model(source[5:], num_classes, in_chans, source)
        if state is not None:
            load_weights(model, state, f"{source} weights {weights}", ignore=(classifier_prefix(model) + ".",))
        return TimmTeacher(model, source=source, architecture=source[5:].split(".")[0],
                           input_spec=input_spec or timm_input_spec(model, in_chans, image_size), tasks=tasks,
                           one_vs_rest=one_vs_rest, feature_widths=stage_widths(model))
    if source.startswith("torchvision:"):
        import torchvision

        from kf_model.teachers.torchvision_teacher import (
            check_torchvision_name,
            torchvision_input_spec,
            torchvision_teacher_from_state,
        )

        name = check_torchvision_name(source[12:])
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if state is not None:
            load_weights(model, state, f"{source} weights {weights}", ignore=(classifier_prefix(model) + ".",))
        return torchvision_teacher_from_state(name, model.state_dict(), source=source, tasks=tasks,
                                              one_vs_rest=one_vs_rest,
                                              input_spec=input_spec or torchvision_input_spec(name, image_size))
    raise UnknownNameError(f"--from {source!r}: give timm:<name> or torchvision:<name>")


def head_parameters(teacher: ExternalTeacher) -> list[nn.Parameter]:
    prefix = classifier_prefix(teacher.network) + "."
    return [p for n, p in teacher.network.named_parameters() if n.startswith(prefix)]


def save_fitted_teacher(teacher: ExternalTeacher, folder: Path, extra: dict) -> Path:
    """The teacher folder ``--teacher`` loads: timm's config.json layout + model.safetensors."""
    spec: InputSpec = teacher.input_spec
    labels = head_labels(teacher.tasks, teacher.one_vs_rest)
    architecture = teacher.architecture
    config = TeacherFolderConfig(architecture=architecture, num_classes=len(labels), input_spec=spec,
                                 label_names=labels, extra={"source": teacher.source,
                                                            "tasks": [t.to_dict() for t in teacher.tasks],
                                                            "one_vs_rest": teacher.one_vs_rest, **extra})
    with torch.no_grad():
        return save_teacher_folder(teacher.network, folder, config)
