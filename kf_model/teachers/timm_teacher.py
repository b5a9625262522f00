"""timm classifiers as teachers: ``timm:<name>`` + a safetensors file, a timm folder, or ``hf-hub:<org>/<repo>``.

Stage features come from timm's own feature API (``forward_intermediates``; channels from ``feature_info``),
input size and normalisation from the model's ``pretrained_cfg``. Only ``config.json`` and
``model.safetensors`` are ever downloaded from a Hub repo, and nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import CorruptWeightsError, InvalidConfigError, UnknownNameError
from kf_model.hub_files import check_revision, hub_errors, unreachable_reason
from kf_model.limits import check_parameter_count
from kf_model.models.timm_names import check_timm_name, stage_widths
from kf_model.teachers.base import ExternalTeacher, check_head
from kf_model.teachers.folder import CONFIG_FILE, WEIGHTS_FILE, TeacherFolderConfig
from kf_model.teachers.weights import head_size, load_weights, read_state_dict, stored_shape


def create_timm_model(name: str, num_classes: int, in_chans: int, label: str, *, img_size: int | None = None,
                      input_size: int | None = None) -> nn.Module:
    """Random-init timm model, its size checked on the meta device first. ``img_size``: build it for that many
    pixels (an architecture with layers sized for its input: a ViT's position table, a MaxViT's windows);
    ``input_size``: the images it will take, checked by a pass on the meta device (no compute), so that a size it
    cannot take is refused in words before any training."""
    import timm

    name = check_timm_name(name)
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    if img_size is not None:
        kwargs["img_size"] = img_size
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
        check_parameter_count(model, label)
        if input_size is not None:
            check_input_size(model.eval(), in_chans, input_size, label)
    return timm.create_model(name, **kwargs)


def check_input_size(model: nn.Module, in_chans: int, size: int, label: str) -> None:
    """One pass of a ``size``-px image through ``model`` (on the meta device); refuses in words a size it cannot
    take (a ViT built for 160 px, patches that do not divide the image, windows that do not fit)."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size, device="meta"))
    except NotImplementedError:  # an operation with no meta kernel: nothing to learn here, the real pass will tell
        return
    except (AssertionError, RuntimeError, ValueError) as error:
        reason = str(error).strip().rstrip(".")[:200]
        raise InvalidConfigError(f"{label} cannot take {size}-px images ({reason}); choose another --image-size"
                                 ) from None


def sized_build(name: str, in_chans: int, image_size: int | None) -> int | None:
    """The ``img_size`` to build a network trained from scratch on ``image_size``-px images with: that size when
    the architecture has layers sized for its input and its default differs, else None (a CNN takes any size)."""
    if image_size is None:
        return None
    import timm

    with torch.device("meta"):
        model = timm.create_model(check_timm_name(name), pretrained=False, in_chans=in_chans)
    takes_size = "img_size" in inspect.signature(type(model).__init__).parameters
    return image_size if takes_size and image_size != default_size(model) else None


def default_size(model: nn.Module) -> int:
    return int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


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
    return InputSpec(channels=in_chans, size=image_size or default_size(model), mean=mean, std=std)


class TimmTeacher(ExternalTeacher):
    img_size: int | None = None  # the size the network was built for, when not its architecture's default

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
    model = create_timm_model(name, num_classes, in_chans, source, input_size=image_size)
    load_weights(model, state, f"{source}: {weights}")
    return TimmTeacher(model.eval(), source=source, architecture=check_timm_name(name),
                       input_spec=timm_input_spec(model, in_chans, image_size), tasks=tasks, one_vs_rest=one_vs_rest,
                       feature_widths=stage_widths(model))


def resized(spec: InputSpec, image_size: int | None) -> InputSpec:
    """A teacher folder's input at ``--image-size`` when one is given (its normalisation and channels kept)."""
    return spec if image_size is None else dataclasses.replace(spec, size=image_size)


def folder_teacher(folder: Path, *, tasks: list[TaskSpec], one_vs_rest: bool, source: str | None = None,
                   image_size: int | None = None) -> ExternalTeacher:
    """A folder with timm's ``config.json`` + ``model.safetensors`` (timm or ``torchvision:`` architecture), run at
    ``image_size`` when given (else the size its config records): a CNN takes any size, and a network built for
    one size (a ViT's position table) refuses another in words."""
    config = TeacherFolderConfig.read(folder)
    source = source or str(folder)
    check_head(config.num_classes, tasks, one_vs_rest, source, config.label_names)
    state = read_state_dict(folder / WEIGHTS_FILE, f"teacher {source}")
    spec = resized(config.input_spec, image_size)
    if config.architecture.startswith("torchvision:"):
        from kf_model.teachers.torchvision_teacher import torchvision_teacher_from_state

        return torchvision_teacher_from_state(config.architecture.split(":", 1)[1], state, source=source,
                                              tasks=tasks, one_vs_rest=one_vs_rest, input_spec=spec)
    model = create_timm_model(config.architecture, config.num_classes, spec.channels, source,
                              img_size=config.img_size, input_size=spec.size)
    load_weights(model, state, f"teacher {source}: {WEIGHTS_FILE}")
    teacher = TimmTeacher(model.eval(), source=source, architecture=check_timm_name(config.architecture),
                          input_spec=spec, tasks=tasks, one_vs_rest=one_vs_rest, feature_widths=stage_widths(model))
    teacher.img_size = config.img_size
    return teacher


def fetch_hub_teacher(spec: str, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """``<org>/<repo>[@revision]`` -> the local folder holding its config.json (and model.safetensors)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = spec.partition("@")
    revision = check_revision(revision) if revision else None
    offline_reason = unreachable_reason(spec, repo_id, revision, token)
    cached = offline_reason is not None  # unreachable: the local cache may still hold it
    with hub_errors(spec, revision, offline_reason):
        try:
            config = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, token=token,
                                          local_files_only=cached))
            if weights:
                hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision, token=token, local_files_only=cached)
        except EntryNotFoundError as error:
            if isinstance(error, LocalEntryNotFoundError):
                raise
            raise CorruptWeightsError(f"hf-hub:{spec} has no {CONFIG_FILE} + {WEIGHTS_FILE} (kf loads timm's "
                                      "safetensors layout only, never pickled weights)") from None
    return config.parent


def hub_teacher(spec: str, *, tasks: list[TaskSpec], one_vs_rest: bool, token: str | bool | None = None,
                image_size: int | None = None) -> ExternalTeacher:
    """``hf-hub:<org>/<repo>[@revision]``: only config.json and model.safetensors are fetched."""
    return folder_teacher(fetch_hub_teacher(spec, token=token), tasks=tasks, one_vs_rest=one_vs_rest,
                          source=f"hf-hub:{spec}", image_size=image_size)
