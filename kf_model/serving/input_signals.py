"""Signals that tell a photograph from a bank's data before the network sees it.

The CKN's feature distance (:mod:`kf_model.serving.familiarity`) was fitted on what the bank was trained on;
on a 28-px grey garment bank a downscaled photograph often lands close enough to pass. What a photograph
cannot hide is how it looks *as a picture*: colour around its edges, a busy, bright border after the app's
grey conversion and inversion, and no dark plain background for an object to stand on. A bank whose inputs
are light objects on a plain dark background (dSprites, Fashion-MNIST) never shows any of these; an object
photographed or drawn on a plain light background (the case the automatic inversion exists for) shows
little of them either, so it stays answerable.

Every signal is a number in [0, 1], larger meaning "less like an object on a plain dark background", computed
on a small copy of the prepared upload (at most :data:`VIEW_SIDE` px), so its cost does not grow with the
upload. A bank of *photographs* (the photo bank) checks the opposite way, with :data:`PHOTO_SIGNALS`: what no
photograph shows (pixel noise, no detail at all: a flat colour or a smooth gradient, a light colourless page of
few tones: a scan of text), larger meaning "less like a photograph". :class:`SignalLimits` holds a bank's
limits (saved in its ``familiarity/config.json``); an image is flagged when any signal is above its limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from kf_model.data.preprocess import LUMA_WEIGHTS

VIEW_SIDE = 96  # signals are computed on a copy at most this many pixels on its longer side
BORDER_SHARE = 0.1  # the border ring: this share of the side on each edge (at least one pixel)
OBJECT_STEP = 0.25  # a pixel belongs to the object when it is this much brighter than the border's median
DETAIL_STEP = 0.02  # a pixel shows detail when a neighbour differs from it by more than this (about 5 grey levels)
PLAIN_BAND = 0.12  # a pixel is "plain" (paper) when within this of the picture's median grey
PAGE_LIGHTNESS = 0.7  # a page: its median grey at least this light ...
PAGE_CHROMA = 0.15  # ... and its paper nearly colourless (median colour of the plain pixels at most this)
OBJECT_SIGNALS = ("border_colour", "colour", "border_level", "border_spread", "object_fill")
PHOTO_SIGNALS = ("pixel_noise", "no_detail", "blank_page")  # what a bank of photographs checks (not a photograph)
SIGNALS = OBJECT_SIGNALS + PHOTO_SIGNALS
SIGNAL_WORDS = {
    "border_colour": "colour around the edges",
    "colour": "colour in the picture",
    "border_level": "a bright edge after grey conversion (no dark background)",
    "border_spread": "a busy edge (no plain background)",
    "object_fill": "no object on a background: the bright part fills the picture",
    "pixel_noise": "pixel noise: neighbouring pixels are unrelated, as in no photograph",
    "no_detail": "no detail: a flat colour or a smooth gradient",
    "blank_page": "a light, colourless page of few tones (a scan of text?)",
}


# ============================================================================ pure signals

def view_array(image: Image.Image, side: int = VIEW_SIDE) -> np.ndarray:
    """A PIL image (L or RGB) -> float32 [h, w, 3] in [0, 1], its longer side at most ``side`` (box filter)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb.size) > side:
        scale = side / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def border_mask(height: int, width: int, share: float = BORDER_SHARE) -> np.ndarray:
    """[h, w] bool: the outer ring, ``share`` of each side thick (at least 1 px)."""
    ring_h, ring_w = max(1, round(height * share)), max(1, round(width * share))
    mask = np.ones((height, width), dtype=bool)
    mask[ring_h:height - ring_h, ring_w:width - ring_w] = False
    return mask


def chroma(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] -> [...]: max - min over the channels (0 for any grey)."""
    return rgb.max(axis=-1) - rgb.min(axis=-1)


def grey_as_network_sees(rgb: np.ndarray, inverted: bool) -> np.ndarray:
    """[h, w, 3] -> [h, w] luma (ITU-R 601, as the app's grey conversion), inverted as the app inverts it."""
    red, green, blue = (np.float32(w) for w in LUMA_WEIGHTS)
    grey = rgb[..., 0] * red + rgb[..., 1] * green + rgb[..., 2] * blue
    return 1.0 - grey if inverted else grey


def neighbour_correlation(grey: np.ndarray) -> float:
    """Mean correlation of horizontally and vertically adjacent pixels of a [h, w] image: 0.4-1 for photographs
    (even grass and gravel), about 0 for noise; 1 when there is nothing to correlate (a flat or 1-px image)."""
    pairs = [(grey[:, :-1], grey[:, 1:]), (grey[:-1, :], grey[1:, :])]
    values = []
    for first, second in pairs:
        a, b = first.ravel().astype(np.float64), second.ravel().astype(np.float64)
        if a.size < 2 or a.std() < 1e-6 or b.std() < 1e-6:
            values.append(1.0)
            continue
        values.append(float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())))
    return float(np.mean(values))


def detail_share(grey: np.ndarray, step: float = DETAIL_STEP) -> float:
    """Share of pixels with a right or lower neighbour more than ``step`` apart, on the picture stretched to its
    own tonal range (1st-99th percentile: a dark, low-contrast night photograph keeps its detail): 0 for a flat
    colour or a smooth gradient."""
    if min(grey.shape) < 2:
        return 0.0
    low, high = np.percentile(grey, [1, 99])
    if high - low < 1e-3:
        return 0.0
    stretched = np.clip((grey - low) / (high - low), 0.0, 1.0)
    across = np.abs(np.diff(stretched, axis=1))[:-1, :]
    down = np.abs(np.diff(stretched, axis=0))[:, :-1]
    return float((np.maximum(across, down) > step).mean())


