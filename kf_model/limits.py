"""Upper bounds on everything a config or a manifest from outside can ask kf to build.

A bank from the Hub is data: its ``config.json`` files decide widths, depths and loops, and its manifest
decides task counts and the input size. Each value is checked against these limits before any network is
built, so a hostile or broken bank is refused in milliseconds instead of holding memory and CPU for
minutes. The limits come from what kf trains, with wide headroom:

================================  =========  ================================================================
limit                             value      what kf trains today
================================  =========  ================================================================
``MAX_TASKS``                     4,096      10 tasks (Fashion-MNIST one-vs-rest); ImageNet-1k would be 1,000
``MAX_CLASSES`` (per task)        32,768     40 (dSprites orientation); ImageNet-21k has 21,841
``MAX_TASK_NAME``                 64 chars   11 ("ankle_boot")
``MAX_TEXT`` (labels, lines)      500 chars  about 60
``MAX_INPUT_SIZE`` (pixels)       1,024      28 and 64; timm ImageNet models take 224-512
``MAX_WIDTH`` (channels)          4,096      up to 512 (ResNet-18); ResNet-50 ends at 2,048
``MAX_STAGES`` (cnn backbone)     8          4
``MAX_ENCODER_LAYERS`` (TSN)      8          3
``MAX_STRIDE``                    4          2
``MAX_PARAMETERS`` (one module)   200 M      0.3 M (bundled banks); ResNet-50 has 25.6 M
``MAX_IMAGE_PIXELS`` (an image)   40 M       28x28 to 640x480; a 12-megapixel phone photo (the app's limit too)
``MAX_MANIFEST_BYTES``            4 MiB      about 10 KB; 21,841 ImageNet-21k labels take about 0.5 MB
``MAX_LABELS`` (all tasks)        100,000    50 (dSprites); ImageNet-1k one-vs-rest: 2,000; 21k K-way: 21,841
``MAX_JSON_BYTES`` (other JSON)   16 MiB     results.json about 20 KB
``MAX_JSON_DEPTH``                64         5
================================  =========  ================================================================

The checks raise :class:`~kf_model.errors.InvalidConfigError` naming the key, the value and the limit;
:func:`read_json` bounds a JSON file's bytes before parsing and its nesting after (a deeply nested file would
otherwise raise RecursionError from deep inside the parser, or from whatever walks the result).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kf_model.errors import InvalidConfigError

MAX_TASKS = 4_096
MAX_CLASSES = 32_768
MAX_TASK_NAME = 64
MAX_TEXT = 500
MAX_INPUT_SIZE = 1_024
MAX_CHANNELS = 4  # grey, RGB, RGBA-like inputs
MAX_WIDTH = 4_096
MAX_STAGES = 8
MAX_ENCODER_LAYERS = 8
MAX_STRIDE = 4
MAX_PARAMETERS = 200_000_000
MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: any phone photo, far from a decompression bomb (Pillow stops at 178 MP)
MAX_TRAINING_IMAGE_PIXELS = 10 * MAX_IMAGE_PIXELS  # --max-image-pixels at most (training data only)
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_LABELS = 100_000
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 64


def check_int(key: str, value: Any, low: int, high: int) -> int:
    """``value`` must be a JSON integer (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidConfigError(f"{key} must be an integer, got {_short(value)}")
    if not low <= value <= high:
        raise InvalidConfigError(f"{key} must be between {low:,} and {high:,}, got {int(value):,}")
    return int(value)


def env_int(name: str, default: int, low: int, high: int) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset or empty), in ``[low, high]``: a
    setting of the app is refused in words at start, not by a ValueError from deep inside."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.lstrip("-").isdigit():
        raise InvalidConfigError(f"{name} must be a whole number from {low:,} to {high:,}, got {text[:40]!r}")
    return check_int(name, int(text), low, high)


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidConfigError(f"{key} must be true or false, got {value!r}")
    return value


def check_text(key: str, value: Any, max_length: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise InvalidConfigError(f"{key} must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidConfigError(f"{key} is {len(value):,} characters long; the limit is {max_length:,}")
    return value


def check_int_list(key: str, values: Any, low: int, high: int, max_length: int) -> list[int]:
    if not isinstance(values, list | tuple) or not 1 <= len(values) <= max_length:
        raise InvalidConfigError(f"{key} must be a list of 1 to {max_length} integers, got {_short(values)}")
    return [check_int(f"{key}[{i}]", v, low, high) for i, v in enumerate(values)]


def check_normalisation(key: str, values: Any, channels: int, *, positive: bool) -> list[float]:
    """Per-channel mean or std: 1 or ``channels`` finite numbers (std strictly positive)."""
    if not isinstance(values, list | tuple) or len(values) not in (1, channels):
        raise InvalidConfigError(f"{key} must be a list of 1 or {channels} numbers, got {_short(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (positive and v <= 0):
            kind = "positive finite numbers" if positive else "finite numbers"
            raise InvalidConfigError(f"{key}[{i}] must be one of {kind}, got {v!r}")
    return [float(v) for v in values]


def check_parameter_count(module: nn.Module, label: str) -> int:
    """Called on a module built on the ``meta`` device: its size is known before any memory is taken."""
    total = sum(p.numel() for p in module.parameters())
    if total > MAX_PARAMETERS:
        raise InvalidConfigError(f"{label} would have {total:,} parameters; kf loads at most {MAX_PARAMETERS:,}")
    return total


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              error: type[Exception] = InvalidConfigError) -> Any:
    """A JSON file from outside, bounded: its size is checked before it is read, its nesting after parsing.

    Raises ``error`` naming ``what`` (e.g. "the manifest /x/factors.json") for a file too big, unreadable, not
    UTF-8, not JSON or nested deeper than ``max_depth``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as cause:
        raise error(f"cannot read {what}: {cause.strerror or cause}") from None
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes; kf reads at most {max_bytes:,}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as cause:  # JSONDecodeError is a ValueError
        raise error(f"cannot read {what}: {cause}") from None
    except RecursionError:
        raise error(f"cannot read {what}: nested deeper than {max_depth} levels") from None
    if json_depth(data, max_depth) > max_depth:
        raise error(f"cannot read {what}: nested deeper than {max_depth} levels")
    return data


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar: 0), counted without recursion and stopping past ``limit``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


__all__: Sequence[str] = [
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_ENCODER_LAYERS",
    "MAX_IMAGE_PIXELS",
    "MAX_INPUT_SIZE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LABELS",
    "MAX_MANIFEST_BYTES",
    "MAX_PARAMETERS",
    "MAX_STAGES",
    "MAX_STRIDE",
    "MAX_TASKS",
    "MAX_TASK_NAME",
    "MAX_TEXT",
    "MAX_TRAINING_IMAGE_PIXELS",
    "MAX_WIDTH",
    "check_bool",
    "check_int",
    "check_int_list",
    "check_normalisation",
    "check_parameter_count",
    "check_text",
    "json_depth",
    "read_json",
]
