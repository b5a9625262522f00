"""Freezing the early stages of a timm CKN: they keep the teacher's weights and BatchNorm statistics.

When a CKN starts from the teacher and the distillation images are few, its first stages have nothing to gain
and two things to lose: their BatchNorm statistics drift to a few dozen photographs, and their backward pass at
full resolution is most of a step's cost. Frozen modules stay in eval mode whatever ``train()`` is called with.
"""

from __future__ import annotations

from torch import nn

from kf_model.errors import InvalidArgumentError


def _always_eval(module: nn.Module) -> None:
    def train(mode: bool = True) -> nn.Module:
        return nn.Module.train(module, False)

    module.train = train  # type: ignore[method-assign]  # an instance attribute: nn.Module.train recurses to it
    module.eval()


def early_stage_modules(model: nn.Module, stages: int) -> list[str]:
    """Names of ``model``'s top-level modules and blocks up to the end of its ``stages``-th feature stage
    (timm's ``feature_info``: e.g. conv_stem, bn1, blocks.0, blocks.1 for two stages of an EfficientNet)."""
    info = list(getattr(model, "feature_info", []) or [])
    if not 0 <= stages <= len(info):
        raise InvalidArgumentError(f"--freeze-ckn-stages must be in [0, {len(info)}] for {type(model).__name__}, "
                                   f"got {stages}")
    if stages == 0:
        return []
    last = info[stages - 1]["module"]
    names: list[str] = []
    for name, _ in model.named_modules():
        if not name or "." in name.removeprefix("blocks."):
            continue  # top-level modules and direct blocks only
        names.append(name)
        if name == last:
            return [n for n in names if n != "blocks"]
    raise InvalidArgumentError(f"{type(model).__name__}: stage module {last!r} not found")


def freeze_early_stages(model: nn.Module, stages: int) -> list[str]:
    """Freeze (no gradients, eval mode for good) the modules of the first ``stages`` feature stages."""
    names = early_stage_modules(model, stages)
    modules = dict(model.named_modules())
    for name in names:
        modules[name].requires_grad_(False)
        for sub in modules[name].modules():
            _always_eval(sub)
    return names
