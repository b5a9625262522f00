"""Building blocks every kf network shares: normalisation inside the network, conv-BN-ReLU, pooling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kf_model.errors import (
    InvalidConfigError,
    InvalidImageError,
)


def _config_object(key: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidConfigError(f"{key} must be a JSON object, got {type(data).__name__}")
    return data


class InputAdapter(nn.Module):
    """Normalises [0,1] images inside the network and optionally appends coordinate maps.

    Doing it here (not in a data pipeline) leaves one preprocessing path for training,
    the app and users: resize + scale to [0,1].
    """

    def __init__(self, in_channels: int, mean: list[float], std: list[float], coord_channels: bool) -> None:
        super().__init__()
        if len(mean) not in (1, in_channels) or len(std) not in (1, in_channels):
            raise InvalidConfigError(f"mean/std need 1 or {in_channels} values, got {mean} and {std}")
        self.in_channels = in_channels
        self.coord_channels = coord_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.in_channels + (2 if self.coord_channels else 0)

    def check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InvalidImageError(f"expected images of shape [B, {self.in_channels}, H, W], got {list(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.coord_channels:
            b, _, h, w = x.shape
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], dim=1)
        return x


def channels_last_on_cpu(x: Tensor) -> Tensor:
    """A batch of images laid out channels-last when it runs on the CPU (not while being traced, compiled or
    exported: the layout is the kernels' business there). oneDNN's convolutions read NHWC faster than NCHW, and
    the input's layout decides (the weights stay NCHW): timm's EfficientNet-Lite0 at 224 px, one thread, a quiet
    2-core machine, 0.83x the time at batch 1, 0.56x at batch 32; ResNet-18 1.02x and 0.81x. A 1-channel batch is
    both layouts at once and stays as it is."""
    if (not x.is_cpu or x.ndim != 4 or x.shape[1] == 1 or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export()):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def global_pool(feature_map: Tensor) -> Tensor:
    return feature_map.mean(dim=(2, 3))


def conv_bn_relu(in_ch: int, out_ch: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )
