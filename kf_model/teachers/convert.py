"""Convert a *trusted* plain state-dict checkpoint (``.pth``) into a teacher folder kf loads: safetensors + timm's
``config.json`` for a named timm architecture (``python -m kf_model.teachers convert``).

This is the one place in kf that unpickles, and only on this explicit request, with torch's loader in its
``weights_only=True`` mode (tensors and containers only, no code). Keys are mapped by name when they are the
architecture's own, else by order, with every shape checked; the input normalisation the weights expect is
recorded in the config and, given an image whose class is known, checked: a wrong mean/std usually still gives
a confident answer, only a known image tells. Runtime loading stays safetensors-only (``folder_teacher``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kf_model.data.specs import InputSpec
from kf_model.errors import CorruptWeightsError, InvalidArgumentError, KFError
from kf_model.limits import MAX_CLASSES
from kf_model.teachers.folder import TeacherFolderConfig, save_teacher_folder
from kf_model.teachers.weights import WeightsMismatchError

MAPPINGS = ("auto", "name", "order")
MAX_CHECKPOINT_BYTES = 2 * 1024**3


class ClassCheckError(KFError):
    """The converted network does not call the check image what the user said it is."""


@dataclass(frozen=True)
class ClassCheck:
    image: Path
    expected: int


def _reason(error: Exception) -> str:
    """What went wrong, in a line: torch's weights-only refusal runs to a page of advice, the gist of which
    (``weights_only=False``: run the file's code) kf never takes; its one useful line names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not any("weights_only" in line for line in lines):
        return (lines[0][:200] if lines else type(error).__name__)
    detail = next((line for line in lines if line.startswith("Unsupported") or "Unsupported global" in line), "")
    if detail.startswith("Unsupported operand") or not detail:  # not a pickle torch can read at all
        return "not a torch checkpoint (the file is damaged or of another format)"
    return f"it holds more than tensors and plain containers, and kf never runs a checkpoint's code ({detail[:120]})"


def read_trusted_checkpoint(path: Path) -> dict[str, Tensor]:
    """The tensors of a pickled state dict the user vouches for (``weights_only=True``: no code runs)."""
    if path.is_dir():
        raise CorruptWeightsError(f"checkpoint {path} is a folder: give the .pth/.pt file itself")
    if not path.is_file():
        raise CorruptWeightsError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CorruptWeightsError(f"checkpoint {path} is empty (0 bytes)")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CorruptWeightsError(f"checkpoint {path} is over {MAX_CHECKPOINT_BYTES >> 30} GiB; kf converts "
                                  "classifier checkpoints only")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle's and torch's many error types: say which file and why
        raise CorruptWeightsError(f"cannot read checkpoint {path} as a weights-only state dict: "
                                  f"{_reason(error)}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CorruptWeightsError(f"checkpoint {path} is not a state dict of tensors")
    return {str(k): v for k, v in state.items()}


def map_state_dict(source: dict[str, Tensor], target: dict[str, Tensor], mapping: str = "auto"
                   ) -> tuple[dict[str, Tensor], str]:
    """``source``'s tensors under ``target``'s names: by name (the same key set) or by order (the same count
    and, position by position, the same shape). Returns (mapped state dict, the mapping used)."""
    if mapping not in MAPPINGS:
        raise InvalidArgumentError(f"--map must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
    if mapping in ("auto", "name") and set(source) == set(target):
        _check_shapes([(k, source[k], k, target[k]) for k in target])
        return {k: source[k] for k in target}, "name"
    if mapping == "name":
        missing = sorted(set(target) - set(source))[:3]
        raise WeightsMismatchError(f"the checkpoint's keys are not the architecture's (missing e.g. {missing}); "
                                   "try --map order")
    if len(source) != len(target):
        raise WeightsMismatchError(f"the checkpoint holds {len(source)} tensors, the architecture {len(target)}: "
                                   "they cannot be mapped by order")
    pairs = [(sk, sv, tk, tv) for (sk, sv), (tk, tv) in zip(source.items(), target.items())]
    _check_shapes(pairs)
    return {tk: sv for sk, sv, tk, tv in pairs}, "order"


def _check_shapes(pairs: Sequence[tuple[str, Tensor, str, Tensor]]) -> None:
    wrong = [f"#{i} {sk} {list(sv.shape)} -> {tk} {list(tv.shape)}"
             for i, (sk, sv, tk, tv) in enumerate(pairs) if sv.shape != tv.shape]
    if wrong:
        raise WeightsMismatchError(f"{len(wrong)} tensors differ in shape, e.g. {'; '.join(wrong[:3])}")


def center_crop_tensor(image_path: Path, size: int, crop_pct: float = 0.875) -> Tensor:
    """[1, 3, size, size] in [0, 1]: resize the short side to size / crop_pct, centre crop (timm's eval view)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InvalidArgumentError(f"--check-image {image_path}: cannot read it as an image ({error})") from None
    scale = size / crop_pct / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         resample=3)  # bicubic, as timm's eval transform
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(
        2, 0, 1).unsqueeze(0).float() / 255


def normalised_probabilities(model: nn.Module, images: Tensor, spec: InputSpec) -> Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model.eval()((images - mean) / std).softmax(dim=1)


def check_class(model: nn.Module, spec: InputSpec, check: ClassCheck, label_names: list[str] | None
                ) -> dict[str, Any]:
    """Refuse a conversion whose network does not put ``check.image`` in class ``check.expected``."""
    probabilities = normalised_probabilities(model, center_crop_tensor(check.image, spec.size), spec)[0]
    top = probabilities.topk(5)
    answers = [f"{int(i)} {label_names[int(i)] if label_names else int(i)} ({float(p):.2f})"
               for p, i in zip(top.values, top.indices)]
    if int(top.indices[0]) != check.expected:
        raise ClassCheckError(f"the converted network calls {check.image.name} {answers[0]}, not class "
                              f"{check.expected}; top 5: {', '.join(answers)}. Check --mean/--std (TF-ported "
                              "weights often expect 0.5/0.5) and --map")
    return {"image": check.image.name, "expected_class": check.expected, "top5": answers,
            "probability": round(float(top.values[0]), 4)}


def imagenet_label_names(num_classes: int) -> list[str] | None:
    """timm's ImageNet-1k class descriptions (offline, shipped with timm), for a 1,000-class head."""
    if num_classes != 1000:
        return None
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(num_classes)]


def convert_checkpoint(checkpoint: Path, architecture: str, out: Path, *, mean: Sequence[float],
                       std: Sequence[float], image_size: int = 224, num_classes: int = 1000, mapping: str = "auto",
                       check: ClassCheck | None = None) -> TeacherFolderConfig:
    """Write ``out/model.safetensors`` + ``out/config.json`` from a trusted ``.pth`` (see the module doc)."""
    from kf_model.teachers.timm_teacher import check_timm_name, create_timm_model

    if not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidArgumentError(f"--num-classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    architecture = check_timm_name(architecture)
    spec = InputSpec(channels=3, size=image_size, mean=tuple(mean), std=tuple(std))
    source = read_trusted_checkpoint(checkpoint)
    model = create_timm_model(architecture, num_classes, 3, f"timm:{architecture}")
    mapped, used = map_state_dict(source, model.state_dict(), mapping)
    model.load_state_dict(mapped, strict=True)
    labels = imagenet_label_names(num_classes)
    extra: dict[str, Any] = {"converted_from": checkpoint.name, "mapping": used,
                             "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    if check is not None:
        extra["class_check"] = check_class(model, spec, check, labels)
    config = TeacherFolderConfig(architecture=architecture, num_classes=num_classes, input_spec=spec,
                                 label_names=labels, extra=extra)
    save_teacher_folder(model, out, config)
    return config
