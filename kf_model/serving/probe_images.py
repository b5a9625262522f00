"""Images the familiarity measurement feeds the app with: the bank's own test images as uploads, the same
objects on a plain light background (the case the automatic inversion exists for), and generated inputs
(procedural colour "photos", noise). Real photographs come from :mod:`kf_model.data.photos`.

Every generator is seeded and returns PIL images, as a visitor would upload them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from kf_model.data import load_dataset

PAPER = (236, 233, 226)  # an off-white sheet under a white-balanced camera
INK = (45, 45, 60)  # a dark blue-black pen


def dataset_arrays(name: str, positions: Sequence[int], data_dir: str | None = None,
                   batch_size: int = 512) -> list[np.ndarray]:
    """Test images of a dataset as uint8 grey arrays [H, W] (light object on black)."""
    test = load_dataset(name, "test", root=data_dir)
    arrays = []
    for start in range(0, len(positions), batch_size):
        batch = test.get_batch(list(positions[start:start + batch_size]))[0]
        arrays += list((batch[:, 0] * 255).round().to(torch.uint8).numpy())
    return arrays


def dataset_images(name: str, positions: Sequence[int], data_dir: str | None = None) -> list[Image.Image]:
    """Test images of a dataset as the grey PIL pictures a user would upload."""
    return [Image.fromarray(array, mode="L") for array in dataset_arrays(name, positions, data_dir)]


def on_white(array: np.ndarray, scale: int = 4) -> Image.Image:
    """A dataset image dark-on-white and upscaled (as ``assets/examples/*-on-white.png``)."""
    picture = Image.fromarray(255 - array, mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.BICUBIC)


def ink_on_paper(array: np.ndarray, rng: np.random.Generator, scale: int = 8) -> Image.Image:
    """A dataset image drawn in ink on off-white paper and photographed: uneven light, sensor noise, soft focus."""
    ink = _upscaled(array, scale)
    height, width = ink.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    light = 1.0 - 0.08 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    image = np.asarray(PAPER, np.float32) * light * (1 - ink) + np.asarray(INK, np.float32) * ink
    image += rng.normal(0.0, 3.0, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB").filter(ImageFilter.GaussianBlur(1))


def coloured_on_white(array: np.ndarray, rng: np.random.Generator, scale: int = 6) -> Image.Image:
    """A dataset image as a coloured object (one random hue, shaded by the image) on a white background."""
    shade = _upscaled(array, scale)
    hue = rng.uniform(40, 220, 3).astype(np.float32)
    mask = (shade > 0.02).astype(np.float32)
    image = 250.0 * (1 - mask) + hue * (0.5 + 0.5 * shade) * mask
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


def _upscaled(array: np.ndarray, scale: int) -> np.ndarray:
    height, width = array.shape
    big = Image.fromarray(array, mode="L").resize((width * scale, height * scale), Image.Resampling.BICUBIC)
    return (np.asarray(big, dtype=np.float32) / 255.0)[..., None]


PLAIN_BACKGROUNDS = {  # name -> (words, maker(array, rng))
    "inverted": ("dark on white, upscaled (like assets/examples/*-on-white.png)", lambda a, rng: on_white(a)),
    "ink on paper": ("drawn in ink on off-white paper, photographed (uneven light, noise, soft focus)",
                     ink_on_paper),
    "coloured on white": ("a coloured object on a white background", coloured_on_white),
}


def plain_background_images(arrays: Sequence[np.ndarray], kind: str, seed: int = 0) -> list[Image.Image]:
    """The dataset images as objects on a plain light background of one ``kind`` (see PLAIN_BACKGROUNDS)."""
    _, make = PLAIN_BACKGROUNDS[kind]
    rng = np.random.default_rng(seed)
    return [make(array, rng) for array in arrays]


def synthetic_photos(count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """Procedural colour "photos" (gradients, blobs, stripes, textures): RGB, not real photographs."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    photos = []
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        direction = rng.uniform(-1, 1, 2)
        gradient = (xx * direction[0] / width + yy * direction[1] / height)[..., None]
        image = base + gradient * rng.uniform(-160, 160, 3)
        for _ in range(rng.integers(2, 7)):  # soft coloured blobs ("objects")
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 200)
            mask = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            image = image * (1 - mask) + rng.uniform(0, 255, 3) * mask
        if i % 2:  # stripes or a checker texture on half of them
            period = rng.uniform(8, 60)
            image += 40 * np.sin(2 * np.pi * (xx + yy * rng.uniform(-1, 1)) / period)[..., None]
        image += rng.normal(0, 8, image.shape)  # sensor-like noise
        photos.append(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB"))
    return photos


def noise_images(count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """Uniform RGB noise images."""
    rng = np.random.default_rng(seed + 1)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")
            for _ in range(count)]


# ============================================================================ what no photograph looks like

NOT_PHOTO_KINDS = ("noise", "flat", "gradient", "text")  # what a bank of photographs must flag


def flat_images(colours: Sequence[tuple[int, int, int]] = ((0, 0, 0), (255, 255, 255), (128, 128, 128),
                                                          (220, 30, 30), (30, 60, 200), (230, 215, 180)),
                size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """One flat colour each."""
    return [Image.new("RGB", size, tuple(colour)) for colour in colours]


def gradient_images(size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """Smooth gradients: grey left to right, a colour ramp over both axes, a radial one."""
    width, height = size
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    grey = np.repeat(np.broadcast_to(x, (height, width))[..., None], 3, axis=2)
    colour = np.stack(np.broadcast_arrays(x, y, 1.0 - x), axis=2)
    radial = np.clip(1.0 - np.hypot(x - 0.5, y - 0.5), 0.0, 1.0)
    radial = np.repeat(radial[..., None], 3, axis=2)
    return [Image.fromarray((255 * image).round().astype(np.uint8), mode="RGB") for image in (grey, colour, radial)]


def text_pages(count: int = 4, seed: int = 0) -> list[Image.Image]:
    """Pages of text as a scanner gives them: dark ink on white or off-white paper, several font sizes."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    words = ["the", "factor", "bank", "network", "of", "and", "image", "a", "to", "in", "common", "knowledge",
             "task", "teacher", "student", "photograph"]
    pages = []
    for i in range(count):
        size = int(rng.integers(12, 30))
        paper = tuple(int(v) for v in rng.integers(225, 256, 3))
        ink = tuple(int(v) for v in rng.integers(0, 70, 3))
        page = Image.new("RGB", (850, 1100), paper)
        draw, font = ImageDraw.Draw(page), ImageFont.load_default(size=size)
        per_line, lines = max(1, 1300 // (size * 6)), int(1000 // (size * 1.4))
        for line in range(lines):
            text = " ".join(rng.choice(words, per_line * 2))[: 1300 // size]
            draw.text((60, 50 + line * size * 1.4), text, fill=ink, font=font)
        pages.append(page if i % 2 == 0 else page.filter(ImageFilter.GaussianBlur(0.6)))  # half of them scanned soft
    return pages


def not_photographs(seed: int = 0) -> dict[str, list[Image.Image]]:
    """The images a bank of photographs must flag, by kind (:data:`NOT_PHOTO_KINDS`)."""
    return {"noise": noise_images(4, seed, (640, 480)), "flat": flat_images(), "gradient": gradient_images(),
            "text": text_pages(4, seed)}
