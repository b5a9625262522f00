"""Where networks run: the device a name (or $KF_DEVICE) picks, its description, and the CUDA autocast dtype."""

from __future__ import annotations

import os

import torch

from kf_model.errors import InvalidArgumentError


def pick_device(name: str | None = None) -> torch.device:
    """``name``, else $KF_DEVICE, else "auto": CUDA when available, else CPU."""
    name = name or os.environ.get("KF_DEVICE") or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The device in words for the app: the GPU's name and autocast dtype, or the CPU's thread count."""
    if device.type == "cuda":
        try:
            return f"cuda ({torch.cuda.get_device_name(device)}, {autocast_dtype()} autocast)".replace(
                "torch.", "")
        except (RuntimeError, AssertionError):  # ZeroGPU: no device outside a GPU call
            return "cuda"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"


def autocast_dtype() -> torch.dtype:
    """The app's CUDA autocast dtype: bf16 where the GPU has it, else fp16 (the benchmark uses the same)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists on this machine, else a kf error naming what is: torch only
    fails later, with a RuntimeError or an AssertionError from deep inside the first ``.to()``."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"{str(device)[:40]!r} is not a device: use 'cpu' or 'cuda'") from None
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}
    if parsed.type in backend:
        module = backend[parsed.type]
        if module is None or not module.is_available():
            raise InvalidArgumentError(f"device {str(device)!r}: this machine has no {parsed.type.upper()} device; "
                                       "use 'cpu'")
        if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                                       "device(s)")
    elif parsed.type != "cpu":
        raise InvalidArgumentError(f"device {str(device)!r}: kf runs on 'cpu' or 'cuda'")
    return parsed
