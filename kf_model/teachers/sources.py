"""One registry of teacher sources: ``--teacher`` / ``--from`` is parsed once into a :class:`TeacherSource` that
knows what its teacher takes (input spec, from its config alone), how to build it, and how to give it a new head.

Adding a source is one subclass of :class:`TeacherSource` with its ``prefix`` and ``form``, listed in
:data:`SOURCES` (as timm parses a model name once and looks it up in a registry). A name without a known prefix
is a folder (:class:`FolderSource`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import UnknownNameError
from kf_model.models import Teacher
from kf_model.models.files import load_module
from kf_model.models.timm_names import check_timm_name, stage_widths
from kf_model.teachers.base import ExternalTeacher, TeacherMismatchError, head_labels
from kf_model.teachers.folder import CONFIG_FILE, TeacherFolderConfig
from kf_model.teachers.heads import classifier_prefix
from kf_model.teachers.timm_teacher import (
    TimmTeacher,
    create_timm_model,
    fetch_hub_teacher,
    folder_teacher,
    hub_teacher,
    resized,
    sized_build,
    timm_input_spec,
    timm_teacher,
    weights_in_chans,
)
from kf_model.teachers.torchvision_teacher import (
    check_torchvision_name,
    torchvision_input_spec,
    torchvision_teacher,
    torchvision_teacher_from_state,
)
from kf_model.teachers.weights import load_weights, read_state_dict


class TeacherSource:
    """A parsed teacher name: ``prefix`` + ``name`` (the rest). Subclasses say what each step means for them."""

    prefix: ClassVar[str] = ""
    form: ClassVar[str] = ""  # how the name is written, for messages

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"{self.prefix}{self.name}"

    def input_spec(self, *, weights: str | Path | None = None, image_size: int | None = None,
                   token: str | bool | None = None) -> InputSpec | None:
        """What the teacher takes (size, channels, normalisation), before any weights; None: the dataset decides."""
        return None

    def build(self, *, tasks: list[TaskSpec], one_vs_rest: bool, weights: str | Path | None = None,
              image_size: int | None = None, token: str | bool | None = None, some_tasks: bool = False) -> nn.Module:
        raise NotImplementedError

    def with_new_head(self, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                      image_size: int | None = None, input_spec: InputSpec | None = None) -> ExternalTeacher:
        """The architecture with its trunk from ``weights`` (random init without) and a classifier for ``tasks``
        (several labels: one head per task, side by side); ``input_spec`` replaces the architecture's own."""
        raise UnknownNameError(f"--from {self}: give {' or '.join(s.form for s in SOURCES if s.has_new_head)}")

    has_new_head: ClassVar[bool] = False


def _head_size(tasks: list[TaskSpec], one_vs_rest: bool) -> int:
    return len(head_labels(tasks, one_vs_rest))


def _trunk_state(model: nn.Module, weights: str | Path | None, source: TeacherSource) -> None:
    """``weights`` into ``model``, all but its classifier (which is sized for the new tasks)."""
    if weights is not None:
        load_weights(model, read_state_dict(weights), f"{source} weights {weights}",
                     ignore=(classifier_prefix(model) + ".",))


class TimmSource(TeacherSource):
    prefix, form, has_new_head = "timm:", "timm:<name>", True

    def input_spec(self, *, weights=None, image_size=None, token=None) -> InputSpec:
        import timm

        in_chans = weights_in_chans(self.name, weights)
        with torch.device("meta"):
            model = timm.create_model(check_timm_name(self.name), pretrained=False, in_chans=in_chans)
        return timm_input_spec(model, in_chans, image_size)

    def build(self, *, tasks, one_vs_rest, weights=None, image_size=None, token=None, some_tasks=False):
        return timm_teacher(self.name, weights=weights, tasks=tasks, one_vs_rest=one_vs_rest, image_size=image_size)

    def with_new_head(self, *, weights, tasks, one_vs_rest, image_size=None, input_spec=None) -> ExternalTeacher:
        """No weights: the network is built for the images it trains on (a ViT's position table for 32 px, not
        its 160-px default); weights: at their own size (the meta pass refuses a size it cannot take)."""
        in_chans = input_spec.channels if input_spec is not None else weights_in_chans(self.name, weights)
        size = input_spec.size if input_spec is not None else image_size
        img_size = sized_build(self.name, in_chans, size) if weights is None else None
        model = create_timm_model(self.name, _head_size(tasks, one_vs_rest), in_chans, str(self), img_size=img_size,
                                  input_size=size)
        _trunk_state(model, weights, self)
        teacher = TimmTeacher(model, source=str(self), architecture=self.name.split(".")[0],
                              input_spec=input_spec or timm_input_spec(model, in_chans, image_size), tasks=tasks,
                              one_vs_rest=one_vs_rest, feature_widths=stage_widths(model))
        teacher.img_size = img_size
        return teacher


