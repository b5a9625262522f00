"""Fitting a bank's limits for the pre-network photo signals (:mod:`kf_model.serving.input_signals`).

On one side the bank's own validation images (as an upload of them would look), on the other the
``calibration`` part of the offline photographs (:mod:`kf_model.data.photos`), each read the way the app reads
an upload (downscaled, grey-converted and inverted when its border is light). The ``held-out`` photographs are
never used here: the measure command reports on them. A bank whose inputs *are* photographs gets the photo
signals instead (pixel noise, no detail, a blank page), limited from the calibration photographs alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor

from kf_model.data.photos import offline_photos, open_photo
from kf_model.data.specs import InputSpec
from kf_model.errors import DataNotFoundError
from kf_model.serving.images import prepare_image, should_invert
from kf_model.serving.input_signals import SIGNALS, fit_limits, fit_photo_limits, image_signals, tensor_signals

DEFAULT_SIGNALS = ("border_colour", "border_level", "border_spread", "object_fill")  # "colour" would flag a red
# shoe on white: the colour that tells a photograph is the colour around the object, not of it
BANK_QUANTILE = 0.999  # each limit starts above all but 0.1 % of the bank's validation images ...
TOWARDS_PHOTOS = 0.5  # ... and moves half-way to the median calibration photograph
MIN_PHOTOS = 5
TOWARDS_ONE = 0.5  # a photo bank's limits: half-way from the highest calibration photograph to 1


def upload_signals(images: Iterable[Any], spec: InputSpec) -> list[dict[str, float]]:
    """The signals of PIL images read as the app reads an upload (prepared; for a grey bank, inverted when its
    border is light)."""
    out = []
    for image in images:
        prepared, _ = prepare_image(image)
        out.append(image_signals(prepared, should_invert(prepared, spec)))
    return out


def calibrate_signals(spec: InputSpec, validation_batches: Iterable[Tensor], *, photographs: bool = False,
                      names: Sequence[str] = DEFAULT_SIGNALS, bank_quantile: float = BANK_QUANTILE,
                      towards_photos: float = TOWARDS_PHOTOS) -> dict[str, Any]:
    """The ``input_signals`` block of a bank's familiarity config.

    ``photographs``: the bank's inputs are photographs (a 224-px ImageNet bank): the object signals do not apply,
    the photo signals do (:func:`calibrate_photo_signals`).
    """
    unknown = [name for name in names if name not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; known: {', '.join(SIGNALS)}")
    if photographs:
        return calibrate_photo_signals(spec)
    photos = calibration_photographs()
    photo_signals = upload_signals((open_photo(p) for p in photos), spec)
    bank_signals = [s for batch in validation_batches for s in tensor_signals(batch)]
    limits = fit_limits(bank_signals, photo_signals, names=names, bank_quantile=bank_quantile,
                        towards_photos=towards_photos)
    return {"applies": True, "limits": limits.to_json(), "bank_quantile": bank_quantile,
            "towards_photos": towards_photos, "validation_images": len(bank_signals),
            "calibration_photographs": [p.name for p in photos]}


def calibration_photographs() -> list[Any]:
    photos = offline_photos("photograph", "calibration")
    if len(photos) < MIN_PHOTOS:
        raise DataNotFoundError(f"only {len(photos)} offline calibration photographs are installed (need "
                                f"{MIN_PHOTOS}): install scikit-image, or the Debian wallpaper packages")
    return photos


def calibrate_photo_signals(spec: InputSpec, photos: Sequence[tuple[str, Any]] | None = None, *,
                            towards_one: float = TOWARDS_ONE) -> dict[str, Any]:
    """The ``input_signals`` block of a bank of photographs: limits of the photo signals (pixel noise, no detail,
    a blank page) fitted on its ``photos`` ((name, PIL image) pairs: its distillation photographs) alone, read
    as uploads; default: the offline calibration photographs (the photo bank's distillation photographs). The
    held-out ones are never used here."""
    if photos is None:
        photos = [(p.name, open_photo(p)) for p in calibration_photographs()]
    limits = fit_photo_limits(upload_signals((image for _, image in photos), spec), towards_one=towards_one)
    return {"applies": True, "inputs": "photographs", "limits": limits.to_json(), "towards_one": towards_one,
            "calibration_photographs": [name for name, _ in photos]}
