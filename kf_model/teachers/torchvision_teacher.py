"""torchvision classifiers as teachers: ``torchvision:<name>`` + a safetensors file.

torchvision has no stage API, so its feature extractor (``create_feature_extractor``, torch.fx) reads the
stage outputs. Which graph nodes those are is discovered, not typed: one traced pass at the weights' own
input size, and the last node at each spatial resolution before the global pool ends a stage; the last
three stages are distilled. Input size and normalisation come from the weights' metadata (ImageNet: 224 px).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import Tensor, nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import UnknownNameError
from kf_model.limits import check_parameter_count
from kf_model.teachers.base import ExternalTeacher, check_head
from kf_model.teachers.weights import head_size, load_weights, read_state_dict

GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
PROBE_SIZE = 96  # the discovery pass: stride-32 nets still end at 3x3, and it costs a fraction of 224 px


def check_torchvision_name(name: str) -> str:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown torchvision classification model {name!r}{hint}")
    return name


def torchvision_input_spec(name: str, image_size: int | None) -> InputSpec:
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        size, mean, std = transforms.crop_size[0], list(transforms.mean), list(transforms.std)
    except (ValueError, AttributeError, IndexError):  # no published weights: ImageNet's constants
        size, mean, std = 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return InputSpec(channels=3, size=image_size or size, mean=mean, std=std)


def stage_modules(model: nn.Module, size: int) -> list[str]:
    """The modules ending the last 3 stages, found in one pass on zeros.

    A stage ends where the resolution drops: at each resolution, the shallowest module (``layer2`` rather than
    ``layer2.1.conv2``; in branchy nets, rather than the next block's first conv) that completes last there.
    The model's own global pool ends the search; 1x1 maps (squeeze-excitation) and channels-last permutes
    (ConvNeXt) are not feature maps and are ignored.
    """
    records: list[tuple[str, tuple[int, int]]] = []
    stop = []

    def hook(name: str, module: nn.Module):
        def record(_module, _inputs, output) -> None:
            if stop:
                return
            if "." not in name and isinstance(module, GLOBAL_POOLS):
                stop.append(name)
            elif isinstance(output, Tensor) and output.ndim == 4:
                height, width = output.shape[2:]
                if height == width > 1:  # square input, so NCHW maps are square: skips NHWC permutes and 1x1
                    records.append((name, (height, width)))
        return record

    handles = [m.register_forward_hook(hook(n, m)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    resolutions = list(dict.fromkeys(r for _, r in records))
    if len(resolutions) < 3:
        raise UnknownNameError(f"{type(model).__name__} shows fewer than 3 feature resolutions to distil (not a "
                               "convolutional network?); timm models serve every architecture through "
                               "forward_intermediates")
    stages = []
    for resolution in resolutions[-3:]:
        names = [n for n, r in records if r == resolution]
        depth = min(n.count(".") for n in names)
        stages.append([n for n in names if n.count(".") == depth][-1])
    return stages


class TorchvisionTeacher(ExternalTeacher):
    def __init__(self, model: nn.Module, *, stages: list[str], **kwargs) -> None:
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        _, nodes = get_graph_node_names(model)
        extractor = create_feature_extractor(model, return_nodes={**{n: f"stage{i}" for i, n in enumerate(stages)},
                                                                  nodes[-1]: "logits"})
        super().__init__(extractor, **kwargs)
        self.__dict__["network"] = model  # the original module: its state dict is what a teacher folder saves
        self.stage_names = stages

    def stages_and_logits(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        out = self.model(x)
        return [out[f"stage{i}"] for i in range(3)], out["logits"]


def torchvision_teacher_from_state(name: str, state: dict[str, Tensor], *, source: str, tasks: list[TaskSpec],
                                   one_vs_rest: bool, input_spec: InputSpec) -> TorchvisionTeacher:
    import torchvision

    name = check_torchvision_name(name)
    num_classes = head_size(state) or (len(tasks) if one_vs_rest else tasks[0].num_classes)
    check_head(num_classes, tasks, one_vs_rest, source)
    with torch.device("meta"):
        check_parameter_count(torchvision.models.get_model(name, weights=None, num_classes=num_classes), source)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    load_weights(model, state, f"{source} weights")
    model.eval()
    stages = stage_modules(model, PROBE_SIZE)
    teacher = TorchvisionTeacher(model, stages=stages, source=source, architecture=f"torchvision:{name}",
                                 input_spec=input_spec, tasks=tasks, one_vs_rest=one_vs_rest, feature_widths=[])
    with torch.no_grad():
        maps, _ = teacher.stages_and_logits(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    teacher._feature_widths = [int(m.shape[1]) for m in maps]
    return teacher


def torchvision_teacher(name: str, *, weights: str | Path | None, tasks: list[TaskSpec], one_vs_rest: bool,
                        image_size: int | None = None) -> TorchvisionTeacher:
    """``torchvision:<name>`` with ``--teacher-weights FILE.safetensors``."""
    source = f"torchvision:{name}"
    if weights is None:
        raise UnknownNameError(f"{source} needs --teacher-weights FILE.safetensors (kf downloads no weights)")
    state = read_state_dict(weights)
    return torchvision_teacher_from_state(name, state, source=source, tasks=tasks, one_vs_rest=one_vs_rest,
                                          input_spec=torchvision_input_spec(check_torchvision_name(name), image_size))
