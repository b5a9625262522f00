"""PIL image -> network input, the same way for training data, the app and users.

Networks normalise inside, so this only fixes the mode, the size and the range. An
image already in the dataset's format (e.g. a 28x28 grey Fashion-MNIST digit) comes
out exactly as the dataset gives it.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch
from PIL import Image, ImageOps

from kf_model.data.specs import InputSpec
from kf_model.errors import InvalidArgumentError, InvalidImageError
from kf_model.limits import MAX_IMAGE_PIXELS

BACKGROUND = 0  # both datasets draw light objects on a black background
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
HIGH_DEPTH_MODES = (*SIXTEEN_BIT_MODES, "I", "F")  # grey with more than 8 bits: scaled to [0, 1]
ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")  # converted to RGB
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's "L"
SHRINK_ABOVE = 4  # an image whose longer side exceeds this many input sizes is first reduced in PIL (box filter)


def high_depth_to_unit(image: Image.Image, sixteen_bit: bool | None = None) -> np.ndarray:
    """A 16-bit / 32-bit integer / float grey image -> float32 [H, W] in [0, 1] (integers above 255 read as
    16-bit, floats above 1 as 8-bit); ``sixteen_bit``: whether the image was 16-bit before ``shrunk`` (None: its
    mode says). A float image with NaN or infinite pixels is refused: they would reach the network as NaN."""
    array = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        if not np.isfinite(array).all():
            raise InvalidImageError("the float (mode 'F') image has NaN or infinite pixels; replace them with "
                                    "finite values (e.g. numpy.nan_to_num) before passing it")
        return np.clip(array if array.max(initial=0.0) <= 1.0 else array / 255.0, 0.0, 1.0)
    sixteen_bit = image.mode in SIXTEEN_BIT_MODES if sixteen_bit is None else sixteen_bit
    top = 65535.0 if sixteen_bit or array.max(initial=0.0) > 255 else 255.0
    return np.clip(array / top, 0.0, 1.0)


def shrunk(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` reduced by a whole factor (aspect kept) so that its longer side is at most ``max_side``, before any
    float copy or square padding is made (a 20000x2 image was padded to 20000x20000 floats: 4.6 GB); as it is
    when already small enough. Modes PIL cannot reduce (palettes, 1-bit, 16-bit) are converted first."""
    longer = max(image.size)
    if longer <= max_side:
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # averaging palette indices would mix unrelated colours
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode in SIXTEEN_BIT_MODES:
        image = image.convert("I")
    return image.reduce(math.ceil(longer / max_side))


def _to_float_array(image: Image.Image, max_side: int | None = None) -> np.ndarray:
    """Any PIL mode -> float32 [H, W, C] in [0, 1], with transparency composited onto the background; first
    ``shrunk`` to ``max_side`` when given."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF/PNG/TIFF: the first frame, like a browser's poster
    sixteen_bit = image.mode in SIXTEEN_BIT_MODES
    if max_side is not None:
        image = shrunk(image, max_side)
    mode = image.mode
    if mode in HIGH_DEPTH_MODES:
        return high_depth_to_unit(image, sixteen_bit)[..., None]
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ALPHA_MODES:
        background = Image.new("RGBA", image.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    elif mode in COLOUR_MODES:
        image = image.convert("RGB")
    elif mode not in ("L", "RGB"):
        raise InvalidImageError(f"unsupported image mode {mode!r}")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array if array.ndim == 3 else array[..., None]


def border_pixels(array: np.ndarray) -> np.ndarray:
    """[H, W, C] -> the pixels of its one-pixel outer ring, [4 * ..., C]."""
    return np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])


def level_background(array: np.ndarray) -> np.ndarray:
    """[H, W, C] in [0, 1], light object on a dark background -> the same with the background at 0.

    An inverted drawing on paper keeps the paper's grey (about 0.1, never the datasets' black): its border's
    median level is subtracted and the rest stretched back to [0, 1]. A border already black (an exact
    inversion) is left unchanged; a border that is not dark at all (not a plain background) too.
    """
    level = float(np.median(border_pixels(array)))
    if not 0.0 < level < 0.5:
        return array
    return np.clip((array - level) / (1.0 - level), 0.0, 1.0)


def upright(image: Image.Image) -> tuple[Image.Image, str | None]:
    """(the image turned as its EXIF orientation says, a note on what was done or None). As stored, with a note,
    when its EXIF block cannot be read: a camera or editor that wrote a malformed one still took a photograph."""
    try:
        turned = ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error) as error:
        return image, f"its EXIF data could not be read ({type(error).__name__}): used as stored"
    if turned is None or turned is image:
        return image, None
    return turned, "rotated according to its EXIF orientation" if turned.size != image.size else None


def check_image(image: object, invert: object, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """What ``image_to_tensor`` accepts, refused in words before any pixel is decoded."""
    if not isinstance(image, Image.Image):
        hint = (" (a file path: open it first, e.g. kf_model.serving.open_image(path) or PIL.Image.open(path))"
                if isinstance(image, str | bytes) or hasattr(image, "__fspath__") else
                " (a tensor or array: convert it with PIL.Image.fromarray, or pass a [B, C, H, W] float32 tensor in "
                "[0, 1] to the network itself)" if hasattr(image, "shape") else "")
        raise InvalidImageError(f"expected a PIL image, got {type(image).__name__}{hint}")
    if invert is not None and not isinstance(invert, bool):
        raise InvalidArgumentError(f"invert must be True, False or None (decide from the border), got {invert!r}")
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(f"the image is {width}x{height} = {width * height / 1e6:.0f} megapixels; the limit "
                                f"is {max_pixels / 1e6:g} megapixels (the networks read a few hundred pixels at "
                                "most: resize it first)")


def image_to_tensor(image: Image.Image, spec: InputSpec, *, invert: bool | None = False,
                    max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """[1, C, H, W] float tensor in [0,1] for a network with this input spec.

    Non-square images are padded with the background colour before resizing, so shapes
    keep their proportions. ``invert=None`` inverts images whose border is mostly light
    (a drawing on white paper) to the datasets' light-on-dark convention; an inverted image's
    background is then levelled to black (:func:`level_background`), as the datasets' is.
    An image larger than ``SHRINK_ABOVE`` input sizes is first reduced in PIL (:func:`shrunk`); one of more than
    ``max_pixels`` pixels, or of none, is refused (:func:`check_image`).
    """
    check_image(image, invert, max_pixels)
    image = upright(image)[0]
    array = _to_float_array(image, SHRINK_ABOVE * spec.size)
    channels = array.shape[2]
    if spec.channels == 1 and channels == 3:
        array = array @ np.array(LUMA_WEIGHTS, dtype=np.float32)[:, None]
    elif spec.channels == 3 and channels == 1:
        array = np.repeat(array, 3, axis=2)
    if invert is None:
        invert = float(border_pixels(array).mean()) > 0.5
    if invert:
        array = level_background(1.0 - array)
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    height, width = tensor.shape[1:]
    if (height, width) != (spec.size, spec.size):
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        padded = tensor.new_full((tensor.shape[0], side, side), float(BACKGROUND))
        padded[:, top:top + height, left:left + width] = tensor
        tensor = torch.nn.functional.interpolate(padded[None], size=(spec.size, spec.size), mode="bilinear",
                                                 antialias=side > spec.size, align_corners=False)[0]
    return tensor.clamp_(0.0, 1.0).unsqueeze(0)
