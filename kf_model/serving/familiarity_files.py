"""Checks on a bank's ``familiarity/`` files before they are trusted (they may come from any Hub repo).

A hostile or broken ``config.json`` / ``model.safetensors`` (a text ``flag_rate``, statistics of another
size than the network's features, NaN values) must never make every prediction fail, nor make an image look
familiar: each check here raises a :class:`~kf_model.errors.CorruptWeightsError` naming the file and the key,
and the registry then drops the statistics with that message (the app says it cannot tell).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kf_model.errors import CorruptWeightsError
from kf_model.serving.input_signals import SIGNALS

MAX_DIM = 4096  # a stats file claiming more feature dimensions than this is refused
MIN_REFERENCE = 10  # fewer reference distances cannot give a familiarity share
MAX_REFERENCE = 1_000_000
TENSOR_KEYS = ("mean", "precision", "reference")


def _number(config: Mapping[str, Any], key: str, where: str, *, low: float, high: float,
            default: float | None = None) -> float:
    """config[key] as a finite float in [low, high] (booleans and text refused); ``default`` when absent."""
    value = config.get(key, default)
    if value is None:
        raise CorruptWeightsError(f"{where}: {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptWeightsError(f"{where}: {key!r} must be a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value) or not low <= value <= high:
        raise CorruptWeightsError(f"{where}: {key!r} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_config(config: Any, where: str | Path, *, method: str) -> dict[str, Any]:
    """A parsed ``config.json`` -> its checked numbers (threshold, flag_rate, input_signals limits)."""
    where = str(where)
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{where}: config.json must hold a JSON object, got {type(config).__name__}")
    if config.get("method") != method:
        raise CorruptWeightsError(f"{where}: unknown familiarity method {config.get('method')!r:.60} "
                                  f"(this version reads {method!r})")
    checked = {"threshold": _number(config, "threshold", where, low=0.0, high=1e30),
               "flag_rate": _number(config, "flag_rate", where, low=1e-6, high=0.5, default=0.05)}
    if "dim" in config:
        checked["dim"] = int(_number(config, "dim", where, low=1, high=MAX_DIM))
    checked["input_signals"] = check_signal_config(config.get("input_signals"), where)
    return checked


def check_signal_config(block: Any, where: str) -> dict[str, Any] | None:
    """The ``input_signals`` block: None (absent), or {"applies": bool, "limits": {signal: number in [0, 1]}}."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise CorruptWeightsError(f"{where}: 'input_signals' must be a JSON object, got {type(block).__name__}")
    applies = block.get("applies", True)
    if not isinstance(applies, bool):
        raise CorruptWeightsError(f"{where}: 'input_signals.applies' must be true or false, got {applies!r:.40}")
    limits = block.get("limits", {})
    if not isinstance(limits, dict):
        raise CorruptWeightsError(f"{where}: 'input_signals.limits' must be a JSON object")
    unknown = [name for name in limits if name not in SIGNALS]
    if unknown:
        raise CorruptWeightsError(f"{where}: unknown input signal(s) {', '.join(map(repr, unknown[:5]))} "
                                  f"(known: {', '.join(SIGNALS)})")
    checked = {name: _number(limits, name, f"{where}: input_signals.limits", low=0.0, high=1.0) for name in limits}
    return {**block, "applies": applies, "limits": checked}


def check_tensors(tensors: Mapping[str, Tensor], where: str | Path, *, dim: int | None = None,
                  feature_dim: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(mean [D], precision [D, D], reference [N]) as float32, after checking keys, dtypes, shapes and that
    every value is finite; ``feature_dim``: the width of the CKN's pooled features, when known."""
    where = str(where)
    missing = [key for key in TENSOR_KEYS if key not in tensors]
    if missing:
        raise CorruptWeightsError(f"{where}: model.safetensors lacks {', '.join(missing)}")
    for key in TENSOR_KEYS:
        if not tensors[key].is_floating_point():
            raise CorruptWeightsError(f"{where}: {key!r} must hold floating-point numbers, got {tensors[key].dtype}")
    mean, precision, reference = (tensors[key].float() for key in TENSOR_KEYS)
    size = mean.numel()
    if mean.ndim != 1 or not 0 < size <= MAX_DIM:
        raise CorruptWeightsError(f"{where}: 'mean' must be a vector of 1 to {MAX_DIM} numbers, got shape "
                                  f"{tuple(mean.shape)}")
    if precision.shape != (size, size):
        raise CorruptWeightsError(f"{where}: 'precision' must be {size}x{size} (as 'mean'), got "
                                  f"{tuple(precision.shape)}")
    if reference.ndim != 1 or not MIN_REFERENCE <= reference.numel() <= MAX_REFERENCE:
        raise CorruptWeightsError(f"{where}: 'reference' must be a vector of {MIN_REFERENCE} to {MAX_REFERENCE:,} "
                                  f"distances, got shape {tuple(reference.shape)}")
    if dim is not None and dim != size:
        raise CorruptWeightsError(f"{where}: config.json says dim {dim}, the statistics have {size}")
    if feature_dim is not None and feature_dim != size:
        raise CorruptWeightsError(f"{where}: statistics of {size} features, but this bank's network gives "
                                  f"{feature_dim}")
    for key, value in zip(TENSOR_KEYS, (mean, precision, reference), strict=True):
        if not bool(torch.isfinite(value).all()):
            raise CorruptWeightsError(f"{where}: {key!r} holds NaN or infinite values")
    if bool((reference < 0).any()):
        raise CorruptWeightsError(f"{where}: 'reference' holds negative squared distances")
    return mean, precision, reference.sort().values
