"""A pretrained trunk with a new head for your classes: the first step when the teacher's head does not
match your labels (an ImageNet model and your 7 classes). ``train/train_teacher.py --from`` trains the head
(a linear probe) or everything (``--finetune``), and saves a teacher folder that ``--teacher`` then loads.
The new head itself is made by the teacher's source (``TeacherSource.with_new_head``, ``teachers/sources.py``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kf_model.data.specs import InputSpec
from kf_model.errors import UnknownNameError
from kf_model.teachers.base import ExternalTeacher, head_labels
from kf_model.teachers.folder import TeacherFolderConfig, save_teacher_folder


def classifier_prefix(model: nn.Module) -> str:
    """The name of the final classifier module (timm says it; torchvision: the last Linear)."""
    if hasattr(model, "pretrained_cfg") and model.pretrained_cfg.get("classifier"):
        return str(model.pretrained_cfg["classifier"])
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UnknownNameError(f"{type(model).__name__} has no Linear classifier to replace")
    return linears[-1]


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
                                                            "one_vs_rest": teacher.one_vs_rest, **extra},
                                 img_size=getattr(teacher, "img_size", None))  # a timm network built for its data
    with torch.no_grad():
        return save_teacher_folder(teacher.network, folder, config)
