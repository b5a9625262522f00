"""The Task-Specific Network: a small encoder whose feature is added to the CKN's, plus its heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    InvalidConfigError,
)
from kf_model.limits import (
    MAX_CHANNELS,
    MAX_ENCODER_LAYERS,
    MAX_STRIDE,
    MAX_WIDTH,
    check_bool,
    check_int,
    check_int_list,
    check_normalisation,
    check_text,
)
from kf_model.models.hub import HUB_KWARGS, SafetensorsOnlyMixin
from kf_model.models.layers import InputAdapter, _config_object, conv_bn_relu, global_pool


@dataclass
class EncoderConfig:
    """Architecture of a TSN encoder: plain conv-BN-ReLU stages, so that k of them stack as groups."""

    in_channels: int = 1
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    coord_channels: bool = False
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        check_int("encoder.in_channels", self.in_channels, 1, MAX_CHANNELS)
        self.widths = check_int_list("encoder.widths", self.widths, 1, MAX_WIDTH, MAX_ENCODER_LAYERS)
        self.strides = check_int_list("encoder.strides", self.strides, 1, MAX_STRIDE, MAX_ENCODER_LAYERS)
        if len(self.widths) != len(self.strides):
            raise InvalidConfigError(f"encoder.widths {self.widths} and encoder.strides {self.strides} need the "
                                     "same length")
        check_bool("encoder.coord_channels", self.coord_channels)
        self.mean = check_normalisation("encoder.mean", self.mean, self.in_channels, positive=False)
        self.std = check_normalisation("encoder.std", self.std, self.in_channels, positive=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | EncoderConfig) -> EncoderConfig:
        return data if isinstance(data, EncoderConfig) else cls(**_config_object("encoder", data))


class GroupedEncoder(nn.Module):
    """``groups`` independent TSN encoders computed as one network.

    The first conv reads the shared input, so stacking k of them concatenates their
    filters (output channels are task-major); every later conv uses ``groups=k``; BN is
    per channel anyway. Hence every tensor of k encoders stacks by ``torch.cat(dim=0)``.
    """

    def __init__(self, cfg: EncoderConfig, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups
        self.adapter = InputAdapter(cfg.in_channels, cfg.mean, cfg.std, cfg.coord_channels)
        layers, in_ch = [], self.adapter.out_channels
        for i, (width, stride) in enumerate(zip(cfg.widths, cfg.strides, strict=True)):
            layers.append(conv_bn_relu(in_ch * (groups if i else 1), width * groups, stride, groups if i else 1))
            in_ch = width
        self.layers = nn.Sequential(*layers)
        self.width = cfg.widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, groups, width] pooled features."""
        return global_pool(self.layers(self.adapter(x))).view(x.shape[0], self.groups, self.width)


class TSNOutput(NamedTuple):
    logits: Tensor  # head(z_c + z_i)
    aux_logits: Tensor  # aux_head(z_i): trains the TSN to carry its task on its own
    z: Tensor  # [B, C] task feature z_i (a sample in variational training mode, else mu)
    mu: Tensor | None
    logvar: Tensor | None


class TaskSpecificNetwork(nn.Module, SafetensorsOnlyMixin, **HUB_KWARGS):
    """A small encoder for one task whose feature is added to the CKN's, plus that task's heads.

    ``ckn_fingerprint`` records which CKN this TSN was trained with: a bank refuses to
    combine it with another one.
    """

    def __init__(self, task: dict[str, Any], encoder: dict[str, Any], ckn_width: int,
                 ckn_fingerprint: str = "", variational: bool = False) -> None:
        super().__init__()
        self.task = TaskSpec.from_dict(task)
        self.encoder_config = EncoderConfig.from_dict(encoder)
        self.ckn_width = check_int("ckn_width", ckn_width, 1, MAX_WIDTH)
        self.ckn_fingerprint = check_text("ckn_fingerprint", ckn_fingerprint, 64)
        self.variational = check_bool("variational", variational)
        self.encoder = GroupedEncoder(self.encoder_config, groups=1)
        out = 2 * ckn_width if variational else ckn_width
        self.proj = nn.Linear(self.encoder.width, out, bias=False)  # W_i: bias-free, to the CKN width
        self.head = nn.Linear(ckn_width, self.task.num_classes)
        self.aux_head = nn.Linear(ckn_width, self.task.num_classes)

    def forward(self, x: Tensor, z_common: Tensor) -> TSNOutput:
        projected = self.proj(self.encoder(x)[:, 0])
        z, mu, logvar = split_variational(projected, self.variational, self.training)
        return TSNOutput(self.head(z_common + z), self.aux_head(z), z, mu, logvar)


def split_variational(projected: Tensor, variational: bool, training: bool
                      ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Deterministic TSN: z is the projection. Variational: (mu, logvar) halves, sampled in training."""
    if not variational:
        return projected, None, None
    mu, logvar = projected.chunk(2, dim=-1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if training else mu
    return z, mu, logvar
