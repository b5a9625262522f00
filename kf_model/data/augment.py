"""Heavy augmentation for distilling from very few images (Asano and Saeed, arXiv 2112.00725): random resized
crops at many scales, flips, colour jitter, and CutMix / MixUp of two views.

Every view is a pure function of (the source images, a numpy Generator): a dataset seeds the Generator with
(seed, index), so a view is the same on every run and every resume, and no global RNG is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from kf_model.errors import InvalidArgumentError


@dataclass(frozen=True)
class AugmentConfig:
    """``min_area``: the smallest crop, as a share of the image's area (crops are log-uniform in area, so small
    details are seen as often as the whole scene); ``jitter``: the largest brightness / contrast / saturation
    change; ``mix``: the chance of a CutMix, and again of a MixUp, with a second view."""

    min_area: float = 0.02
    max_area: float = 1.0
    min_ratio: float = 3 / 4
    jitter: float = 0.4
    flip: float = 0.5
    mix: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.min_area <= self.max_area <= 1:
            raise InvalidArgumentError(f"crop areas must satisfy 0 < min_area <= max_area <= 1, got "
                                       f"{self.min_area}, {self.max_area}")
        if not 0 < self.min_ratio <= 1:
            raise InvalidArgumentError(f"min_ratio must be in (0, 1], got {self.min_ratio}")
        for name in ("jitter", "flip", "mix"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidArgumentError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def crop_box(width: int, height: int, rng: np.random.Generator, config: AugmentConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop: area log-uniform in [min_area, max_area] of the image,
    aspect ratio log-uniform in [min_ratio, 1 / min_ratio], clipped to the image."""
    area = width * height * math.exp(rng.uniform(math.log(config.min_area), math.log(config.max_area)))
    ratio = math.exp(rng.uniform(math.log(config.min_ratio), -math.log(config.min_ratio)))
    w = max(1, min(width, round(math.sqrt(area * ratio))))
    h = max(1, min(height, round(math.sqrt(area / ratio))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return left, top, left + w, top + h


def random_view(image: Image.Image, size: int, rng: np.random.Generator, config: AugmentConfig) -> Image.Image:
    """One crop of ``image`` at ``size`` x ``size``, maybe flipped, colour-jittered."""
    view = image.resize((size, size), Image.Resampling.BILINEAR, box=crop_box(*image.size, rng, config))
    if rng.random() < config.flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if config.jitter:
            view = enhancer(view).enhance(float(rng.uniform(1 - config.jitter, 1 + config.jitter)))
    return view


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1] of an RGB image."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def cutmix(a: torch.Tensor, b: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``a`` with a random box (a share of the area drawn uniformly) pasted from ``b``."""
    _, h, w = a.shape
    share = rng.uniform(0.1, 0.6)
    bh, bw = max(1, round(h * math.sqrt(share))), max(1, round(w * math.sqrt(share)))
    top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    mixed = a.clone()
    mixed[:, top:top + bh, left:left + bw] = b[:, top:top + bh, left:left + bw]
    return mixed


def mixup(a: torch.Tensor, b: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    weight = float(rng.uniform(0.3, 0.7))
    return a * weight + b * (1 - weight)


def augmented_view(images: list[Image.Image], index: int, size: int, rng: np.random.Generator,
                   config: AugmentConfig) -> torch.Tensor:
    """A [3, size, size] view of ``images[index]``; sometimes CutMix or MixUp with a view of a random image (the
    teacher labels the mixed picture itself, so the mixing needs no label arithmetic)."""
    view = to_tensor(random_view(images[index], size, rng, config))
    draw = rng.random()
    if draw < 2 * config.mix:
        other = to_tensor(random_view(images[int(rng.integers(len(images)))], size, rng, config))
        view = cutmix(view, other, rng) if draw < config.mix else mixup(view, other, rng)
    return view
