"""Building blocks every kf network shares: normalisation inside the network, conv-BN-ReLU, pooling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kf_model.errors import (
    InvalidConfigError,
    InvalidImageError,
)

HALF_DTYPES = (torch.float16, torch.bfloat16)  # accepted off the CPU (CUDA half-precision inputs); CPU: float32 only


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
        """Shape, batch size and dtype, O(1) (never the values: this runs on every call); the reason in words."""
        if not isinstance(x, Tensor) or (x.dtype is not torch.float32 and (x.is_cpu or x.dtype not in HALF_DTYPES)):
            raise InvalidImageError(input_problem(x, self.in_channels))
        shape = x.shape  # read once: the whole check costs about 50 ns more than the shape check it replaced
        if len(shape) != 4 or shape[1] != self.in_channels or not shape[0]:
            raise InvalidImageError(input_problem(x, self.in_channels))

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.coord_channels:
            b, _, h, w = x.shape
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], dim=1)
        return x


def input_problem(x: object, channels: int) -> str:
    """Why ``x`` is not a batch of images for a network of ``channels`` input channels (``InputAdapter.check``)."""
    expected = f"a [B, {channels}, H, W] tensor of float32 images in [0, 1], as FactorBank.preprocess makes them"
    if not isinstance(x, Tensor):
        return f"expected {expected}; got a {type(x).__name__} (convert it with torch.as_tensor)"
    if x.ndim != 4 or x.shape[1] != channels:
        hint = " (one image: add the batch axis with x[None] or x.unsqueeze(0))" if x.ndim == 3 else ""
        return f"expected images of shape [B, {channels}, H, W], got {list(x.shape)}{hint}"
    if x.shape[0] == 0:
        return f"expected at least one image, got a batch of 0 ({list(x.shape)})"
    return (f"expected float32 images in [0, 1], as FactorBank.preprocess makes them, got {x.dtype} on {x.device}"
            + (" (scale 8-bit pixels with x.float() / 255)" if x.dtype == torch.uint8 else ""))


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
