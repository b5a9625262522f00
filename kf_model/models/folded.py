"""Inference-only forms of kf networks: the same function in fewer, cheaper kernels (``FactorBank.assemble``).

At batch 1 these small networks cost kernel launches, not arithmetic, so assembly for inference removes kernels:

- BatchNorm folds into the convolution before it: in a fused TSN stack (``TSNStack.fuse_for_inference``) and in a
  copy of the CKN (``fold_for_inference``; the bank's CKN is untouched), a timm or ResNet trunk's through its
  traced graph (``models/traced_folding.py``);
- the input adapter's constant part (the mean shift and the coordinate maps of CoordConv) goes through the first
  convolution once per image size, as a cached map added to ``conv(x / std)`` (``AdaptedConv``, ``first_layer``):
  the first layer becomes one convolution of the raw image (one channel, not three), one add and one ReLU;
- on the CPU a TSN stack's later grouped convolutions run as oneDNN kernels with their weights reordered once
  (torch's private ``mkldnn._convolution_pointwise``, which inductor uses, behind ``models/onednn.py`` with a
  fallback) and the ReLU fused: a plain ``conv2d`` reorders
  the weights on every call, which is most of a batch-1 call's time. Their outputs are channels-last; so are
  larger CPU batches, from the first convolution on (``channels_last``): a cnn CKN took 0.75-0.8x its NCHW time
  at batch 256.

Convolution is linear and zero padding pads the adapted input, so ``conv(adapt(x)) = conv(x / std) +
conv(adapt(0))`` up to float rounding (``tests/test_networks.py`` checks 1e-5 against the separate factor
networks). The derived tensors live in a cache keyed by device, dtype and image size; a copy of the network starts
with an empty one (oneDNN's reordered weights cannot be copied), and the folded weights never change after fusing.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import kf_model.models.onednn as onednn
from kf_model.models.layers import InputAdapter, global_pool
from kf_model.models.traced_folding import fold_traced_batchnorms

ONEDNN_UP_TO_PIXELS = 2**16  # batch x H x W up to which reordered oneDNN kernels run (models/stacking.py)
GROUP_CHANNELS = 8  # a TSN stack's later layers put tasks together in groups of up to this many inputs (regrouped)


class DerivedCache:
    """Tensors computed from a folded network's weights, rebuilt on demand; never copied, never saved."""

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], Any] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> DerivedCache:
        return DerivedCache()

    def get(self, key: tuple[Any, ...], build: Any) -> Any:
        """The entry ``key``, built on first use as plain float tensors: outside autocast and inference mode (an
        inference tensor could not be used later by a call that records gradients)."""
        value = self.entries.get(key)
        if value is None:
            device_type = key[1].type if len(key) > 1 and isinstance(key[1], torch.device) else "cpu"
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(device_type, enabled=False):
                value = self.entries[key] = build()
        return value


def onednn_available() -> bool:
    """Whether the fused oneDNN kernels run here (every private op they use checked: ``models/onednn.py``)."""
    return onednn.available()


def _convs(layers: nn.Sequential) -> list[nn.Conv2d]:
    return [layer[0] for layer in layers]


def first_layer_parts(adapter: InputAdapter, conv: nn.Conv2d, height: int, width: int
                      ) -> tuple[Tensor, Tensor]:
    """(weight for the raw image channels, [1, out, h', w'] map of the adapter's constant part and the bias)."""
    c = adapter.in_channels
    scale = adapter.std.to(conv.weight.dtype).reshape(-1).expand(c)
    weight = (conv.weight[:, :c] / scale.view(1, c, 1, 1)).contiguous()
    constant = adapter(torch.zeros(1, c, height, width, device=conv.weight.device, dtype=conv.weight.dtype))
    return weight, conv(constant)


def adapted_conv(adapter: InputAdapter, conv: nn.Conv2d, x: Tensor, cache: DerivedCache,
                 onednn: bool | None = None) -> Tensor:
    """conv(adapt(x)) as conv(x / std) + the cached constant map (computed afresh while being exported);
    ``onednn``: ``onednn_path(x)`` when the caller knows it already."""
    adapter.check(x)
    h, w = int(x.shape[2]), int(x.shape[3])  # ints while traced too (torch.jit.trace makes sizes tensors)
    if torch.compiler.is_compiling():
        weight, constant = first_layer_parts(adapter, conv, h, w)
        return F.conv2d(x, weight, None, conv.stride, conv.padding) + constant
    onednn = onednn_path(x) if onednn is None else onednn
    tracing = torch.jit.is_tracing()  # torch.jit.trace: the map a constant of the trace, for one image size
    layout = torch.channels_last if x.is_cpu and not onednn and not tracing else torch.contiguous_format
    weight, constant = cache.get(("first", x.device, x.dtype, h, w, layout), lambda: _first_layer_parts_laid_out(
        adapter, conv, h, w, layout))
    if layout == torch.channels_last:
        x = channels_last(x)  # then every later layer runs channels-last, faster on the CPU from batch 16 or so
    return F.conv2d(x, weight, None, conv.stride, conv.padding).add_(constant)


