"""Calibration images for int8 quantization (``export_onnx(..., quantize="int8")``): images a bank was neither
trained nor tested on, in the bank's input format.

- the built-in datasets (dSprites, Fashion-MNIST): the first images of the train split's validation carve-out
  (``validation_order``: every recipe holds out 5,000 of them from training; the test split is never used);
- any other bank with 3-channel input (photographs): the offline calibration photographs
  (``offline_photos("photograph", "calibration")``), never the held-out ones that measure agreement.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from kf_model.data import DATASET_NAMES, load_dataset
from kf_model.data.photos import offline_photos, open_photo
from kf_model.data.preprocess import image_to_tensor
from kf_model.data.specs import InputSpec
from kf_model.data.splits import validation_order
from kf_model.errors import DataNotFoundError, InvalidArgumentError

CALIBRATION_IMAGES = 256  # MinMax ranges of these small networks settle within a few hundred images
MAX_CALIBRATION_IMAGES = 4096


def calibration_images(dataset: str | None, input_spec: InputSpec, count: int = CALIBRATION_IMAGES, *,
                       root: str | os.PathLike | None = None) -> Tensor:
    """``[N, C, H, W]`` images in [0, 1] to calibrate a bank of ``dataset`` on (see the module docstring)."""
    if not isinstance(count, int) or not 1 <= count <= MAX_CALIBRATION_IMAGES:
        raise InvalidArgumentError(f"calibration count must be in [1, {MAX_CALIBRATION_IMAGES}], got {count!r}")
    if dataset in DATASET_NAMES:
        try:
            train = load_dataset(dataset, "train", root=root)
        except DataNotFoundError as error:  # one line for the app's export panel; the data's own message says how
            first = str(error).strip().splitlines()[0]
            raise DataNotFoundError(f"int8 calibration needs {dataset}'s training images, not found here: {first}"
                                    ) from error
        return train.get_batch(validation_order(len(train))[:count])[0].float()
    if input_spec.channels != 3:
        raise DataNotFoundError(f"no calibration images for a bank of {dataset or 'unnamed data'!r} with "
                                f"{input_spec.channels}-channel input: pass calibration=[N, C, H, W] images it was "
                                "not trained on")
    photos = offline_photos("photograph", "calibration")[:count]
    if not photos:
        raise DataNotFoundError("no calibration photographs are installed (make photo-deps); pass calibration="
                                "[N, 3, H, W] images the bank was not trained on")
    return torch.cat([image_to_tensor(open_photo(photo), input_spec) for photo in photos]).float()
