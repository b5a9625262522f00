"""One network per folder (``config.json`` + ``model.safetensors``), loaded strictly: the config is bounded and
counted on the meta device, the file's shapes checked from its header, before any memory is allocated.

Banks (``kf_model.bank``) and kf teachers (``kf_model.teachers``) are such folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from kf_model.errors import (
    CorruptWeightsError,
    InvalidConfigError,
    KFError,
    UnsafeWeightsError,
)
from kf_model.limits import check_parameter_count

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def save_module(module: nn.Module, folder: Path) -> None:
    """config.json (the module's __init__ arguments) + model.safetensors, and nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(module, str(folder / WEIGHTS_FILE))  # what the Hub mixin's save writes, through public API
    (folder / CONFIG_FILE).write_text(json.dumps(module.init_config, indent=2, sort_keys=True))


def load_module(cls: type[nn.Module], folder: Path, label: str) -> nn.Module:
    """Strictly load a CKN/TSN folder; refuse pickles, name the file that is broken."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise UnsafeWeightsError(
                f"{label}: only pickled weights ({', '.join(pickles)}) and no {WEIGHTS_FILE}; "
                "kf loads safetensors only and never unpickles files"
            )
        raise CorruptWeightsError(f"{label}: {weights} is missing (kf loads {WEIGHTS_FILE} files only)")
    config = folder / CONFIG_FILE
    try:
        kwargs = json.loads(config.read_text())  # the __init__ arguments, as PyTorchModelHubMixin stores them
        if not isinstance(kwargs, dict):
            raise CorruptWeightsError(f"{label}: {config} holds a JSON {type(kwargs).__name__}, not an object")
        with torch.device("meta"):  # no memory yet: configs are bounded (kf_model.limits), then counted
            skeleton = cls(**kwargs)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptWeightsError(f"{label}: cannot read {config}: {error}") from error
    except InvalidConfigError as error:
        raise type(error)(f"{label}: {config}: {error}") from None
    except KFError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CorruptWeightsError(f"{label}: {config} does not describe a {cls.__name__}: "
                                  f"{str(error)[:200]}") from error
    try:
        check_parameter_count(skeleton, f"{label}: {config}")
    except InvalidConfigError as error:
        raise type(error)(str(error)) from None
    _check_shapes(skeleton, weights, label)
    model = cls(**kwargs)
    try:
        load_model(model, weights, strict=True)
    except Exception as error:  # safetensors' own error type, OSError, missing/unexpected keys, shape mismatches
        raise CorruptWeightsError(f"{label}: cannot load {weights}: {error}") from error
    return model.eval()


def _check_shapes(skeleton: nn.Module, weights: Path, label: str) -> None:
    """Compare the config's tensor shapes with the file's header before anything is allocated or read."""
    try:
        with safe_open(weights, framework="pt") as f:
            stored = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as error:  # not a safetensors file, truncated header...
        raise CorruptWeightsError(f"{label}: cannot read {weights}: {error}") from error
    expected = {key: list(tensor.shape) for key, tensor in skeleton.state_dict().items()}
    if stored.keys() != expected.keys():
        missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
        raise CorruptWeightsError(f"{label}: {weights} does not match its config.json "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for key, shape in expected.items():
        if stored[key] != shape:
            raise CorruptWeightsError(f"{label}: {weights} does not match its config.json: {key} is {stored[key]} "
                                      f"in the file, {shape} in the config")
