"""A labelled grid of dataset samples, to check by eye what the networks will be fed."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import torch

from kf_model.errors import InvalidArgumentError
from kf_model.utils import writable_file

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what savefig writes, named by the file's suffix
MAX_PREVIEW_ITEMS = 256  # 32 rows of 8: about 7,000 x 1,200 pixels with dSprites' 5-line captions, drawn in seconds


def check_preview_out(out: str | Path, n: int) -> Path:
    """``--out`` and ``--n`` checked before any data is read: savefig would refuse a .txt only after the grid is
    drawn, and write ``DIR.png`` for a folder or a name without a suffix (the path printed being another)."""
    if not 1 <= n <= MAX_PREVIEW_ITEMS:
        raise InvalidArgumentError(f"--n must be between 1 and {MAX_PREVIEW_ITEMS}, got {n}")
    out = writable_file(out, "--out")
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise InvalidArgumentError(f"--out {out}: the file name must end in one of {', '.join(PREVIEW_SUFFIXES)}")
    return out


def captions(dataset, targets: torch.Tensor) -> list[str]:
    """One caption per item: the positive classes of one-vs-rest tasks, else one `task label` line per task."""
    if getattr(dataset, "one_vs_rest", False):
        return [", ".join(task.labels[1] for task, t in zip(dataset.tasks, row) if t == 1) or "(none)"
                for row in targets.tolist()]
    return ["\n".join(f"{task.name} {task.labels[t]}" for task, t in zip(dataset.tasks, row))
            for row in targets.tolist()]


def save_preview(dataset, out: str | Path, *, n: int = 32, seed: int = 0, title: str | None = None,
                 columns: int = 8) -> Path:
    """Save a grid of `n` seeded random samples of `dataset` (with `.tasks`) to the PNG `out`."""
    generator = torch.Generator().manual_seed(seed)
    items = torch.randperm(len(dataset), generator=generator)[:n].tolist()
    if hasattr(dataset, "get_batch"):
        images, targets = dataset.get_batch(items)
    else:
        images, targets = (torch.stack(column) for column in zip(*(dataset[i] for i in items)))
    texts = captions(dataset, targets)
    lines = max(text.count("\n") + 1 for text in texts)
    columns = min(columns, len(items))
    rows = math.ceil(len(items) / columns)
    cell_w, cell_h = 1.5, 1.5 + 0.14 * lines
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell_w, rows * cell_h + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, texts):
        picture = image.permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, -0.03, text, transform=ax.transAxes, ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title)
    height = fig.get_figheight()  # room for the title above and the last row's captions below
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.4 / height, bottom=(0.14 * lines + 0.05) / height,
                        hspace=0.14 * lines / 1.5 + 0.1, wspace=0.08)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