def _first_layer_parts_laid_out(adapter: InputAdapter, conv: nn.Conv2d, height: int, width: int,
                                layout: torch.memory_format) -> tuple[Tensor, Tensor]:
    """``first_layer_parts`` with the constant map in the layout of the convolution's output: adding an NCHW map
    to a channels-last batch took 5-8x the time of the same add in one layout (batch 256: 6.1 vs 0.9 ms for
    dSprites' CKN, 1.9 vs 0.24 ms for its TSN stack's first layer)."""
    weight, constant = first_layer_parts(adapter, conv, height, width)
    return weight, constant.contiguous(memory_format=layout)


def channels_last(x: Tensor) -> Tensor:
    """``x`` laid out channels-last. A one-channel image is both layouts at once and torch reads it as NCHW, so it
    is restrided instead (a view: no copy)."""
    if x.shape[1] == 1:
        b, _, h, w = x.shape
        return x.reshape(b, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def first_layer(adapter: InputAdapter, layers: nn.Sequential, x: Tensor, cache: DerivedCache,
                onednn: bool | None = None) -> Tensor:
    """ReLU(conv(adapt(x))) of a TSN stack's first layer through the cached constant map."""
    return adapted_conv(adapter, layers[0][0], x, cache, onednn).relu_()


class AdaptedConv(nn.Module):
    """A trunk's input adapter and first convolution as one: conv(x / std) + a cached map (see the module docstring).
    It takes the adapter's place; the convolution leaves its own."""

    def __init__(self, adapter: InputAdapter, conv: nn.Conv2d) -> None:
        super().__init__()
        self.adapter = adapter
        self.conv = conv
        self._derived = DerivedCache()

    def forward(self, x: Tensor) -> Tensor:
        return adapted_conv(self.adapter, self.conv, x, self._derived)


class BoundEncoder:
    """A fused TSN stack's encoder on the "onednn" path, bound once for one image size and torch thread count: the
    first layer's weight and constant map, the later layers as one chain of oneDNN kernels with their tasks
    regrouped (``onednn.bound_conv_relu``). At batch 1 the Python between the kernels (checks, cache keys, argument
    lists) cost about as much as the kernels: bound this way (and the trunks' ``ConvReLU`` too), the assembled
    network took 1.32 -> 1.25-1.26x the time of the teacher with the same rewrites on dSprites, 1.22 -> 1.15-1.17x
    on Fashion-MNIST (batch 1, interleaved as the bench does, thread CPU time)."""

    def __init__(self, adapter: InputAdapter, layers: nn.Sequential, height: int, width: int) -> None:
        conv = layers[0][0]
        self.adapter, self.stride, self.padding = adapter, conv.stride, conv.padding
        self.weight, self.constant = first_layer_parts(adapter, conv, height, width)
        self.later = onednn.bound_conv_relu([regrouped(conv) for conv in _convs(layers)[1:]])

    def first(self, x: Tensor) -> Tensor:
        """ReLU(conv(adapt(x))) of the first layer, NCHW (as ``first_layer`` on this path)."""
        self.adapter.check(x)
        return F.conv2d(x, self.weight, None, self.stride, self.padding).add_(self.constant).relu_()

    def pooled(self, h: Tensor) -> Tensor:
        """[B, k * s]: the later layers on the first one's output, pooled."""
        return global_pool(self.later(h))


def later_layers(layers: nn.Sequential, h: Tensor, cache: DerivedCache,
                 task: tuple[int, int] | None = None) -> Tensor:
    """The grouped layers after the first as conv2d + ReLU, each with its tasks regrouped (``regrouped``); with
    ``task`` = (k, i) only task i's layers, on its slice of the first layer's channels (views of the same
    weights)."""
    for i, conv in enumerate(_convs(layers)[1:], start=1):
        if task is not None:
            k, t = task
            bias = conv.bias.chunk(k)[t] if conv.bias is not None else None
            h = F.conv2d(h, conv.weight.chunk(k)[t], bias, conv.stride, conv.padding, conv.dilation).relu_()
            continue
        if h.device.type == "cpu" and not torch.jit.is_tracing():  # measured there only; not built into a trace
            conv = cache.get(("regrouped", h.device, h.dtype, i), lambda conv=conv: regrouped(conv))
        h = F.conv2d(h, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups).relu_()
    return h


def tasks_per_group(in_per_task: int, tasks: int) -> int:
    """The most tasks (a divisor of ``tasks``) whose inputs together stay within ``GROUP_CHANNELS``; at least 1."""
    return max(m for m in range(1, tasks + 1) if tasks % m == 0 and (m == 1 or m * in_per_task <= GROUP_CHANNELS))


def regrouped(conv: nn.Conv2d) -> nn.Conv2d:
    """The same grouped convolution with ``tasks_per_group`` tasks per group, block-diagonal inside a group (zeros
    between tasks: the same function up to float rounding). oneDNN's grouped kernels are slow on groups of fewer
    than 8 input channels: Fashion-MNIST's 10 TSNs' second layer (4 -> 8 channels per task) ran in 0.5-0.8x the
    time as 5 groups of two tasks, at batch 16 to 256 (2-core CPU, one thread); about the same at batch 1."""
    k, in_per_task = conv.groups, conv.in_channels // conv.groups
    m = tasks_per_group(in_per_task, k)
    if m == 1:
        return conv
    out_per_task = conv.out_channels // k
    wider = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, groups=k // m, bias=conv.bias is not None)
    wider = wider.to(conv.weight.device, conv.weight.dtype)
    wider.weight.zero_()
    for t in range(k):
        start = (t % m) * in_per_task
        wider.weight[t * out_per_task:(t + 1) * out_per_task, start:start + in_per_task] = \
            conv.weight[t * out_per_task:(t + 1) * out_per_task]
    if conv.bias is not None:
        wider.bias.copy_(conv.bias)
    return wider.requires_grad_(False).eval()


class ConvReLU(nn.Module):
    """ReLU(conv(x)) of a folded trunk: one oneDNN kernel with the weights reordered once on the CPU for small
    batches (as a TSN stack's "onednn" path), ``conv2d`` + ReLU otherwise. The reordered weight is kept per torch
    thread count: one packed while torch ran 2 threads and then used with 1 (the app warms its banks up before it
    sets KF_TORCH_THREADS) cost 7x the CPU time per call (dSprites, batch 1: 21 ms instead of 3.1 ms of thread CPU
    time per forward pass)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self._derived = DerivedCache()

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if onednn_path(x):  # the reordered weight is kept per torch thread count (see the class docstring)
            key = ("onednn", x.device, torch.get_num_threads())
            return self._derived.get(key, lambda: onednn.bound_conv_relu([conv]))(x)
        return conv(x).relu_()


def onednn_path(x: Tensor) -> bool:
    """Whether a batch runs as reordered oneDNN kernels: CPU, float32, no autocast, no gradient to record, not
    being exported (checked first: an export must not see a condition on its dynamic batch size), at most
    ``ONEDNN_UP_TO_PIXELS`` (see ``models/stacking.py``)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not x.is_cpu or x.dtype != torch.float32:
        return False  # the cheapest checks first: every conv + ReLU of a trunk asks (4.6 -> ~2 us a call)
    return (x.numel() <= ONEDNN_UP_TO_PIXELS * x.shape[1] and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.is_autocast_enabled("cpu") and onednn_available())


def _foldable_pairs(module: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(sequential, index) of every Conv2d directly followed by a BatchNorm2d of its width inside a Sequential."""
    pairs = []
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            pairs += [(parent, i) for i, (a, b) in enumerate(itertools.pairwise(parent))
                      if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
                      and a.out_channels == b.num_features]
    return pairs


def fold_for_inference(module: nn.Module) -> nn.Module:
    """An inference copy of ``module``: every BatchNorm folded into the convolution before it, a cnn trunk's
    adapter and first convolution made one ``AdaptedConv``, every other conv + ReLU one ``ConvReLU``. Where some
    BatchNorm is not in a Sequential right after its convolution (a ResNet's blocks, timm), the pairs come from the
    traced graph instead (:mod:`kf_model.models.traced_folding`). ``module`` itself when nothing folds. The
    original is never modified."""
    pairs = _foldable_pairs(module)
    batchnorms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if not batchnorms:
        return module
    folded = copy.deepcopy(module).eval()
    if not pairs or len(pairs) != batchnorms:
        return folded if fold_traced_batchnorms(folded) else module
    with torch.no_grad():
        for parent, i in reversed(_foldable_pairs(folded)):  # from the end: deleting shifts what follows
            parent[i] = fuse_conv_bn_eval(parent[i], parent[i + 1])
            del parent[i + 1]
    for trunk in folded.modules():  # a cnn trunk: its adapter and first convolution become one AdaptedConv
        if isinstance(getattr(trunk, "adapter", None), InputAdapter) and isinstance(getattr(trunk, "stages", None),
                                                                                   nn.ModuleList):
            first = trunk.stages[0][0]
            if isinstance(first, nn.Sequential) and isinstance(first[0], nn.Conv2d):
                trunk.adapter = AdaptedConv(trunk.adapter, first[0])
                del first[0]
    for parent in list(folded.modules()):  # conv + ReLU pairs: one kernel each
        if isinstance(parent, nn.Sequential):
            for i in reversed(range(len(parent) - 1)):
                if isinstance(parent[i], nn.Conv2d) and isinstance(parent[i + 1], nn.ReLU):
                    parent[i] = ConvReLU(parent[i])
                    del parent[i + 1]
    return folded
