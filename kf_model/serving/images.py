"""Uploaded images: opened and checked (size, truncation, decompression bombs), converted to 8-bit L/RGB.

Every refusal is an :class:`~kf_model.errors.InvalidImageError` written for a person; no PIL exception escapes.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kf_model.data.preprocess import (
    ALPHA_MODES,
    COLOUR_MODES,
    HIGH_DEPTH_MODES,
    LUMA_WEIGHTS,
    SIXTEEN_BIT_MODES,
    high_depth_to_unit,
    upright,
)
from kf_model.data.specs import InputSpec
from kf_model.errors import (
    InvalidImageError,
    RequestError,
)
from kf_model.limits import MAX_IMAGE_PIXELS

MAX_FILE_BYTES = 25 * 1024 * 1024  # what is decoded: a 50-megapixel phone JPEG is 10-20 MB
# Gradio's transport cap (launch(max_file_size=...)): above the decode cap, so that a file between the two reaches
# open_image and is refused beside the image in words, not by a toast that leaves the old answer under a spinner
UPLOAD_MAX_BYTES = 2 * MAX_FILE_BYTES
ORIGINAL_SIZE = "kf_original_size"  # image.info key: the size in the file, before a reduced-scale JPEG decode
# a JPEG larger than WORKING_SIDE decodes at 1/2 to 1/8 scale (``draft``), so one of up to twice the pixel limit
# (Pillow's own hard cap) costs less memory than a PNG at the limit: a 50-megapixel phone photo is answered
JPEG_PIXELS_FACTOR = 2
WORKING_SIDE = 1024  # larger images are downscaled to this side before preprocessing (networks read <= 224 px)
PREVIEW_SIDE = 224  # the processed image is shown upscaled (nearest neighbour) to at least this side

# Pillow refuses larger images at open time (DecompressionBombError above 2x, a warning above 1x);
# open_image also checks the header size itself, so the limit holds whatever a caller did to this global.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS



def open_image(path: str | os.PathLike | None) -> tuple[Image.Image, list[str]]:
    """Open, check and fully decode an image file -> (a loaded copy of its first frame, notes for the user).

    Every refusal is an :class:`InvalidImageError` (or :class:`RequestError` for no image at all) whose
    message is written for a person; no PIL exception escapes.
    """
    if path is None or str(path) == "":
        raise RequestError("no image: upload a picture, paste one from the clipboard or draw on the sketchpad")
    file = Path(path)
    if file.is_dir():
        raise InvalidImageError(f"{file.name!r} is a folder, not an image file")
    if not file.is_file():
        raise InvalidImageError(f"the image file {file.name!r} does not exist (was the upload interrupted?)")
    size = file.stat().st_size
    if size == 0:
        raise InvalidImageError(f"{file.name!r} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise InvalidImageError(f"{file.name!r} is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked right after
            with Image.open(file) as image:
                _check_pixels(image.size, JPEG_PIXELS_FACTOR if image.format == "JPEG" else 1)
                size = image.size  # as stored: a JPEG's draft below decodes it smaller
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    image.seek(0)
                    notes.append(f"animated image ({frames} frames): the first frame is used")
                if image.format == "JPEG" and max(image.size) > 2 * WORKING_SIDE:
                    image.draft(image.mode, (WORKING_SIDE, WORKING_SIDE))  # decode at a reduced scale: faster
                image.load()
                loaded = image.copy()  # the copy outlives the file (closing the original destroys its data)
                loaded.info = {**image.info, ORIGINAL_SIZE: size}
                if image.format:
                    notes.insert(0, f"{image.format} {image.mode} {size[0]}x{size[1]}")
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            f"{file.name!r} is too large: more than {JPEG_PIXELS_FACTOR * MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
            "(a possible decompression bomb); the networks read a few hundred pixels at most, so a smaller picture "
            "works as well"
        ) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{file.name!r} is not an image this app can read (use PNG, JPEG, GIF, WebP, BMP or TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise InvalidImageError(f"{file.name!r} is truncated or corrupt and cannot be decoded ({error})") from None
    return loaded, notes


def _check_pixels(size: tuple[int, int], factor: int = 1) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"the image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS * factor:
        raise InvalidImageError(
            f"the image is {width}x{height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{MAX_IMAGE_PIXELS * factor / 1e6:.0f} megapixels (the networks read a few hundred pixels at most)"
        )


def prepare_image(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any PIL image -> a new 8-bit "L" or "RGB" image of at most WORKING_SIDE px, plus notes on what changed.

    An image already in "L"/"RGB" and small enough is only copied, so a dataset image reaches
    ``bank.preprocess`` unchanged and gives exactly the dataset's tensor.
    """
    _check_pixels(image.size)
    notes: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image, note = upright(image)
    notes += [note] if note else []
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        notes.append("palette image converted to RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in COLOUR_MODES:
        image = image.convert("RGB")
        notes.append(f"{mode} image converted to RGB")
    elif mode in HIGH_DEPTH_MODES:
        image = _high_depth_to_l(image)
        notes.append(f"{'16-bit' if mode in SIXTEEN_BIT_MODES else mode + '-mode'} image scaled to 8 bits")
    elif mode not in ("L", "RGB", *ALPHA_MODES):
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as error:
            raise InvalidImageError(f"unsupported image mode {mode!r}: save it as an RGB or grey PNG/JPEG") from error
        notes.append(f"{mode} image converted to RGB")
    original = image.info.get(ORIGINAL_SIZE, image.size)
    if max(original) > WORKING_SIDE:  # before flattening: that works in float32, 16 bytes a pixel
        image = image.copy()
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
        notes.append(f"downscaled from {original[0]}x{original[1]} to {image.size[0]}x{image.size[1]}")
    if image.mode in ALPHA_MODES:
        image, note = _flatten_transparency(image)
        notes += [note] if note else []
    if image.mode not in ("L", "RGB"):  # pragma: no cover - every branch above ends in L or RGB
        image = image.convert("RGB")
    return image.copy(), notes


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grey -> 8-bit "L", scaled as ``kf_model.data.preprocess`` scales them."""
    return Image.fromarray(np.round(high_depth_to_unit(image) * 255.0).astype(np.uint8), mode="L")


def _flatten_transparency(image: Image.Image) -> tuple[Image.Image, str]:
    """Composite transparency onto black or white, whichever contrasts with the visible content.

    A light object on a transparent background lands on black (the datasets' convention); dark strokes
    (a drawing in black ink) land on white, and the light-background rule then inverts them.
    """
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    colour = rgba[..., :3]
    weight = float(alpha.sum())
    if weight < 1e-6:
        return Image.new("RGB", image.size, (0, 0, 0)), "fully transparent image: blank"
    luma = _luma(colour)
    content = float((luma * alpha[..., 0]).sum() / weight)
    background = 1.0 if content < 0.5 else 0.0
    flat = colour * alpha + background * (1.0 - alpha)
    flat_image = Image.fromarray(np.round(flat * 255.0).astype(np.uint8), mode="RGB")
    if float(alpha.min()) >= 1.0:
        return flat_image, ""
    return flat_image, f"transparency composited onto {'white' if background else 'black'}"


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of [..., 3] floats, element-wise (a matmul would start BLAS threads that fight torch's)."""
    red, green, blue = (np.float32(w) for w in LUMA_WEIGHTS)
    return rgb[..., 0] * red + rgb[..., 1] * green + rgb[..., 2] * blue


def is_light_background(image: Image.Image, spec: InputSpec) -> bool:
    """The rule of ``image_to_tensor(invert=None)``: the mean of the border pixels is above 0.5."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    if spec.channels == 1 and array.shape[2] == 3:
        array = _luma(array)[..., None]
    border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel()])
    return float(border.mean()) > 0.5


def auto_inverts(spec: InputSpec) -> bool:
    """Whether "auto" may invert a light background for a bank: grey banks (light-on-dark datasets such as dSprites
    and Fashion-MNIST) do; colour banks never do, since a photograph's brightness is part of what it shows."""
    return spec.channels == 1


def should_invert(image: Image.Image, spec: InputSpec, invert: bool | None = None) -> bool:
    """The app's inversion: an explicit choice wins; "auto" (None) inverts a light border, for grey banks only."""
    if invert is not None:
        return bool(invert)
    return auto_inverts(spec) and is_light_background(image, spec)


def is_blank(image: Image.Image | None) -> bool:
    """True for no image, or one whose pixels are all the same (an untouched sketchpad)."""
    if image is None:
        return True
    if image.mode in ALPHA_MODES and image.mode != "PA":
        alpha = image.getchannel("A")
        if alpha.getextrema()[1] == 0:
            return True
    extrema = image.getextrema()
    if isinstance(extrema[0], tuple):
        return all(low == high for low, high in extrema)
    return extrema[0] == extrema[1]


def tensor_to_preview(tensor: torch.Tensor, side: int = PREVIEW_SIDE) -> Image.Image:
    """[1, C, H, W] or [C, H, W] in [0,1] -> a PIL image upscaled by an integer factor (nearest neighbour)."""
    array = tensor.detach().float().cpu().reshape(-1, *tensor.shape[-2:]).clamp(0, 1).numpy()
    array = np.round(array * 255.0).astype(np.uint8)
    image = Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else Image.fromarray(
        array[:3].transpose(1, 2, 0), mode="RGB")
    factor = max(1, math.ceil(side / max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
