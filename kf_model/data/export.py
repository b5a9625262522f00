"""Write a built-in dataset as image files, so every file-based source is tested (and shown) on real images.

``folder`` format (single-label Fashion-MNIST only): ``OUT/<split>/<class>/<position>.png``, one folder per
class. ``csv`` format: ``OUT/<split>/<position>.png`` and ``OUT/metadata.csv`` with ``file_name``,
``split`` and one column per attribute (dSprites: shape, scale, orientation, pos_x, pos_y; Fashion-MNIST:
class), the values being the built-in task labels ("heart", "0.50", "9°"). ``<position>`` is the item's
index in the built-in split, so an exported file maps back to ``load_dataset(name, split)[position]``.
Class folders are the class names with path separators replaced ("T-shirt/top" -> "T-shirt-top"), so
their task names (`slugify`) are the built-in ones.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.data.splits import seeded_subset
from kf_model.errors import InvalidConfigError, UnknownNameError

FORMATS = ("folder", "csv")
IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg")}
EXPORT_SPLITS = ("train", "test", "both")
CHUNK = 2_048


def class_folder_name(name: str) -> str:
    """A class name as a folder name on any system: path separators and reserved characters become '-'."""
    return re.sub(r'[/\\<>:"|?*\x00-\x1f]', "-", name).strip(" .") or "-"


def _label_rows(dataset: Any, targets: torch.Tensor) -> list[dict[str, str]]:
    if dataset.one_vs_rest:
        return [{"class": dataset.tasks[int(row.argmax())].labels[1]} for row in targets]
    return [{task.name: task.labels[int(t)] for task, t in zip(dataset.tasks, row)} for row in targets]


def export_dataset(name: str, out: str | os.PathLike, *, format: str = "folder", image_format: str = "png",
                   rgb: bool = False, limit: int | None = None, split: str = "both", seed: int = 0,
                   root: str | os.PathLike | None = None, download: bool = False) -> dict[str, Any]:
    """Write the built-in dataset `name` under `out` (an empty or new folder); returns what was written."""
    from kf_model.data import DATASET_NAMES, load_dataset

    if name not in DATASET_NAMES:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if format not in FORMATS or image_format not in IMAGE_FORMATS or split not in EXPORT_SPLITS:
        raise InvalidConfigError(f"format must be one of {FORMATS}, image_format one of {tuple(IMAGE_FORMATS)}, "
                                 f"split one of {EXPORT_SPLITS}; got {format!r}, {image_format!r}, {split!r}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidConfigError(f"{out} exists and is not an empty folder; export into a new folder")
    pil_format, extension = IMAGE_FORMATS[image_format]
    rows: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    for part in ("train", "test") if split == "both" else (split,):
        dataset = load_dataset(name, part, root=root, download=download)
        if format == "folder" and not dataset.one_vs_rest:
            raise InvalidConfigError(f"{name} has {len(dataset.tasks)} attributes per image, not one class: "
                                     "export it with --format csv")
        subset = seeded_subset(len(dataset), limit, seed)
        positions = torch.arange(len(dataset)) if subset is None else subset
        for start in range(0, len(positions), CHUNK):
            chunk = positions[start:start + CHUNK]
            images, targets = dataset.get_batch(chunk)
            pixels = (images * 255).round().to(torch.uint8).numpy()
            for position, array, labels in zip(chunk.tolist(), pixels, _label_rows(dataset, targets)):
                folder = out / part / (class_folder_name(labels["class"]) if format == "folder" else "")
                folder.mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1))
                image = image.convert("RGB") if rgb else image
                file = folder / f"{position:06d}{extension}"
                image.save(file, pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
                rows.append({"file_name": file.relative_to(out).as_posix(), "split": part, **labels})
        counts[part] = len(positions)
    if format == "csv":
        with open(out / "metadata.csv", "w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return {"out": str(out), "format": format, "image_format": image_format, "rgb": rgb, "counts": counts}


__all__ = ["EXPORT_SPLITS", "FORMATS", "IMAGE_FORMATS", "class_folder_name", "export_dataset"]
