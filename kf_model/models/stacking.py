"""k task-specific networks run as one network.

Running 10 tiny TSNs one after another costs 10 launches of every small kernel; the
same k encoders laid side by side as grouped convolutions cost one. The stacked
network computes exactly the function of the k separate TSNs (up to float rounding),
so factorization trains a ``TSNStack`` and assembly builds one from any chosen TSNs.

For inference, ``fuse_for_inference()`` folds each BatchNorm into its convolution (same function
up to float rounding, fewer kernels: the TSNs are dispatch-bound at batch 1); ``FactorBank.assemble``
returns networks fused that way, and a fused stack runs by one of three paths (``execution_path``; pixels =
batch x height x width). Measured on the 2-core CPU of the README's table, each path forced in turn through
``forced_path``, interleaved, best of 40-300 calls (5 at batch 1024), the shipped banks' stacks:

- "onednn" (CPU, float32, up to ``folded.ONEDNN_UP_TO_PIXELS`` = 2^16: 16 images of 64 px, 83 of 28 px): the
  first layer through a cached constant map and the later grouped layers as oneDNN kernels with weights reordered
  once (``models/folded.py``). Batch 1: 0.16 ms (dSprites) and 0.15 ms (Fashion-MNIST) for the encoder, against
  0.27 and 0.23 ms for the folded modules;
- "grouped" (above that, and on CUDA): the same first layer, then grouped ``conv2d``, channels-last on the CPU:
  plain kernels catch up with the reordered ones around 64 images of 64 px (1.87 vs 2.06 ms at batch 64,
  dSprites), and channels-last took 0.76-0.89x the time of NCHW at batch 256 (dSprites, Fashion-MNIST stacks);
- "per-task": the tasks one by one through views of the same weights. Chosen automatically only when
  ``loop_from_pixels`` is set (default: never). It was the rule for large CPU batches while the grouped path ran
  NCHW (grouped kernels had lost 1.9x at 256 images of 64 px); with channels-last grouped kernels, section 3's
  pinned-path rows and a quiet-machine check (median of 7, interleaved; 10 dSprites TSNs at batch 128/256/512:
  grouped 0.73/0.72/0.81x the per-task time; 5 dSprites TSNs 0.73/0.71/0.72x; 10 Fashion-MNIST TSNs
  0.50/0.64/0.69x) found the grouped path faster at every size, so it is kept only to measure (``forced_path``)
  and for a user who sets the threshold. Under heavy load from other processes the grouped path's time varied
  0.46-1.44x the loop's over six runs (a shared cache); the per-task pass 0.49-0.62x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from kf_model.data.specs import TaskSpec
from kf_model.errors import EmptySelectionError, FusedStackError, IncompatibleFactorsError, name_list
from kf_model.models.folded import BoundEncoder, DerivedCache, first_layer, later_layers, onednn_path
from kf_model.models.layers import global_pool
from kf_model.models.tsn import GroupedEncoder, TaskSpecificNetwork, split_variational

EXECUTION_PATHS = ("modules", "onednn", "grouped", "per-task")
_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: one scalar per layer, not per channel


class StackOutput(NamedTuple):
    logits: dict[str, Tensor]  # per task, head(z_c + z_i)
    aux_logits: dict[str, Tensor]  # per task, aux_head(z_i)
    z: Tensor  # [B, k, C]
    mu: Tensor | None  # [B, k, C] in variational mode
    logvar: Tensor | None


class StartedEncoding(NamedTuple):
    """A TSN stack's encoder after its first layer (``TSNStack.start_encoding``)."""

    path: str  # the execution path chosen for the batch
    h: Tensor  # the first layer's output, or the images on the "modules" path
    bound: BoundEncoder | None = None  # the "onednn" path's kernels


