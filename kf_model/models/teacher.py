"""kf's own multi-task teacher (and KD student): one backbone, one linear head per task."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    InvalidConfigError,
)
from kf_model.limits import (
    MAX_TASKS,
    check_bool,
)
from kf_model.models.backbones import build_backbone
from kf_model.models.hub import HUB_KWARGS, SafetensorsOnlyMixin
from kf_model.models.layers import global_pool


class TeacherOutput(NamedTuple):
    logits: dict[str, Tensor]  # per task
    features: list[Tensor]  # pooled features of the last 3 stages
    class_logits: Tensor | None  # the K-way logits of a one-vs-rest teacher, else None


def one_vs_rest_logits(class_logits: Tensor) -> Tensor:
    """[B, K] K-way logits -> [B, K, 2] binary logits [log sum_{j != i} e^{t_j}, t_i] per class i.

    Softmax over the pair gives exactly (1 - p_i, p_i) of the K-way softmax.
    """
    k = class_logits.shape[1]
    expanded = class_logits.unsqueeze(1).expand(-1, k, -1)
    eye = torch.eye(k, dtype=torch.bool, device=class_logits.device)
    rest = expanded.masked_fill(eye, float("-inf")).logsumexp(dim=-1)
    return torch.stack([rest, class_logits], dim=-1)


class Teacher(nn.Module, SafetensorsOnlyMixin, **HUB_KWARGS):
    """A multi-task network: one backbone, one linear head per task.

    With ``one_vs_rest=True`` it is a single K-way classifier whose K tasks are read
    as "is it class i?": the paper's setting for CIFAR/ImageNet (and ours for Fashion-MNIST).
    The KD baseline student is the same class with a smaller backbone.
    """

    def __init__(self, backbone: dict[str, Any], tasks: list[dict[str, Any]], one_vs_rest: bool = False) -> None:
        super().__init__()
        if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_TASKS:
            raise InvalidConfigError(f"tasks must be a list of 1 to {MAX_TASKS:,} tasks")
        self.tasks = [TaskSpec.from_dict(t) for t in tasks]
        self.one_vs_rest = check_bool("one_vs_rest", one_vs_rest)
        self.backbone = build_backbone(backbone)
        width = self.backbone.stage_channels[-1]
        if one_vs_rest:
            if any(t.num_classes != 2 for t in self.tasks):
                raise InvalidConfigError("a one-vs-rest teacher needs binary tasks")
            self.class_head = nn.Linear(width, len(self.tasks))
        else:
            self.heads = nn.ModuleDict({t.name: nn.Linear(width, t.num_classes) for t in self.tasks})

    @property
    def feature_widths(self) -> list[int]:
        return list(self.backbone.stage_channels)

    def forward(self, x: Tensor) -> TeacherOutput:
        features = [global_pool(m) for m in self.backbone(x)]
        if self.one_vs_rest:
            class_logits = self.class_head(features[-1])
            binary = one_vs_rest_logits(class_logits)
            logits = {t.name: binary[:, i] for i, t in enumerate(self.tasks)}
            return TeacherOutput(logits, features, class_logits)
        return TeacherOutput({t.name: head(features[-1]) for t, head in zip(self.tasks, self.heads.values())},
                             features, None)
