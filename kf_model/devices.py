"""Where networks run: the device a name (or $KF_DEVICE) picks, its description, and the CUDA autocast dtype."""

from __future__ import annotations

import os

import torch


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
    return f"{device.type} ({torch.get_num_threads()} threads)"


def autocast_dtype() -> torch.dtype:
    """The app's CUDA autocast dtype: bf16 where the GPU has it, else fp16 (the benchmark uses the same)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
