"""A batch of large images inferred in passes of a few images: a CPU rewrite for networks with small weights.

At 224 px a batch of 32 makes feature maps of 100-170 MB per layer. Where the weights are small (EfficientNet-Lite0,
13 MB; a TSN stack, 1 MB), the time goes into streaming those maps through main memory: passes of two images
keep them in the cache. Where the weights are large (ResNet-18, 43 MB; ResNet-50, 90 MB) each pass reads them
again, and one pass is faster. Measured with one thread, sides interleaved, the photo bank at batch 32: its
assembled network 0.85 -> 0.53 s, its teacher (BatchNorm folded) 0.53-0.59 -> 0.41-0.44 s; EfficientNet-Lite0
alone 0.48 -> 0.39 s; ResNet-18 at batch 32 1.06 -> 1.25 s, ResNet-50 at batch 8 0.69 -> 0.74 s. Small images gain
nothing and pay a pass's dispatch (dSprites at 64 px, batch 256: 0.077 s in one pass, 0.085 s in passes of 32).

So passes only for large images, inferred on the CPU by a network whose weights fit in the cache; one pass for
everything else, for anything with gradients (training), and for a network being traced or exported (a pass
would be frozen into its graph). ``make bench`` section 8 gives its teachers the same rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

PASS_PIXELS = 2 * 224 * 224  # the pixels of one pass: two photo-sized images
LARGE_IMAGE_PIXELS = 112 * 112  # smaller images: one pass, whatever the batch
SMALL_WEIGHT_BYTES = 32 * 2**20  # networks with more weights than this: one pass (they outgrow the cache)


def pass_length(batch: int, height: int, width: int, weight_bytes: int) -> int:
    """Images per pass for a batch of ``batch`` images of ``height`` x ``width``, inferred on the CPU by a
    network of ``weight_bytes`` of weights."""
    if height * width < LARGE_IMAGE_PIXELS or weight_bytes > SMALL_WEIGHT_BYTES:
        return max(1, batch)
    return max(1, min(batch, PASS_PIXELS // (height * width)))


def weight_bytes(network: nn.Module) -> int:
    """The bytes of a network's parameters and buffers (its folded weights are either)."""
    return sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers()))


def _one_pass_only(x: Tensor) -> bool:
    """Whether ``x`` runs in one pass whatever its batch size (read before the batch size, which would fix an
    exported network's; small images first: a batch of 28-px images pays ~0.3 us for the whole check)."""
    return (x.ndim != 4 or x.shape[-1] * x.shape[-2] < LARGE_IMAGE_PIXELS or not x.is_cpu
            or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def images_per_pass(network: nn.Module, x: Tensor) -> int:
    """How many images of ``x`` ([B, C, H, W]) one pass of ``network`` reads."""
    batch = max(1, int(x.shape[0])) if x.ndim else 1
    if batch == 1 or _one_pass_only(x):
        return batch
    return pass_length(batch, int(x.shape[2]), int(x.shape[3]), weight_bytes(network))


def joined(outputs: list[Any]) -> Any:
    """The outputs of the passes as one batch's output: tensors concatenated along the batch, dicts, lists and
    (named) tuples item by item, anything else (None) as the first pass gave it."""
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.cat(outputs)
    if isinstance(first, dict):
        return {key: joined([out[key] for out in outputs]) for key in first}
    if isinstance(first, (list, tuple)):
        items = [joined([out[i] for out in outputs]) for i in range(len(first))]
        return type(first)._make(items) if hasattr(first, "_fields") else type(first)(items)
    return first


def in_passes(network: nn.Module, x: Tensor, forward: Callable[[Tensor], Any] | None = None,
              per_pass: int | None = None) -> Any:
    """``forward(x)`` (``network(x)`` by default) over ``x`` in passes of ``per_pass`` images
    (``images_per_pass(network, x)`` by default)."""
    forward = network if forward is None else forward
    if not isinstance(x, Tensor) or (per_pass is None and _one_pass_only(x)):  # a bad input: the network's own
        return forward(x)                                                      # check says what is wrong with it
    per_pass = images_per_pass(network, x) if per_pass is None else per_pass
    if x.ndim == 0 or x.shape[0] <= per_pass:
        return forward(x)
    return joined([forward(part) for part in x.split(per_pass)])
