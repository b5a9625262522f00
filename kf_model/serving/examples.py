"""The example images of ``assets/examples/``: held-out test images with their true labels.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    KFError,
)
from kf_model.limits import read_json
from kf_model.utils import ASSETS_DIR, writable_folder

log = logging.getLogger(__name__)

EXAMPLES_DIR = ASSETS_DIR / "examples"
EXAMPLES_FILE = "examples.json"
PHOTO_EXAMPLES_FILE = "photos.json"  # the photo bank's held-out photographs (kf_model.serving.photo_examples)


@dataclass(frozen=True)
class Example:
    path: Path
    dataset: str
    labels: dict[str, str]  # true label per task
    caption: str
    inverted: bool = False
    reference: str | None = None  # "teacher": the labels are the teacher's answers, not a ground truth
    teacher_class: str | None = None

    def reference_text(self) -> str:
        """What a photo example is checked against: the teacher's groups (yes) and its top ImageNet class."""
        groups = [label for label in self.labels.values() if not label.startswith("not ")]
        said = ", ".join(f"**{g}**" for g in groups) if groups else "**none of the groups**"
        return (f"**The teacher's answer** (a reference, not a ground truth) for this held-out photo: {said}; "
                f"its top ImageNet class: {self.teacher_class or '?'}")


def load_examples(folder: str | os.PathLike = EXAMPLES_DIR) -> list[Example]:
    """The examples listed in ``<folder>/examples.json`` and ``photos.json`` whose files exist (none if absent)."""
    folder = Path(folder)
    examples = []
    for name in (EXAMPLES_FILE, PHOTO_EXAMPLES_FILE):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        for item in data.get("examples", []):
            path = folder / item["file"]
            if path.is_file():
                examples.append(Example(path, item["dataset"], dict(item["labels"]), item.get("caption", path.stem),
                                        bool(item.get("inverted", False)), item.get("reference"),
                                        item.get("teacher_class")))
    return examples


def _caption(dataset: str, tasks: Sequence[TaskSpec], targets: Sequence[int]) -> str:
    """A short caption for a thumbnail (all true labels are in the example's record)."""
    if dataset == "fashion-mnist":
        return next((t.labels[1] for t, y in zip(tasks, targets) if int(y) == 1), "?")
    labels = {t.name: t.labels[int(y)] for t, y in zip(tasks, targets)}
    return labels.get("shape", "?")


def listed_files(out: Path, listing: str, suffix: str) -> list[Path]:
    """The ``suffix`` files of ``out`` that an earlier run listed in ``out/listing`` ({"examples": [{"file"}]}): the
    only files an examples generator removes (the folder holds both generators' files, and maybe anyone's)."""
    listed = out / listing
    if not listed.is_file():
        return []
    try:
        records = read_json(listed, f"the examples file {listed}").get("examples", [])
    except (KFError, AttributeError):
        return []
    names = {r.get("file") for r in records if isinstance(r, dict)} if isinstance(records, list) else set()
    return [out / n for n in sorted(n for n in names if isinstance(n, str))
            if n.endswith(suffix) and Path(n).name == n and (out / n).is_file()]


def generate_examples(out_dir: str | os.PathLike = EXAMPLES_DIR, *, seed: int = 0, per_dataset: int | None = None,
                      fashion_root: str | os.PathLike | None = None) -> Path:
    """Render example PNGs from each dataset's TEST split + ``examples.json`` with their true labels.

    dSprites: 2 sprites of each shape; Fashion-MNIST: one image of each class. Each dataset also gets one
    "dark on white" variant (inverted, upscaled) to show the automatic inversion. Pixel-exact: a 64x64 or
    28x28 grey PNG read back gives exactly the dataset's tensor.
    """
    from kf_model.data import load_dataset

    out = writable_folder(out_dir, "--out")
    out.mkdir(parents=True, exist_ok=True)
    for old in listed_files(out, EXAMPLES_FILE, ".png"):
        old.unlink()
    generator = torch.Generator().manual_seed(seed)
    records: list[dict[str, Any]] = []
    for name in ("dsprites", "fashion-mnist"):
        try:
            dataset = load_dataset(name, "test", root=fashion_root if name == "fashion-mnist" else None)
        except KFError as error:
            log.warning("no examples for %s: %s", name, error)
            continue
        targets = dataset.targets
        order = torch.randperm(len(dataset), generator=generator)
        if name == "dsprites":  # 2 of each shape
            groups = [order[targets[order, 0] == shape][:2] for shape in range(3)]
        else:  # one of each class
            groups = [order[targets[order, c] == 1][:1] for c in range(targets.shape[1])]
        picks = [int(i) for pair in zip(*groups) for i in pair] if name == "dsprites" else [
            int(g[0]) for g in groups if len(g)]
        if per_dataset is not None:
            picks = picks[:per_dataset]
        for position, index in enumerate(picks):
            image, target = dataset[index]
            array = np.round(image[0].numpy() * 255.0).astype(np.uint8)
            labels = {t.name: t.labels[int(y)] for t, y in zip(dataset.tasks, target.tolist())}
            caption = _caption(name, dataset.tasks, target.tolist())
            variants = [(False, Image.fromarray(array, mode="L"))]
            if position == len(picks) - 1:  # the last one also as a dark-on-white picture, 4x larger
                big = Image.fromarray(255 - array, mode="L")
                variants.append((True, big.resize((big.width * 4, big.height * 4), Image.Resampling.BICUBIC)))
            for inverted, picture in variants:
                file = f"{name}-test-{index:06d}{'-on-white' if inverted else ''}.png"
                picture.save(out / file, optimize=True)
                records.append({"file": file, "dataset": name, "split": "test", "index": index, "inverted": inverted,
                                "labels": labels,
                                "caption": caption + (" on white" if inverted else "")})
    (out / EXAMPLES_FILE).write_text(json.dumps({
        "format_version": 1, "generated_by": "python -m kf_model.serving examples",
        "note": "held-out (test split) images with their true labels; '-on-white' files are inverted and upscaled",
        "examples": records}, indent=2, ensure_ascii=False) + "\n")
    return out
