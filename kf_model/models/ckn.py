"""The Common Knowledge Network: the task-agnostic trunk every factor shares."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from kf_model.models.backbones import build_backbone
from kf_model.models.hub import HUB_KWARGS, SafetensorsOnlyMixin
from kf_model.models.layers import global_pool


class CKNOutput(NamedTuple):
    z: Tensor  # [B, C]: the common feature z_c
    features: list[Tensor]  # pooled features of the last 3 stages (InfoMax targets)


class CommonKnowledgeNetwork(nn.Module, SafetensorsOnlyMixin, **HUB_KWARGS):
    """The task-agnostic network that every factor shares; run once per image when assembled."""

    def __init__(self, backbone: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone)

    @property
    def width(self) -> int:
        return self.backbone.stage_channels[-1]

    @property
    def feature_widths(self) -> list[int]:
        return list(self.backbone.stage_channels)

    def forward(self, x: Tensor) -> CKNOutput:
        features = [global_pool(m) for m in self.backbone(x)]
        return CKNOutput(features[-1], features)

    def common_feature(self, x: Tensor) -> Tensor:
        """``forward(x).z`` alone: the last stage pooled, the other two not (an assembled network's inference)."""
        return global_pool(self.backbone(x)[-1])
