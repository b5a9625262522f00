"""A network compiled whole for the CPU (TorchScript + oneDNN Graph), for section 1's untargeted rows: the one place
kf uses ``torch.jit`` beyond its tests.

Is the batch-1 gap between the assembled network and its equally rewritten teacher the framework's per-call cost
(Python around each kernel, oneDNN's ~30 us of set-up per convolution call)? Compiled whole, both networks run as
a few fused oneDNN partitions with no Python between them, so what remains is the extra kernels' own cost.
Measured before building the rows (2-core CPU, 1 thread, thread CPU time): both networks 1.4-2.2x faster, and the
ratio about the same (dSprites 1.24-1.27, Fashion-MNIST 1.03-1.12). Not used by the app: ``torch.jit.trace`` and
``freeze`` are deprecated (FutureWarning in torch 2.14); the photograph bank's graph was slower than its eager
network when the bench's other sides ran between its calls (25.7 vs 20.0 ms at batch 1); and a graph holds another
copy of the weights (notes kept with the experiment's branch, ``graph-mode``).

What the graph needs: oneDNN Graph fusion on while its first calls are profiled and optimized (warmed up without
it, a graph ran slower than the eager network); no ``aten::addmm`` after a fused partition (oneDNN Graph fails with
``vector::_M_range_check``: kf's heads are ``F.linear``); the network traceable (``models/folded.py`` and
``models/stacking.py`` run public ops while traced).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from kf_model.bench.fair_teacher import OutputsAsTuple

WARMUP_CALLS = 3  # TorchScript profiles two runs, then optimizes: the third runs the fused graph
_LOCK = threading.Lock()  # oneDNN Graph fusion is a process-wide switch


def compiled_whole(network: nn.Module, x: Tensor) -> Callable[[Tensor], dict[str, Tensor]] | None:
    """``network`` (images -> {task: logits}) traced for inputs shaped as ``x``, frozen, fused by oneDNN Graph and
    warmed up, as a function with the same outputs; None where torch cannot (a later torch without torch.jit)."""
    if not hasattr(torch.jit, "enable_onednn_fusion") or not torch.backends.mkldnn.is_available():
        return None
    with torch.no_grad():
        names = list(network(x))  # also fills the caches the graph takes as constants
        with _LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notices and the tracer's notes on shape checks
            before = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(True)
            try:
                graph = torch.jit.freeze(torch.jit.trace(OutputsAsTuple(network).eval(), x, check_trace=False))
                for _ in range(WARMUP_CALLS):
                    graph(x)
            except Exception:  # a torch whose torch.jit traces, freezes or fuses otherwise: the rows are skipped
                return None
            finally:
                torch.jit.enable_onednn_fusion(before)

    def run(images: Tensor) -> dict[str, Tensor]:
        return dict(zip(names, graph(images), strict=True))

    return run
