"""The networks of knowledge factorization: backbones, the teacher, the CKN and the TSN.

Every module that is saved to a factor bank is a ``PyTorchModelHubMixin`` whose
``__init__`` takes only JSON-able arguments: they become its ``config.json``, so a
folder on disk or a Hub repo is enough to rebuild it, with no code of ours pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    InvalidConfigError,
    InvalidImageError,
    UnknownNameError,
    UnsafeWeightsError,
)
from kf_model.limits import (
    MAX_CHANNELS,
    MAX_ENCODER_LAYERS,
    MAX_STAGES,
    MAX_STRIDE,
    MAX_TASKS,
    MAX_WIDTH,
    check_bool,
    check_int,
    check_int_list,
    check_normalisation,
    check_text,
)

HUB_KWARGS: dict[str, Any] = dict(
    library_name="kf",
    tags=["knowledge-factorization", "kf"],
    repo_url="https://github.com/kf-project/kf",
    paper_url="https://arxiv.org/abs/2207.03337",
    license="apache-2.0",
)


class SafetensorsOnlyMixin(PyTorchModelHubMixin):
    """The Hub mixin, minus its fallback to pickled ``pytorch_model.bin`` files."""

    @classmethod
    def _load_as_pickle(cls, model, model_file, map_location, strict):
        raise UnsafeWeightsError(
            f"refusing to load {model_file}: kf only loads .safetensors weights, never pickles"
        )


# ----------------------------------------------------------------------------- input adapter

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

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InvalidImageError(f"expected images of shape [B, {self.in_channels}, H, W], got {list(x.shape)}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.coord_channels:
            b, _, h, w = x.shape
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], dim=1)
        return x


def global_pool(feature_map: Tensor) -> Tensor:
    return feature_map.mean(dim=(2, 3))


# ----------------------------------------------------------------------------- backbones

def conv_bn_relu(in_ch: int, out_ch: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


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

        from kf_model.teachers.timm_teacher import check_timm_name, stage_widths

        self.name = check_timm_name(cfg.arch.removeprefix("timm:"))
        self.adapter = InputAdapter(cfg.in_channels, cfg.mean, cfg.std, cfg.coord_channels)
        self.model = timm.create_model(self.name, pretrained=False, num_classes=0, in_chans=self.adapter.out_channels)
        self.stage_channels = stage_widths(self.model)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.model.forward_intermediates(self.adapter(x), indices=3, intermediates_only=True))


BACKBONES = {"cnn": CNNBackbone, "resnet18": ResNet18Backbone}


def build_backbone(cfg: BackboneConfig | dict[str, Any]) -> CNNBackbone | ResNet18Backbone | TimmBackbone:
    cfg = BackboneConfig.from_dict(cfg)
    if cfg.arch.startswith("timm:"):
        return TimmBackbone(cfg)
    if cfg.arch not in BACKBONES:
        raise UnknownNameError(f"unknown backbone arch {cfg.arch!r}; known: {sorted(BACKBONES)} or timm:<name>")
    return BACKBONES[cfg.arch](cfg)


# ----------------------------------------------------------------------------- teacher / student

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


# ----------------------------------------------------------------------------- CKN

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


# ----------------------------------------------------------------------------- TSN

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


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BackboneConfig",
    "CKNOutput",
    "CommonKnowledgeNetwork",
    "EncoderConfig",
    "GroupedEncoder",
    "InputAdapter",
    "TSNOutput",
    "TaskSpecificNetwork",
    "Teacher",
    "TeacherOutput",
    "TimmBackbone",
    "build_backbone",
    "count_parameters",
    "one_vs_rest_logits",
    "split_variational",
]
