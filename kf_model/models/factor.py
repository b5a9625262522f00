"""Factor networks and their assembly.

Task i depends only on (CKN, TSN_i, head_i): adding or removing other factors never
changes its output (up to float rounding: stacked as groups of another count, its kernels may sum in
another order), so any subset of factors assembles into a multi-task network with no training. The
assembled network runs the CKN once and all chosen TSNs as one grouped network (``TSNStack``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from kf_model.data.specs import TaskSpec
from kf_model.errors import IncompatibleFactorsError
from kf_model.models.ckn import CKNOutput, CommonKnowledgeNetwork
from kf_model.models.folded import fold_for_inference
from kf_model.models.passes import in_passes
from kf_model.models.stacking import StackOutput, TSNStack
from kf_model.models.tsn import TaskSpecificNetwork


class FactorNetwork(nn.Module):
    """One factor: the shared CKN + one TSN and its head. ``forward`` gives that task's logits."""

    def __init__(self, ckn: CommonKnowledgeNetwork, tsn: TaskSpecificNetwork) -> None:
        super().__init__()
        if tsn.ckn_width != ckn.width:
            raise IncompatibleFactorsError(
                f"TSN {tsn.task.name!r} expects a CKN of width {tsn.ckn_width}, this CKN has {ckn.width}"
            )
        self.ckn = ckn
        self.tsn = tsn

    @property
    def task(self) -> TaskSpec:
        return self.tsn.task

    def forward(self, x: Tensor) -> Tensor:
        return self.tsn(x, self.ckn(x).z).logits


class AssembledOutput(NamedTuple):
    ckn: CKNOutput
    tsn: StackOutput


class AssembledNetwork(nn.Module):
    """CKN run once + any set of TSNs run as one stack: images -> {task: logits}.

    ``forward(x, return_features=True)`` also returns what the IMB objective needs, so
    the same module is what factorization trains (through DDP, which only sees ``forward``).
    ``for_inference=True`` (``FactorBank.assemble``) builds an inference-only network: BatchNorm folded into the
    TSNs' convolutions and into a copy of the CKN, the input adapter folded into the first convolutions
    (:mod:`kf_model.models.folded`); ``forward(x)`` then computes only the logits. ``folded_ckn``: that copy made
    once already (``fold_for_inference(ckn)``), for a server that assembles many task sets of one bank (a timm
    trunk takes ~0.3 s to fold); the networks then share it.
    """

    def __init__(self, ckn: CommonKnowledgeNetwork, tsns: Sequence[TaskSpecificNetwork],
                 for_inference: bool = False, folded_ckn: nn.Module | None = None) -> None:
        super().__init__()
        for tsn in tsns:
            FactorNetwork(ckn, tsn)  # validates widths
        if folded_ckn is None and for_inference:
            folded_ckn = fold_for_inference(ckn)  # a folded copy (the bank's own CKN when nothing folds)
        self.ckn = folded_ckn if for_inference else ckn
        self.tsns = TSNStack(tsns)
        if for_inference:
            self.eval()
            self.tsns.fuse_for_inference()

    @property
    def tasks(self) -> list[TaskSpec]:
        return list(self.tsns.tasks)

    def forward(self, x: Tensor, return_features: bool = False) -> dict[str, Tensor] | AssembledOutput:
        if not return_features:  # large images on the CPU: a few at a time (models/passes.py)
            return in_passes(self, x, self._logits)
        common = self.ckn(x)
        return AssembledOutput(common, self.tsns(x, common.z))

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        path = self.tsns.execution_path(x)
        if path != "onednn":  # large batches: the CKN first, its feature maps freed before the TSNs run
            return self.tsns.logits(x, self.ckn.common_feature(x))
        # small batches: the TSNs' first layer first, next to the CKN's: both are conv2d kernels reading the
        # image, and a conv2d run between oneDNN kernels slowed the next oneDNN kernels (batch 1, assembled /
        # teacher with the same rewrites, timed as the bench does: 1.305 -> 1.287 on dSprites, 1.241 -> 1.195
        # on Fashion-MNIST)
        started = self.tsns.start_encoding(x, path)
        return self.tsns.logits(started, self.ckn.common_feature(x))
