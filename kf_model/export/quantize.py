"""Static int8 quantization of an exported network (``export_onnx(..., quantize="int8")``), with onnxruntime's
tools: shape inference and graph optimisation (``quant_pre_process``), then ``quantize_static`` in the QDQ format
(QuantizeLinear/DequantizeLinear pairs around each quantized op, what onnxruntime's CPU int8 kernels fuse),
calibrated by MinMax over images the network was neither trained nor tested on.

The settings are onnxruntime's advice for x86 CPUs without VNNI, which also run correctly everywhere else:
uint8 activations, int8 per-channel weights, 7-bit weight range (``reduce_range``: no int16 saturation in the
AVX2 u8*s8 multiply-add).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from kf_model.errors import InvalidArgumentError, KFError

QUANTIZE_CHOICES = ("int8",)  # besides None: float32, as exported
CALIBRATION_BATCH = 16
MAX_CALIBRATION_IMAGES = 4096  # MinMax ranges settle long before; more only costs time
RANGE_TOLERANCE = 1e-3  # calibration pixels may stray this far outside [0, 1] (resampling overshoot, rounding)


def check_quantize(quantize: object, calibration: Tensor | None = None) -> str | None:
    """``quantize`` checked: None (float32) or ``"int8"`` (then ``calibration`` must be ``[N, C, H, W]``)."""
    if quantize is None:
        return None
    if not isinstance(quantize, str) or quantize not in QUANTIZE_CHOICES:
        raise InvalidArgumentError(f"quantize must be None or one of {', '.join(map(repr, QUANTIZE_CHOICES))}, "
                                   f"got {quantize!r}")
    if calibration is None or not isinstance(calibration, Tensor) or calibration.ndim != 4 or not len(calibration):
        raise InvalidArgumentError(f"quantize={quantize!r} needs calibration images: a [N, C, H, W] tensor in "
                                   "[0, 1] of held-out training images (kf_model.data.calibration)")
    check_calibration(calibration)
    return quantize


def check_calibration(calibration: Tensor) -> None:
    """The images MinMax calibrates on must be what the network reads: floats (fed as float32), finite, in [0, 1].
    uint8 pixels (0..255) calibrated ranges 255 times too wide, and the int8 model answered zeros for every image;
    a NaN made onnxruntime fail with a bare ``AssertionError: scale issue``. One pass over the images, once."""
    if not calibration.is_floating_point():
        hint = " (8-bit pixels: calibration.float() / 255)" if calibration.dtype == torch.uint8 else ""
        raise InvalidArgumentError(f"calibration images must be float32 in [0, 1], as FactorBank.preprocess makes "
                                   f"them, got {calibration.dtype}{hint}")
    used = calibration[:MAX_CALIBRATION_IMAGES]
    if not bool(torch.isfinite(used).all()):
        raise InvalidArgumentError("calibration images hold NaN or infinite values; pass finite images in [0, 1]")
    low, high = (float(v) for v in torch.aminmax(used))
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        hint = " (8-bit pixels? divide by 255)" if high > 2.0 else ""
        raise InvalidArgumentError(f"calibration images must be in [0, 1], as FactorBank.preprocess makes them, "
                                   f"got values from {low:g} to {high:g}{hint}")


class _Batches:
    """onnxruntime's CalibrationDataReader protocol (``get_next`` -> one input dict, then None) over a tensor."""

    def __init__(self, images: Tensor, batch: int = CALIBRATION_BATCH) -> None:
        array = images[:MAX_CALIBRATION_IMAGES].detach().to("cpu").float().contiguous().numpy()
        self._feeds = iter([{"image": array[i:i + batch]} for i in range(0, len(array), batch)])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> dict:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def quantize_int8(source: str | Path, target: str | Path, calibration: Tensor) -> Path:
    """``source`` (a float32 ONNX file) -> ``target`` (may be the same path): static QDQ int8."""
    try:
        from onnxruntime.quantization import (
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError as error:
        raise KFError(f"int8 quantization needs onnxruntime: pip install onnxruntime ({error})") from None
    source, target = Path(source), Path(target)
    prepared = source.with_name(f".{source.stem}.{os.getpid()}.prepared.onnx")
    staged = source.with_name(f".{source.stem}.{os.getpid()}.int8.onnx")
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(staged), _Batches(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True)
        os.replace(staged, target)
    finally:
        prepared.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
    return target
