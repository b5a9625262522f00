"""A teacher saved as a folder: ``config.json`` (timm's Hub format) + ``model.safetensors``.

timm's own ``push_to_hub`` writes this layout, and kf writes it for heads it fits on your data
(``train/train_teacher.py --from ...``), so a teacher from either side loads the same way. torchvision
architectures use the same file with ``"architecture": "torchvision:<name>"``. Everything in the config is data
and is checked before a network is built: the architecture must be a registered name (no downloads, no code),
only ``in_chans`` is taken from ``model_args``, sizes and normalisation are bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from kf_model.data.specs import InputSpec
from kf_model.errors import CorruptWeightsError, InvalidConfigError
from kf_model.limits import MAX_CLASSES, MAX_INPUT_SIZE, check_int, check_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class TeacherFolderConfig:
    """The fields kf reads from a teacher folder's ``config.json``."""

    architecture: str  # "resnet18" (timm) or "torchvision:resnet18"
    num_classes: int
    input_spec: InputSpec
    label_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kf's own notes (tasks, task mode, training source)
    img_size: int | None = None  # model_args.img_size: the network was built for this size (a ViT from scratch)

    @classmethod
    def read(cls, folder: Path) -> TeacherFolderConfig:
        path = folder / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorruptWeightsError(f"cannot read the teacher config {path}: {error}") from error
        if not isinstance(data, dict):
            raise CorruptWeightsError(f"{path} holds a JSON {type(data).__name__}, not an object")
        try:
            return cls.from_dict(data)
        except InvalidConfigError as error:
            raise type(error)(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherFolderConfig:
        architecture = check_text("architecture", data.get("architecture"), 100)
        num_classes = check_int("num_classes", data.get("num_classes"), 1, MAX_CLASSES)
        cfg = data.get("pretrained_cfg") or {}
        model_args = data.get("model_args") or {}
        if not isinstance(cfg, dict) or not isinstance(model_args, dict):
            raise InvalidConfigError("pretrained_cfg and model_args must be JSON objects")
        unknown = sorted(set(model_args) - {"in_chans", "img_size"})
        if unknown:
            raise InvalidConfigError(f"model_args {unknown[:5]} are not supported (kf only reads in_chans and "
                                     "img_size): an architecture is chosen by its registered name, not by arbitrary "
                                     "arguments")
        img_size = model_args.get("img_size")
        if img_size is not None:
            img_size = check_int("model_args.img_size", img_size, 1, MAX_INPUT_SIZE)
        input_size = cfg.get("input_size", [model_args.get("in_chans", 3), 224, 224])
        if not isinstance(input_size, list | tuple) or len(input_size) != 3:
            raise InvalidConfigError(f"pretrained_cfg.input_size must be [channels, height, width], got {input_size}")
        channels = model_args.get("in_chans", input_size[0])
        spec = InputSpec(channels=channels, size=input_size[-1], mean=_per_channel(cfg.get("mean", [0.0]), channels),
                         std=_per_channel(cfg.get("std", [1.0]), channels))
        labels = data.get("label_names")
        if labels is not None and (not isinstance(labels, list) or len(labels) != num_classes
                                   or not all(isinstance(x, str) for x in labels)):
            raise InvalidConfigError(f"label_names must be a list of {num_classes} strings")
        extra = data.get("kf") or {}
        if not isinstance(extra, dict):
            raise InvalidConfigError("'kf' must be a JSON object")
        return cls(architecture, num_classes, spec, labels, extra, img_size)

    def to_dict(self) -> dict[str, Any]:
        spec = self.input_spec
        return {"architecture": self.architecture, "num_classes": self.num_classes,
                "model_args": {"in_chans": spec.channels, **({"img_size": self.img_size} if self.img_size else {})},
                "pretrained_cfg": {"input_size": [spec.channels, spec.size, spec.size], "mean": list(spec.mean),
                                   "std": list(spec.std)},
                **({"label_names": self.label_names} if self.label_names else {}), "kf": self.extra}


def _per_channel(values: Any, channels: int) -> list[float]:
    """timm configs give 3 values for RGB; a grey (in_chans=1) model keeps their mean."""
    if isinstance(values, list | tuple) and len(values) not in (1, channels) and channels == 1 and values:
        return [sum(values) / len(values)]
    return list(values) if isinstance(values, list | tuple) else values


def save_teacher_folder(model: nn.Module, folder: Path, config: TeacherFolderConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}  # clone: no shared storage
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return folder
