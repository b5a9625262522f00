"""Baselines and inputs of the sections: Gradio's floor row, a JPEG folder, FLOPs, the stacking variants.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from kf_model.bench.settings import COST, Row, check_target
from kf_model.bench.timing import percentile
from kf_model.models.passes import pass_length, weight_bytes

# ============================================================================= pieces

def floor_row(bank: str, tasks: int, times: dict[str, list[float]], requests: int) -> Row:
    """/predict's p50 over HTTP against what it may cost: the p50 of a no-op endpoint on the same path (upload,
    queue, event stream) plus twice the in-process prediction (target: ratio <= 1)."""
    value, floor, inside = (1000 * percentile(times[side], 50) for side in ("http", "floor", "in-process"))
    allowed = floor + 2 * inside
    return check_target(Row(5, f"/predict p50 vs Gradio's floor, {tasks} tasks, HTTP", bank, value, "ms", allowed,
                            "no-op endpoint p50 (same HTTP path) + 2x in-process predict", value / allowed, COST,
                            "ratio <= 1", note=f"floor p50 {floor:.1f} ms, in-process p50 {inside:.1f} ms; "
                                             f"{requests} requests per side, interleaved"))


def plateau_row(rss: list[tuple[int, float]], banks: str) -> Row:
    """Whether the app's memory levels off under a long mixed workload: its memory (``processes.app_memory_mb``)
    at the end over halfway (target: ratio <= 1.05, i.e. the second half grew it by at most 5 %); the series is in
    the note."""
    count, end = rss[-1]
    _, middle = min(rss, key=lambda point: abs(point[0] - count / 2))
    shown = rss[:: max(len(rss) // 5, 1)]
    series = ", ".join(f"{n:,}: {mb:.0f}" for n, mb in (shown if shown[-1] == rss[-1] else [*shown, rss[-1]]))
    return check_target(Row(5, f"memory plateau of the app's processes under a mixed workload (random task subsets), "
                               f"banks {banks}", None, end, "MB", middle, "memory halfway through", end / middle,
                            "memory at the end / halfway", "ratio <= 1.05",
                            note=f"{count:,} requests; MB after n requests: {series}"))


def write_jpeg_folder(folder: Path, classes: Sequence[str], per_class: int) -> Path:
    """An image-folder tree of photo-like 320x240 RGB JPEGs (smooth gradients plus noise), one folder a class."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (folder / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ramp = torch.linspace(0, 1, 320).view(1, 1, 320).expand(3, 240, 320)
            pixels = (0.5 * ramp + 0.5 * torch.rand(3, 240, 320, generator=generator)) * 255
            array = pixels.permute(1, 2, 0).to(torch.uint8).numpy()
            Image.fromarray(array).save(folder / name.replace("/", "-") / f"{c}-{i}.jpg", quality=85)
    return folder


def forward_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward pass, counted by torch's own counter (convolutions count their groups).

    The input asks for a gradient, so that every layer takes its aten path: the reordered oneDNN kernels that
    inference uses on small CPU batches (``models/folded.py``) are invisible to the counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model(x.detach().clone().requires_grad_(True))
    return counter.get_total_flops()


def passes_note(teacher: nn.Module, assembled: nn.Module, x: Tensor) -> str:
    """How many of ``x``'s images one pass of each side reads (``models.passes``), for a row's note."""
    batch, _, height, width = x.shape
    sides = [pass_length(batch, height, width, weight_bytes(network)) for network in (teacher, assembled)]
    return f"images per pass: teacher {sides[0]}, assembled {sides[1]} (models/passes.py)"


def randomize_batchnorm(module: nn.Module) -> None:
    """Fresh BN layers are identities in eval mode; random statistics make the exactness check meaningful."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)


def einsum_stack_logits(stack: nn.Module, x: Tensor, z_common: Tensor) -> dict[str, Tensor]:
    """``TSNStack.forward`` as it was before issue 6 (module encoder, einsum heads), to measure the change."""
    from kf_model.models import split_variational

    projected = torch.einsum("bks,kps->bkp", stack.encoder(x), stack.proj)
    z, _, _ = split_variational(projected, stack.variational, stack.training)
    logits = torch.einsum("bkc,knc->bkn", z_common.unsqueeze(1) + z, stack.head_weight) + stack.head_bias
    _aux = torch.einsum("bkc,knc->bkn", z, stack.aux_weight) + stack.aux_bias  # computed then, too
    return {t.name: logits[:, i, :t.num_classes] for i, t in enumerate(stack.tasks)}


def vmapped_tsns(tsns: Sequence[nn.Module]) -> Callable[[Tensor, Tensor], Tensor]:
    """The TSNs as one ``torch.func.vmap`` over their stacked parameters: [k, B, classes] logits."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(list(tsns))
    base = copy.deepcopy(tsns[0]).to("meta")

    def one(p: dict, b: dict, x: Tensor, z: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x, z)).logits

    batched = vmap(one, in_dims=(0, 0, None, None))
    return lambda x, z: batched(params, buffers, x, z)
