"""A folder of images without labels, as distillation data: the teacher gives every target.

``DIR/<image>`` (no class folders, no metadata file) opens as :class:`UnlabelledImages`: items are
``(image [C, S, S] in [0, 1], targets int64 [0])``, so training knows there is nothing to supervise with (KD +
InfoMax only). With ``views_per_image`` > 1 and augmentation, each image stands for that many random views
(:mod:`kf_model.data.augment`), each a pure function of (seed, item index), so a run and its resume see the same
views. The tasks are not the data's: a task map (or the teacher) names them. Bad files get the labelled
sources' fast scan (:func:`kf_model.data.images.scan_files`): refused up front, or with ``skip_bad_images``
left out and counted in ``split_info["skipped"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from kf_model.data.augment import AugmentConfig, augmented_view, to_tensor
from kf_model.data.images import IMAGE_EXTENSIONS, ImageFiles, list_images, resolve_root, scan_files
from kf_model.data.specs import InputSpec
from kf_model.errors import DataNotFoundError, InvalidDataError, name_list
from kf_model.limits import MAX_IMAGE_PIXELS

MAX_IMAGES = 10_000  # held decoded in memory
MAX_VIEWS = 1_000_000
MAX_SIDE = 800  # longer side kept of each image (crops of 2 % of it still have ~110 px)


def is_unlabelled_folder(folder: str | os.PathLike) -> bool:
    """Images directly in the folder and no sub-folder or metadata file that could label them."""
    path = Path(folder)
    if not path.is_dir() or any(path.glob("metadata.csv")) or any(path.glob("metadata.jsonl")):
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return not any(p.is_dir() for p in entries) and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries)


def _no_loose_images(root: Path) -> DataNotFoundError:
    """Why a folder read without labels has nothing to read: most often it is a labelled tree."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        return DataNotFoundError(f"{root} holds no images (files of type {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return DataNotFoundError(f"{root} holds no images of its own, only the sub-folders {name_list(folders, 5)}; "
                             "unlabelled images (--unlabelled) are read from the folder itself. To use class "
                             "folders (DIR/<class>/<image>) as labels, leave out --unlabelled; else give the "
                             "folder that holds the images")


def _load(path: Path, max_side: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max_side, max_side))
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InvalidDataError(f"cannot read {path} as an image: {error}") from None
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


class UnlabelledImages(Dataset):
    """Unlabelled images, optionally as many augmented views each (see the module docstring)."""

    one_vs_rest = False
    tasks: tuple = ()

    def __init__(self, root: str | os.PathLike, input_spec: InputSpec, *, views_per_image: int = 1,
                 augment: AugmentConfig | None = None, seed: int = 0, max_side: int = MAX_SIDE,
                 skip_bad_images: bool = False, max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
        root = resolve_root(root)
        files = [f for f in list_images(root, root) if "/" not in f]
        if not files:
            raise _no_loose_images(root)
        if len(files) > MAX_IMAGES:
            raise InvalidDataError(f"{root} holds {len(files):,} images; unlabelled folders are held in "
                                   f"memory, at most {MAX_IMAGES:,}")
        # the labelled sources' fast scan and policy: bad files refused up front, or skipped and counted
        kept, skipped = scan_files(ImageFiles(root, files), str(root), skip_bad_images, max_image_pixels)
        self.files = [files[i] for i in kept]
        if not self.files:
            raise InvalidDataError(f"{root}: none of its {len(files):,} images can be read")
        if not 1 <= views_per_image <= MAX_VIEWS // len(self.files):
            raise InvalidDataError(f"views_per_image must be in [1, {MAX_VIEWS // len(self.files)}], "
                                   f"got {views_per_image}")
        if input_spec.channels != 3:
            raise InvalidDataError("unlabelled photographs are prepared as RGB; the teacher takes "
                                   f"{input_spec.channels} channel(s)")
        self.root, self.input_spec, self.views = root, input_spec, views_per_image
        self.augment, self.seed = augment, seed
        self.images = [_load(root / f, max_side) for f in self.files]
        self.name = root.name
        self.split_info = {"layout": "unlabelled", "images": len(self.files), "views_per_image": views_per_image,
                           "augment": None if augment is None else vars(augment), "skipped": len(skipped),
                           "skipped_files": [b["file"] for b in skipped[:20]]}

    def __len__(self) -> int:
        return len(self.files) * self.views

    @property
    def targets(self) -> torch.Tensor:
        return torch.zeros(len(self), 0, dtype=torch.int64)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = item % len(self.files)
        size = self.input_spec.size
        if self.augment is None:
            image = self.images[index]
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            view = to_tensor(image.resize((size, size), Image.Resampling.BICUBIC,
                                          box=(left, top, left + side, top + side)))
        else:
            rng = np.random.default_rng([self.seed, item])
            view = augmented_view(self.images, index, size, rng, self.augment)
        return view, torch.zeros(0, dtype=torch.int64)

    def select(self, items: torch.Tensor) -> torch.utils.data.Subset:
        return torch.utils.data.Subset(self, items.tolist())