def check_stackable(tsns: Sequence[TaskSpecificNetwork]) -> None:
    """TSNs stack only if they share encoder architecture, CKN width, mode and CKN; names must differ."""
    if not tsns:
        raise EmptySelectionError("need at least one task-specific network")
    first = tsns[0]
    names = [t.task.name for t in tsns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise IncompatibleFactorsError(f"duplicate task(s) {name_list(twice)}: each task can be assembled once")
    for tsn in tsns[1:]:
        if tsn.ckn_fingerprint != first.ckn_fingerprint:
            raise IncompatibleFactorsError(
                f"TSN {tsn.task.name!r} was trained with CKN {tsn.ckn_fingerprint[:12] or '?'} but "
                f"{first.task.name!r} with CKN {first.ckn_fingerprint[:12] or '?'}: they come from different "
                "factorizations and cannot be assembled together"
            )
        same = (asdict(tsn.encoder_config) == asdict(first.encoder_config) and tsn.ckn_width == first.ckn_width
                and tsn.variational == first.variational)
        if not same:
            raise IncompatibleFactorsError(
                f"TSNs {first.task.name!r} and {tsn.task.name!r} have different architectures and cannot be stacked"
            )


class TSNStack(nn.Module):
    """k TSNs as one grouped network; build it from TSNs, get them back with ``unstack``."""

    def __init__(self, tsns: Sequence[TaskSpecificNetwork]) -> None:
        super().__init__()
        check_stackable(tsns)
        first = tsns[0]
        self.tasks: list[TaskSpec] = [t.task for t in tsns]
        self.encoder_config = first.encoder_config
        self.ckn_width = first.ckn_width
        self.ckn_fingerprint = first.ckn_fingerprint
        self.variational = first.variational
        self.fused = False
        self._derived = DerivedCache()  # what the fused path derives from the folded weights (models/folded.py)
        self.loop_from_pixels: int | None = None  # batch x pixels from which the CPU runs per task (None: never)
        self.forced_path: str | None = None  # one of EXECUTION_PATHS whatever the batch (to measure each)
        k, c = len(tsns), first.ckn_width
        reference = first.proj.weight
        self.encoder = GroupedEncoder(self.encoder_config, groups=k).to(reference.device, reference.dtype)
        with torch.no_grad():
            states = [t.encoder.state_dict() for t in tsns]
            self.encoder.load_state_dict({
                name: value if name.endswith(_COUNTER) else torch.cat([s[name] for s in states])
                for name, value in states[0].items()
            })
            max_classes = max(t.num_classes for t in self.tasks)
            self.proj = nn.Parameter(torch.stack([t.proj.weight.detach() for t in tsns]).clone())  # [k, P, s]
            self.head_weight = nn.Parameter(reference.new_zeros(k, max_classes, c))
            self.head_bias = nn.Parameter(reference.new_zeros(k, max_classes))
            self.aux_weight = nn.Parameter(reference.new_zeros(k, max_classes, c))
            self.aux_bias = nn.Parameter(reference.new_zeros(k, max_classes))
            for i, tsn in enumerate(tsns):
                n = tsn.task.num_classes
                self.head_weight[i, :n] = tsn.head.weight
                self.head_bias[i, :n] = tsn.head.bias
                self.aux_weight[i, :n] = tsn.aux_head.weight
                self.aux_bias[i, :n] = tsn.aux_head.bias
        self.train(first.training)

    def forward(self, x: Tensor, z_common: Tensor) -> StackOutput:
        return self.heads(self.encode(x), z_common)

    def execution_path(self, x: Tensor) -> str:
        """How ``encode`` runs this batch: "modules" (not fused, or being exported), "onednn" (CPU, float32: fused
        oneDNN kernels), "per-task" (CPU, a large batch) or "grouped" (grouped conv2d, e.g. on CUDA, and while
        ``torch.jit.trace`` records the network)."""
        if not self.fused or torch.compiler.is_compiling():
            return "modules"  # the encoder's input adapter checks the images
        self.encoder.adapter.check(x)  # before the shape or dtype is read: a 3-D tensor, an array, uint8 pixels...
        if torch.jit.is_tracing():  # torch.jit.trace: public ops only (the private oneDNN calls cannot be traced)
            return "grouped"
        if self.forced_path is not None:
            return self.forced_path
        limit = self.loop_from_pixels
        if x.device.type == "cpu" and limit is not None and x.shape[0] * x.shape[2] * x.shape[3] >= limit:
            return "per-task"
        return "onednn" if onednn_path(x) else "grouped"

    def encode(self, x: Tensor) -> Tensor:
        """[B, k, s] pooled features, by the ``execution_path`` that ``make bench`` section 3 found fastest."""
        return self.finish_encoding(self.start_encoding(x))

    def start_encoding(self, x: Tensor, path: str | None = None) -> StartedEncoding:
        """The first layer alone (the images themselves on the "modules" path); ``finish_encoding`` does the rest.
        An assembled network runs it before the CKN at small batches, next to the CKN's own first layer
        (``AssembledNetwork``); ``path``: ``execution_path(x)`` when the caller has it already."""
        path = self.execution_path(x) if path is None else path
        if path == "modules":
            return StartedEncoding(path, x)
        if path == "onednn":
            key = ("bound", torch.get_num_threads(), x.shape[2], x.shape[3])  # always CPU float32 here
            bound = self._derived.get(key, lambda: BoundEncoder(self.encoder.adapter, self.encoder.layers,
                                                                x.shape[2], x.shape[3]))
            return StartedEncoding(path, bound.first(x), bound)
        return StartedEncoding(path, first_layer(self.encoder.adapter, self.encoder.layers, x, self._derived, False))

    def finish_encoding(self, started: StartedEncoding) -> Tensor:
        """[B, k, s] pooled features from ``start_encoding``'s result."""
        path, h, bound = started
        if bound is not None:
            return bound.pooled(h).view(h.shape[0], len(self.tasks), self.encoder.width)
        if path == "modules":
            return self.encoder(h)
        layers = self.encoder.layers
        if path == "per-task":
            k = len(self.tasks)
            pooled = [global_pool(later_layers(layers, part, self._derived, (k, i)))
                      for i, part in enumerate(h.chunk(k, dim=1))]
            return torch.stack(pooled, dim=1)
        return global_pool(later_layers(layers, h, self._derived)).view(h.shape[0], len(self.tasks), self.encoder.width)

    def heads(self, features: Tensor, z_common: Tensor) -> StackOutput:
        """Pooled encoder features [B, k, s] + the CKN feature [B, C] -> every task's logits.

        Batched matrix products over the task axis (one kernel each, laid out [k, B, .]); ``einsum`` cost
        three times as much at batch 1 for its permutes and reshapes.
        """
        z, mu, logvar = self._task_features(features)  # [k, B, C] each
        logits = self._logits(z, z_common)
        aux = torch.baddbmm(self.aux_bias.unsqueeze(1), z, self.aux_weight.transpose(1, 2))
        per_sample = [None if t is None else t.transpose(0, 1) for t in (z, mu, logvar)]  # [B, k, C]
        return StackOutput(logits, self._per_task(aux), *per_sample)

    def logits(self, x: Tensor | StartedEncoding, z_common: Tensor) -> dict[str, Tensor]:
        """``forward(x, z_common).logits`` alone: no auxiliary heads, no per-sample views (the inference call);
        ``x`` the images or what ``start_encoding`` made of them."""
        features = self.finish_encoding(x if isinstance(x, StartedEncoding) else self.start_encoding(x))
        if not self.fused or torch.compiler.is_compiling():
            return self._logits(self._task_features(features)[0], z_common)
        return self.joint_heads(features, z_common)

    def joint_heads(self, features: Tensor, z_common: Tensor) -> dict[str, Tensor]:
        """A fused stack's logits from pooled features [B, k, s] and the CKN feature [B, C]: with no nonlinearity
        between W_i and head_i, all tasks are ``[z_c, f] @ [[H_i^T], blockdiag(W_i^T H_i^T)] + b``, one matrix
        product and a view per task (the weights are final once fused, so the products are formed once). As
        ``F.linear`` (the same time as two ``addmm``): oneDNN Graph fails on an ``addmm`` after a fused partition
        (``bench/graph_mode.py``)."""
        key = ("joint heads", features.device, features.dtype)
        weight, bias, names, sizes = self._derived.get(key, lambda: self._joint_operands(features.device,
                                                                                         features.dtype))
        logits = F.linear(torch.cat([z_common, features.reshape(features.shape[0], -1)], dim=1), weight, bias)
        return dict(zip(names, logits.split(sizes, dim=1), strict=True))

    def _joint_operands(self, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        """([H_i^T] stacked over blockdiag(W_i^T H_i^T), transposed: [N, C + k*s] for N = all tasks' classes;
        b [N]), formed in float64, then the tasks' names and class counts."""
        c = self.ckn_width
        heads = [self.head_weight[i, :t.num_classes].double() for i, t in enumerate(self.tasks)]
        through = torch.block_diag(*[self.proj[i, :c].double().T @ head.T for i, head in enumerate(heads)])
        weight = torch.cat([torch.cat(heads).T, through]).T
        bias = torch.cat([self.head_bias[i, :t.num_classes] for i, t in enumerate(self.tasks)])
        operands = [t.to(device, dtype).contiguous() for t in (weight, bias)]
        return (*operands, [t.name for t in self.tasks], [t.num_classes for t in self.tasks])

    def _task_features(self, features: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        projected = torch.bmm(features.transpose(0, 1), self.proj.transpose(1, 2))  # [k, B, P]
        return split_variational(projected, self.variational, self.training)

    def _logits(self, z: Tensor, z_common: Tensor) -> dict[str, Tensor]:
        """head_i(z_i + z_c) for every task: one batched product, then each task's own classes."""
        logits = torch.baddbmm(self.head_bias.unsqueeze(1), z + z_common, self.head_weight.transpose(1, 2))
        return self._per_task(logits)

    def _per_task(self, stacked: Tensor) -> dict[str, Tensor]:
        """[k, B, max classes] -> {task: [B, its classes]} (views)."""
        return {t.name: rows[:, :t.num_classes] for t, rows in zip(self.tasks, stacked.unbind(0), strict=True)}

    # ------------------------------------------------------------------ inference
    def fuse_for_inference(self) -> TSNStack:
        """Fold every BatchNorm into its convolution with the running statistics; the stack is inference-only after."""
        with torch.no_grad():
            for i, (conv, batchnorm, relu) in enumerate(list(self.encoder.layers)):
                self.encoder.layers[i] = nn.Sequential(fuse_conv_bn_eval(conv.eval(), batchnorm.eval()), relu)
        self.fused = True
        return self.eval()

    def train(self, mode: bool = True) -> TSNStack:
        if mode and self.fused:
            raise FusedStackError("this TSN stack has BatchNorm folded for inference; build a TSNStack from the "
                               "bank's TSNs to train")
        return super().train(mode)

    def pooled_features(self, x: Tensor) -> Tensor:
        """[B, k, s]: each TSN's pooled encoder feature, before W_i (used by disentanglement metrics)."""
        return self.encode(x)

    @torch.no_grad()
    def unstack(self, ckn_fingerprint: str | None = None) -> list[TaskSpecificNetwork]:
        """Per-task TSNs with this stack's weights (on CPU), optionally stamped with their CKN's fingerprint."""
        if self.fused:
            raise FusedStackError("a fused TSN stack cannot be split back into TSNs")
        fingerprint = self.ckn_fingerprint if ckn_fingerprint is None else ckn_fingerprint
        k = len(self.tasks)
        state = {name: value.detach().cpu() for name, value in self.encoder.state_dict().items()}
        tsns = []
        for i, task in enumerate(self.tasks):
            tsn = TaskSpecificNetwork(task.to_dict(), asdict(self.encoder_config), self.ckn_width,
                                      fingerprint, self.variational)
            tsn.encoder.load_state_dict({
                name: value if name.endswith(_COUNTER) else value.chunk(k)[i] for name, value in state.items()
            })
            n = task.num_classes
            tsn.proj.weight.copy_(self.proj[i])
            tsn.head.weight.copy_(self.head_weight[i, :n])
            tsn.head.bias.copy_(self.head_bias[i, :n])
            tsn.aux_head.weight.copy_(self.aux_weight[i, :n])
            tsn.aux_head.bias.copy_(self.aux_bias[i, :n])
            tsns.append(tsn.train(self.training))
        return tsns
