"""An assembled network as one ONNX file: ``FactorBank.export_onnx(tasks, path)``.

The graph has one input, ``image`` ``[batch, C, H, W]`` float32 in ``[0, 1]`` (normalisation is inside, as in
every kf network), and one output per task, named after the task: ``[batch, classes]`` logits. The batch is
dynamic. The file's metadata records what a runtime outside Python needs to prepare images and read answers:
the input spec and each task's class names (``kf.input_spec``, ``kf.tasks`` as JSON), plus the CKN fingerprint.
It uses the torch.export-based exporter (the TorchScript one is deprecated), which needs the ``onnx`` and
``onnxscript`` packages. ``features=True`` adds one more output, ``features`` ``[batch, D]``: the CKN's pooled
stage features (what the app's familiarity check reads), so that the app can serve from the file alone.
``quantize="int8"`` rewrites the file with static QDQ int8 quantization (:mod:`kf_model.export.quantize`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import threading
from pathlib import Path

import torch
from torch import Tensor, nn

from kf_model.data.specs import InputSpec
from kf_model.errors import KFError, UnwritablePathError
from kf_model.export.quantize import check_quantize, quantize_int8
from kf_model.models.factor import AssembledNetwork

OPSET = 18
MAX_BATCH = 65_536
_EXPORT_LOCK = threading.RLock()  # one export at a time in this process (export_onnx holds it around export_graph)


FEATURES_OUTPUT = "features"  # features=True: the CKN's pooled stage features, concatenated


class _TaskOutputs(nn.Module):
    """ONNX outputs are positional: the task dict as a tuple in the network's task order (then the features)."""

    def __init__(self, network: AssembledNetwork, features: bool = False) -> None:
        super().__init__()
        self.network = network
        self.features = features
        self.names = [t.name for t in network.tasks] + ([FEATURES_OUTPUT] if features else [])

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if not self.features:
            logits = self.network(image)
            return tuple(logits[name] for name in self.names)
        output = self.network(image, return_features=True)
        pooled = torch.cat([f.float() for f in output.ckn.features], dim=1)
        return (*(output.tsn.logits[name] for name in self.names[:-1]), pooled)


def export_onnx(network: AssembledNetwork, path: str | Path, input_spec: InputSpec, *,
                ckn_fingerprint: str = "", opset: int = OPSET, features: bool = False,
                quantize: str | None = None, calibration: Tensor | None = None) -> Path:
    """Write ``network`` (eval mode, on the CPU) to ``path``; returns the path.

    ``quantize="int8"`` needs ``calibration``: ``[N, C, H, W]`` images in [0, 1] that the network was not
    trained or tested on (:func:`kf_model.data.calibration.calibration_images`)."""
    quantize = check_quantize(quantize, calibration)
    expected = (input_spec.channels, input_spec.size, input_spec.size)
    if quantize and tuple(calibration.shape[1:]) != expected:
        raise KFError(f"calibration images of shape {tuple(calibration.shape[1:])} do not fit this network's "
                      f"input {expected}")
    try:
        import onnx  # noqa: F401  (the exporter needs both; a clear message beats its ImportError)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise KFError(f"ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript "
                      f"({error})") from None
    path = writable_file(path)
    with _EXPORT_LOCK:  # torch.onnx.export is not thread-safe (its exporter state and redirect_stdout are global)
        wrapper = _TaskOutputs(copy.deepcopy(network), features).to("cpu").eval()  # a copy: the bank's stay put
        wrapper.network.tsns.loop_from_pixels = None  # one static graph: grouped kernels at every batch size
        example = torch.rand(2, input_spec.channels, input_spec.size, input_spec.size)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.partial.onnx")
        try:
            export_graph(wrapper, example, partial, wrapper.names, opset)
            if quantize == "int8":
                quantize_int8(partial, partial, calibration)
            _write_metadata(partial, onnx_metadata(network, input_spec, ckn_fingerprint, quantize))
            os.replace(partial, path)  # the file appears whole, or not at all
        except OSError as error:
            raise UnwritablePathError(f"cannot write the ONNX file {path}: {error.strerror or error}") from None
        finally:
            partial.unlink(missing_ok=True)
    return path


def export_graph(module: nn.Module, example: Tensor, path: Path, output_names: list[str], opset: int = OPSET) -> None:
    """``module`` (eval, on the CPU; image -> tuple of outputs) as an ONNX file at ``path`` for any batch size up to
    ``MAX_BATCH``: the one call of torch's exporter, for a bank's network and for the bench's teacher."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _EXPORT_LOCK, torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each pass
        torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=output_names,
                          dynamic_shapes=({0: batch},), dynamo=True, opset_version=opset, external_data=False)


def writable_file(path: str | Path) -> Path:
    """``path`` checked as a file to write: its folder is made; a folder or an unwritable place is refused by
    name (a KFError, not an IsADirectoryError from deep inside the exporter). Only a ``.onnx`` name: an existing
    file of another kind (a bank's own model.safetensors) is never replaced by an export."""
    if not isinstance(path, str | os.PathLike) or not str(path).strip():
        raise UnwritablePathError(f"export_onnx needs a file path such as model.onnx, got {str(path)[:80]!r}")
    path = Path(path)
    if path.is_dir():
        raise UnwritablePathError(f"cannot write the ONNX file {path}: it is a folder; give a file name "
                                  "such as model.onnx")
    if path.suffix.lower() != ".onnx":
        raise UnwritablePathError(f"cannot write the ONNX file {path}: its name must end in .onnx")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UnwritablePathError(f"cannot write the ONNX file {path}: cannot make its folder "
                                  f"({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):
        raise UnwritablePathError(f"cannot write the ONNX file {path}: its folder is not writable")
    return path


def onnx_metadata(network: AssembledNetwork, input_spec: InputSpec, ckn_fingerprint: str = "",
                  quantize: str | None = None) -> dict[str, str]:
    return {"kf.input_spec": json.dumps(input_spec.to_dict()),
            "kf.tasks": json.dumps([t.to_dict() for t in network.tasks]),
            "kf.ckn_fingerprint": ckn_fingerprint,
            "kf.quantization": quantize or "none",
            "kf.input": "image: float32 [batch, C, H, W] in [0, 1], resized and padded to square as "
                        "FactorBank.preprocess does; outputs: one [batch, classes] logits tensor per task"}


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
