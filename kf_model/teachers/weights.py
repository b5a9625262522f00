"""Teacher weights from outside: safetensors only, matched key by key, with messages that say what to do."""

from __future__ import annotations

import shlex
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from kf_model.errors import CorruptWeightsError, KFError, UnsafeWeightsError, name_list

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")


class WeightsMismatchError(KFError):
    """A weights file that does not fit the architecture: missing, unexpected or differently shaped tensors."""


def conversion_command(path: str | Path) -> str:
    """The one line that turns a *trusted* pickled state dict into safetensors (kf never unpickles)."""
    source = str(path)
    target = str(Path(source).with_suffix(".safetensors"))
    code = ("import torch; from safetensors.torch import save_file; "
            f"sd = torch.load({source!r}, map_location='cpu', weights_only=True); "
            "sd = sd.get('state_dict', sd.get('model', sd)); "
            f"save_file({{k: v.contiguous() for k, v in sd.items()}}, {target!r})")
    return f"python -c {shlex.quote(code)}"


def read_state_dict(path: str | Path, label: str = "teacher weights") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a pickle is refused unopened, with the command that converts it."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise _pickle_refusal(path, label)
    if not path.is_file():
        raise CorruptWeightsError(f"{label}: {path} does not exist")
    try:
        return load_file(path)
    except Exception as error:  # safetensors' own error type, a truncated header...
        if _looks_like_pickle(path):  # only once it is not safetensors: any first byte can start a valid header
            raise _pickle_refusal(path, label) from None
        raise CorruptWeightsError(f"{label}: cannot read {path} as safetensors: {error}") from error


def _pickle_refusal(path: Path, label: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{label}: {path} is a pickle-based checkpoint; kf loads .safetensors only and never unpickles. "
        f"If you trust the file, convert it once with:\n  {conversion_command(path)}")


def stored_shape(path: str | Path, key: str) -> list[int] | None:
    """One tensor's shape from a safetensors header (nothing else is read); None if absent or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.get_slice(key).get_shape()) if key in f.keys() else None
    except Exception:  # read_state_dict gives the proper message later
        return None


def _looks_like_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return head[:1] == b"\x80" or head[:2] == b"PK"  # pickle protocol 2+ / torch.save's zip container


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], label: str, *,
                 ignore: tuple[str, ...] = ()) -> None:
    """Strict, with a message listing missing / unexpected keys and shape mismatches (``ignore``: key prefixes
    the caller does not want, e.g. a classifier head it replaces)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore)}
    given = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    wrong = [f"{k} {list(given[k].shape)} (the architecture has {list(expected[k].shape)})"
             for k in sorted(expected.keys() & given.keys()) if given[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"missing {len(missing)}: {name_list(missing, 4)}" if missing else "",
                 f"unexpected {len(unexpected)}: {name_list(unexpected, 4)}" if unexpected else "",
                 f"different shapes: {'; '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
                 if wrong else ""]
        raise WeightsMismatchError(f"{label} do not fit the architecture: " + "; ".join(p for p in parts if p))
    model.load_state_dict(given, strict=not ignore)


# Classifier weights as timm and torchvision name them (fc, head, head.fc, classifier[.i], heads.head...).
HEAD_KEYS = ("fc.weight", "head.fc.weight", "head.weight", "classifier.weight", "last_linear.weight",
             "heads.head.weight", "classifier.1.weight", "classifier.2.weight", "classifier.3.weight",
             "classifier.6.weight")


def head_size(state: dict[str, torch.Tensor]) -> int | None:
    """Classes of a weights file's classifier, or None when no known classifier key is there."""
    for key in HEAD_KEYS:
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None
