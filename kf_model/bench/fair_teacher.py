"""The teacher given the same inference rewrites as an assembled network: the fair baseline of section 1.

``FactorBank.assemble`` folds BatchNorm, runs oneDNN kernels with weights reordered once, lays large batches out
channels-last and computes only the logits, with all heads as one product. :class:`LogitsOnlyTeacher` gives the
teacher the same: its trunk through ``fold_for_inference`` (the very code that folds the CKN), only the last
stage pooled (``Teacher.forward`` pools every distilled stage for factorization), its heads as one ``F.linear``, and a
batch of large images in passes of a few (``models.passes``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kf_model.export.onnx import export_graph
from kf_model.models.folded import fold_for_inference
from kf_model.models.layers import global_pool
from kf_model.models.passes import in_passes
from kf_model.models.teacher import Teacher, one_vs_rest_logits


class LogitsOnlyTeacher(nn.Module):
    """images -> {task: logits}, the same function as ``teacher(x).logits`` (up to float rounding)."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        folded = fold_for_inference(teacher)
        self.backbone = folded.backbone
        self.names = [t.name for t in teacher.tasks]
        self.one_vs_rest = teacher.one_vs_rest
        with torch.no_grad():
            heads = [teacher.class_head] if teacher.one_vs_rest else list(teacher.heads.values())
            self.sizes = [head.out_features for head in heads]
            self.register_buffer("weight", torch.cat([h.weight for h in heads]).contiguous())
            self.register_buffer("bias", torch.cat([h.bias for h in heads]).contiguous())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return in_passes(self, x, self._logits)  # large images a few at a time, as an assembled network runs them

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        logits = F.linear(global_pool(self.backbone(x)[-1]), self.weight, self.bias)
        if self.one_vs_rest:
            binary = one_vs_rest_logits(logits)
            return {name: binary[:, i] for i, name in enumerate(self.names)}
        return dict(zip(self.names, logits.split(self.sizes, dim=1), strict=True))


class OutputsAsTuple(nn.Module):
    """A network's {task: logits} as a tuple: what the ONNX exporter takes as named outputs, and torch.jit.trace
    (``bench/graph_mode.py``); the network a submodule, so its weights are the traced module's own."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.network(x).values())


def export_teacher_onnx(teacher: LogitsOnlyTeacher, example: Tensor, path: Path) -> Path:
    """The rewritten teacher as an ONNX file, exported as ``FactorBank.export_onnx`` exports an assembled network
    (``export_graph``: any batch size): section 7 compares the two on onnxruntime."""
    export_graph(OutputsAsTuple(teacher).cpu().eval(), example.cpu(), path, list(teacher.names))
    return path