class TorchvisionSource(TeacherSource):
    prefix, form, has_new_head = "torchvision:", "torchvision:<name>", True

    def input_spec(self, *, weights=None, image_size=None, token=None) -> InputSpec:
        return torchvision_input_spec(check_torchvision_name(self.name), image_size)

    def build(self, *, tasks, one_vs_rest, weights=None, image_size=None, token=None, some_tasks=False):
        return torchvision_teacher(self.name, weights=weights, tasks=tasks, one_vs_rest=one_vs_rest,
                                   image_size=image_size)

    def with_new_head(self, *, weights, tasks, one_vs_rest, image_size=None, input_spec=None) -> ExternalTeacher:
        import torchvision

        name = check_torchvision_name(self.name)
        model = torchvision.models.get_model(name, weights=None, num_classes=_head_size(tasks, one_vs_rest))
        _trunk_state(model, weights, self)
        return torchvision_teacher_from_state(name, model.state_dict(), source=str(self), tasks=tasks,
                                              one_vs_rest=one_vs_rest,
                                              input_spec=input_spec or torchvision_input_spec(name, image_size))


class HubSource(TeacherSource):
    prefix, form = "hf-hub:", "hf-hub:<org>/<repo>[@rev]"

    def input_spec(self, *, weights=None, image_size=None, token=None) -> InputSpec:
        config = TeacherFolderConfig.read(fetch_hub_teacher(self.name, token=token, weights=False))
        return resized(config.input_spec, image_size)

    def build(self, *, tasks, one_vs_rest, weights=None, image_size=None, token=None, some_tasks=False):
        return hub_teacher(self.name, tasks=tasks, one_vs_rest=one_vs_rest, token=token, image_size=image_size)


class FolderSource(TeacherSource):
    """A folder: kf's own ``Teacher`` (its config.json has a ``backbone``) or a timm model folder."""

    form = "a teacher folder"

    def is_kf_teacher(self) -> bool:
        """kf's own ``Teacher`` (written by train_teacher.py), not another library's model."""
        return (Path(self.name) / CONFIG_FILE).is_file() and "backbone" in self._keys()

    def _keys(self) -> set[str]:
        try:
            data = json.loads((Path(self.name) / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return set()
        return set(data) if isinstance(data, dict) else set()

    def input_spec(self, *, weights=None, image_size=None, token=None) -> InputSpec | None:
        folder = Path(self.name)
        if (folder / CONFIG_FILE).is_file() and "architecture" in self._keys():
            return resized(TeacherFolderConfig.read(folder).input_spec, image_size)
        return None

    def build(self, *, tasks, one_vs_rest, weights=None, image_size=None, token=None, some_tasks=False):
        folder = Path(self.name)
        if not (folder / CONFIG_FILE).is_file():
            what = f"a folder without {CONFIG_FILE}, not a teacher" if folder.is_dir() else "no such teacher folder"
            raise UnknownNameError(f"--teacher {self.name!r}: {what}; give {SOURCE_FORMS}")
        if self.is_kf_teacher():
            return kf_teacher(folder, tasks, some_tasks)
        return folder_teacher(folder, tasks=tasks, one_vs_rest=one_vs_rest, image_size=image_size)


SOURCES: list[type[TeacherSource]] = [FolderSource, TimmSource, HubSource, TorchvisionSource]
SOURCE_FORMS = ", ".join(s.form for s in SOURCES[:-1]) + f" or {SOURCES[-1].form}"


def parse_source(source: str | Path) -> TeacherSource:
    """The source a teacher name stands for: by its prefix, else a folder."""
    text = str(source)
    for kind in SOURCES:
        if kind.prefix and text.startswith(kind.prefix):
            return kind(text[len(kind.prefix):])
    return FolderSource(text)


def kf_teacher(folder: Path, tasks: list[TaskSpec], some_tasks: bool = False) -> Teacher:
    """A multi-task ``Teacher`` written by ``train_teacher.py`` (kf's own networks)."""
    teacher = load_module(Teacher, folder, f"teacher {folder}")
    names, expected = [t.name for t in teacher.tasks], [t.name for t in tasks]
    if (not set(names) <= set(expected)) if some_tasks else names != expected:
        raise TeacherMismatchError(f"teacher {folder} solves tasks {names[:8]}, but the data has {expected[:8]}")
    return teacher
