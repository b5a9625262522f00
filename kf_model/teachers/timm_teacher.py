"""timm classifiers as teachers: ``timm:<name>`` + a safetensors file, a timm folder, or ``hf-hub:<org>/<repo>``.

Stage features come from timm's own feature API (``forward_intermediates``; channels from ``feature_info``),
input size and normalisation from the model's ``pretrained_cfg``. Only ``config.json`` and
``model.safetensors`` are ever downloaded from a Hub repo, and nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import CorruptWeightsError, UnknownNameError
from kf_model.hub_files import hub_errors
from kf_model.limits import check_parameter_count
from kf_model.models.timm_names import check_timm_name, stage_widths
from kf_model.teachers.base import ExternalTeacher, check_head
from kf_model.teachers.folder import CONFIG_FILE, WEIGHTS_FILE, TeacherFolderConfig
from kf_model.teachers.weights import head_size, load_weights, read_state_dict, stored_shape


def create_timm_model(name: str, num_classes: int, in_chans: int, label: str) -> nn.Module:
    """Random-init timm model, its size checked on the meta device first."""
    import timm

    name = check_timm_name(name)
    with torch.device("meta"):
        check_parameter_count(timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans),
                              label)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def weights_in_chans(name: str, weights: str | Path | None) -> int:
    """Input channels of a timm architecture as the weights file has them (its first conv), else RGB."""
    if weights is None or Path(weights).suffix != ".safetensors":
        return 3
    import timm

    with torch.device("meta"):
        first_conv = timm.create_model(check_timm_name(name), pretrained=False).pretrained_cfg.get("first_conv")
    shape = stored_shape(weights, f"{first_conv}.weight") if isinstance(first_conv, str) else None
    return shape[1] if shape and len(shape) == 4 else 3


def timm_input_spec(model: nn.Module, in_chans: int, image_size: int | None) -> InputSpec:
    cfg = model.pretrained_cfg
    mean, std = list(cfg.get("mean", (0.0,))), list(cfg.get("std", (1.0,)))
    if in_chans == 1 and len(mean) == 3:  # a grey variant of an RGB architecture: the mean of the constants
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    return InputSpec(channels=in_chans, size=image_size or int(cfg.get("input_size", (3, 224, 224))[-1]),
                     mean=mean, std=std)


class TimmTeacher(ExternalTeacher):
    def stages_and_logits(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        final, stages = self.model.forward_intermediates(x, indices=3)
        return list(stages), self.model.forward_head(final)


def timm_teacher(name: str, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                 image_size: int | None = None) -> TimmTeacher:
    """``timm:<name>`` with ``--teacher-weights FILE.safetensors`` (required: no weights are downloaded)."""
    source = f"timm:{name}"
    if weights is None:
        raise UnknownNameError(f"{source} needs --teacher-weights FILE.safetensors (kf downloads no weights); "
                               "a Hub repo of timm weights loads as hf-hub:<org>/<repo>")
    state = read_state_dict(weights)
    in_chans = weights_in_chans(name, weights)
    head = head_size(state)
    num_classes = head if head is not None else (len(tasks) if one_vs_rest else tasks[0].num_classes)
    check_head(num_classes, tasks, one_vs_rest, source)
    model = create_timm_model(name, num_classes, in_chans, source)
    load_weights(model, state, f"{source}: {weights}")
    return TimmTeacher(model.eval(), source=source, architecture=check_timm_name(name),
                       input_spec=timm_input_spec(model, in_chans, image_size), tasks=tasks, one_vs_rest=one_vs_rest,
                       feature_widths=stage_widths(model))


def folder_teacher(folder: Path, *, tasks: list[TaskSpec], one_vs_rest: bool, source: str | None = None
                   ) -> ExternalTeacher:
    """A folder with timm's ``config.json`` + ``model.safetensors`` (timm or ``torchvision:`` architecture)."""
    config = TeacherFolderConfig.read(folder)
    source = source or str(folder)
    check_head(config.num_classes, tasks, one_vs_rest, source, config.label_names)
    state = read_state_dict(folder / WEIGHTS_FILE, f"teacher {source}")
    spec = config.input_spec
    if config.architecture.startswith("torchvision:"):
        from kf_model.teachers.torchvision_teacher import torchvision_teacher_from_state

        return torchvision_teacher_from_state(config.architecture.split(":", 1)[1], state, source=source,
                                              tasks=tasks, one_vs_rest=one_vs_rest, input_spec=spec)
    model = create_timm_model(config.architecture, config.num_classes, spec.channels, source)
    load_weights(model, state, f"teacher {source}: {WEIGHTS_FILE}")
    return TimmTeacher(model.eval(), source=source, architecture=check_timm_name(config.architecture),
                       input_spec=spec, tasks=tasks, one_vs_rest=one_vs_rest, feature_widths=stage_widths(model))


def fetch_hub_teacher(spec: str, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """``<org>/<repo>[@revision]`` -> the local folder holding its config.json (and model.safetensors)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = spec.partition("@")
    revision = revision or None
    with hub_errors(spec, revision):
        try:
            config = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, token=token))
            if weights:
                hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision, token=token)
        except EntryNotFoundError as error:
            if isinstance(error, LocalEntryNotFoundError):
                raise
            raise CorruptWeightsError(f"hf-hub:{spec} has no {CONFIG_FILE} + {WEIGHTS_FILE} (kf loads timm's "
                                      "safetensors layout only, never pickled weights)") from None
    return config.parent


def hub_teacher(spec: str, *, tasks: list[TaskSpec], one_vs_rest: bool, token: str | bool | None = None
                ) -> ExternalTeacher:
    """``hf-hub:<org>/<repo>[@revision]``: only config.json and model.safetensors are fetched."""
    return folder_teacher(fetch_hub_teacher(spec, token=token), tasks=tasks, one_vs_rest=one_vs_rest,
                          source=f"hf-hub:{spec}")
