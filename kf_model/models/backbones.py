"""Trunks by name: ``cnn``, ``resnet18`` (small images) or ``timm:<name>``; each returns the feature maps of
its last 3 stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from kf_model.errors import (
    InvalidConfigError,
    UnknownNameError,
)
from kf_model.limits import (
    MAX_CHANNELS,
    MAX_STAGES,
    MAX_STRIDE,
    MAX_WIDTH,
    check_bool,
    check_int,
    check_normalisation,
    check_text,
)
from kf_model.models.layers import InputAdapter, _config_object, channels_last_on_cpu, conv_bn_relu
from kf_model.models.timm_names import check_timm_name, stage_widths


@dataclass
class BackboneConfig:
    """Architecture of a CKN, teacher or KD student backbone (JSON-able)."""

    arch: str = "cnn"  # "cnn" (a small VGG-like net), "resnet18" (torchvision, adapted to small images) or
    # "timm:<name>" (any registered timm architecture, random init; width/num_stages/stem_stride unused)
    in_channels: int = 1
    width: int = 32  # cnn: width of the first stage, doubled at each of the next ones
    num_stages: int = 4  # cnn only; the last 3 stages are distilled (InfoMax)
    stem_stride: int = 1  # 2 halves the resolution at once (cheaper on 64 px inputs)
    coord_channels: bool = False  # append x/y coordinate maps (CoordConv): position tasks need them
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:  # a config.json from the Hub is data: bounded before anything is built
        check_text("backbone.arch", self.arch, 100)
        check_int("backbone.in_channels", self.in_channels, 1, MAX_CHANNELS)
        check_int("backbone.width", self.width, 1, MAX_WIDTH)
        check_int("backbone.num_stages", self.num_stages, 3, MAX_STAGES)
        check_int("backbone.stem_stride", self.stem_stride, 1, MAX_STRIDE)
        check_bool("backbone.coord_channels", self.coord_channels)
        self.mean = check_normalisation("backbone.mean", self.mean, self.in_channels, positive=False)
        self.std = check_normalisation("backbone.std", self.std, self.in_channels, positive=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | BackboneConfig) -> BackboneConfig:
        return data if isinstance(data, BackboneConfig) else cls(**_config_object("backbone", data))


class CNNBackbone(nn.Module):
    """A small VGG-like net: two 3x3 conv-BN-ReLU per stage, width doubling, stride 2 between stages."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        if cfg.num_stages < 3:
            raise InvalidConfigError("the cnn backbone needs at least 3 stages (3 are distilled)")
        self.adapter = InputAdapter(cfg.in_channels, cfg.mean, cfg.std, cfg.coord_channels)
        widths = [cfg.width * 2**i for i in range(cfg.num_stages)]
        stages, in_ch = [], self.adapter.out_channels
        for i, width in enumerate(widths):
            stride = cfg.stem_stride if i == 0 else 2
            stages.append(nn.Sequential(conv_bn_relu(in_ch, width, stride), conv_bn_relu(width, width, 1)))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths[-3:]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.adapter(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps[-3:]


class ResNet18Backbone(nn.Module):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, as usual for 28-64 px images."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.adapter = InputAdapter(cfg.in_channels, cfg.mean, cfg.std, cfg.coord_channels)
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(self.adapter.out_channels, 64, 3, stride=cfg.stem_stride, padding=1, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.stage_channels = [128, 256, 512]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(self.adapter(x))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps[-3:]


class TimmBackbone(nn.Module):
    """Any timm architecture as a trunk: the last 3 stages of its own ``forward_intermediates``.

    Built from its registered name only (never ``hf-hub:`` or a path: a config from the Hub must not download
    or run anything); weights come from the bank's safetensors, or from a teacher of the same architecture.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        import timm

        self.name = check_timm_name(cfg.arch.removeprefix("timm:"))
        self.adapter = InputAdapter(cfg.in_channels, cfg.mean, cfg.std, cfg.coord_channels)
        self.model = timm.create_model(self.name, pretrained=False, num_classes=0, in_chans=self.adapter.out_channels)
        self.stage_channels = stage_widths(self.model)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = channels_last_on_cpu(self.adapter(x))  # timm's convolutions, about twice as fast on the CPU
        return list(self.model.forward_intermediates(x, indices=3, intermediates_only=True))


BACKBONES = {"cnn": CNNBackbone, "resnet18": ResNet18Backbone}


def build_backbone(cfg: BackboneConfig | dict[str, Any]) -> CNNBackbone | ResNet18Backbone | TimmBackbone:
    cfg = BackboneConfig.from_dict(cfg)
    if cfg.arch.startswith("timm:"):
        return TimmBackbone(cfg)
    if cfg.arch not in BACKBONES:
        raise UnknownNameError(f"unknown backbone arch {cfg.arch!r}; known: {sorted(BACKBONES)} or timm:<name>")
    return BACKBONES[cfg.arch](cfg)
