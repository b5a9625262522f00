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

from torch import Tensor

from kf_model.errors import InvalidArgumentError, KFError

QUANTIZE_CHOICES = ("int8",)  # besides None: float32, as exported
CALIBRATION_BATCH = 16
MAX_CALIBRATION_IMAGES = 4096  # MinMax ranges settle long before; more only costs time


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
    return quantize


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