def blank_page(grey: np.ndarray, rgb: np.ndarray) -> float:
    """The share of plain pixels (near the median grey) of a picture that is mostly light, nearly colourless
    paper, 0 for any other: a page of text is mostly its paper; no photograph measured is that light."""
    median = float(np.median(grey))
    plain = np.abs(grey - median) < PLAIN_BAND
    if median < PAGE_LIGHTNESS or float(np.median(chroma(rgb[plain]))) > PAGE_CHROMA:
        return 0.0
    return float(plain.mean())


def signals_of_array(rgb: np.ndarray, inverted: bool) -> dict[str, float]:
    """The signals of a [h, w, 3] float image in [0, 1] (see :data:`SIGNAL_WORDS`), each in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an [h, w, 3] image, got shape {tuple(rgb.shape)}")
    ring = border_mask(*rgb.shape[:2])
    grey = grey_as_network_sees(rgb, inverted)
    edge = grey[ring]
    background = float(np.median(edge))
    plain_grey = grey_as_network_sees(rgb, False)  # the photo signals read the picture as it is
    values = {
        "border_colour": float(np.median(chroma(rgb[ring]))),
        "colour": float(chroma(rgb).mean()),
        "border_level": float(edge.mean()),
        "border_spread": float(edge.std()),
        "object_fill": float((grey > background + OBJECT_STEP).mean()),
        "pixel_noise": 1.0 - neighbour_correlation(plain_grey),
        "no_detail": 1.0 - detail_share(plain_grey),
        "blank_page": blank_page(plain_grey, rgb),
    }
    return {name: min(1.0, max(0.0, value)) for name, value in values.items()}


def image_signals(image: Image.Image, inverted: bool) -> dict[str, float]:
    """The signals of a prepared upload (an L or RGB PIL image), ``inverted`` as the app will invert it."""
    return signals_of_array(view_array(image), inverted)


def tensor_signals(batch: Any) -> list[dict[str, float]]:
    """Signals of dataset images given as a [B, C, H, W] tensor or array in [0, 1], exactly as a grey or
    colour upload of them would give (no inversion: the data are what the app never inverts)."""
    array = np.asarray(batch.detach().cpu().float().numpy() if hasattr(batch, "detach") else batch, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"expected a [B, 1 or 3, H, W] batch, got shape {tuple(array.shape)}")
    out = []
    for image in array:
        rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        pil = Image.fromarray(np.round(rgb.transpose(1, 2, 0) * 255.0).astype(np.uint8), mode="RGB")
        out.append(signals_of_array(view_array(pil), inverted=False))
    return out


# ============================================================================ limits

@dataclass(frozen=True)
class SignalLimits:
    """Upper limits per signal (a signal without a limit is not used); flagged when any is exceeded."""

    limits: Mapping[str, float]

    def check(self, signals: Mapping[str, float]) -> list[str]:
        """The names of the signals above their limit (a NaN signal counts as above: never "familiar")."""
        return [name for name, limit in self.limits.items()
                if not (signals.get(name, math.nan) <= limit)]

    def reason(self, exceeded: Sequence[str]) -> str:
        """Words for the flagged signals, for the app's warning."""
        return "; ".join(SIGNAL_WORDS.get(name, name) for name in exceeded)

    def to_json(self) -> dict[str, float]:
        return {name: round(float(value), 4) for name, value in self.limits.items()}


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (linear interpolation) of a non-empty list of numbers."""
    if not values:
        raise ValueError("no values")
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def fit_limit(bank_values: Sequence[float], photo_values: Sequence[float], *, bank_quantile: float,
              towards_photos: float) -> float | None:
    """One signal's limit: the bank's ``bank_quantile`` quantile, moved ``towards_photos`` of the way to the
    calibration photographs' median. None when the median photograph is not above the bank's quantile (the
    signal does not separate them: unused)."""
    if not 0.5 <= bank_quantile <= 1.0 or not 0.0 <= towards_photos < 1.0:
        raise ValueError("bank_quantile must be in [0.5, 1] and towards_photos in [0, 1)")
    bank = quantile(bank_values, bank_quantile)
    photo = quantile(photo_values, 0.5)
    if not photo > bank:
        return None
    return bank + towards_photos * (photo - bank)


def fit_photo_limits(photo_signals: Sequence[Mapping[str, float]], *, names: Sequence[str] = PHOTO_SIGNALS,
                     towards_one: float = 0.5) -> SignalLimits:
    """Limits for a bank of photographs: each signal's highest value over its calibration photographs, moved
    ``towards_one`` of the way to 1 (where noise, a flat colour or a blank page sit). Nothing but photographs is
    fitted on: the images these limits are to refuse are never seen here."""
    if not 0.0 <= towards_one < 1.0:
        raise ValueError("towards_one must be in [0, 1)")
    if not photo_signals:
        raise ValueError("no photographs")
    highest = {name: max(float(s[name]) for s in photo_signals) for name in names}
    return SignalLimits({name: value + towards_one * (1.0 - value) for name, value in highest.items()})


def fit_limits(bank_signals: Sequence[Mapping[str, float]], photo_signals: Sequence[Mapping[str, float]], *,
               names: Sequence[str] = OBJECT_SIGNALS, bank_quantile: float = 0.999,
               towards_photos: float = 0.5) -> SignalLimits:
    """Limits for every signal that separates the calibration photographs from the bank's validation images."""
    limits = {}
    for name in names:
        limit = fit_limit([s[name] for s in bank_signals], [s[name] for s in photo_signals],
                          bank_quantile=bank_quantile, towards_photos=towards_photos)
        if limit is not None:
            limits[name] = limit
    return SignalLimits(limits)
