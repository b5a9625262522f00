"""Labelled images from outside (files on disk, a 🤗 dataset), decoded through the one preprocessing path.

`LabelledImages` is the dataset every image source returns: items ``(image float32 [C, H, W] in [0, 1],
targets int64 [T])``, the image made by ``kf_model.data.preprocess.image_to_tensor(pil, input_spec)``, the same
function a bank's ``preprocess`` and the app use, so training cannot drift from serving. It keeps no file
open and pickles small, so DataLoader workers decode in parallel.

Bad images, the policy: **refused before training starts, after a fast scan**. Opening a source reads the
header of every image of the split (PIL identifies the format, mode and size without decoding) and checks
that a PNG ends with its ``IEND`` chunk and a JPEG with its end-of-image marker (a truncated download). A
file that fails is listed in an `InvalidDataError` naming it, with the fix; ``skip_bad_images=True`` skips
such files instead and counts them (``split_info["skipped"]``). A file that passes the scan but still
fails to decode during training (rare: damage in the middle of the data) does not stop the run: the
item is replaced by the next one in the dataset (its own image and targets), with a warning naming the
file (counted per process in ``decode_failures``).

Files on disk stay inside the data folder: links that lead outside it are refused, as are file names
with ``..`` or an absolute path (a metadata file is data).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from kf_model.data.batched import BatchedDataset
from kf_model.data.options import SourceOptions
from kf_model.data.preprocess import image_to_tensor
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.data.splits import assign_splits, seeded_subset
from kf_model.data.tasks import Attribute, encode_targets, make_tasks
from kf_model.errors import DataNotFoundError, InvalidDataError, KFError, UnsafePathError
from kf_model.limits import MAX_IMAGE_PIXELS, MAX_TRAINING_IMAGE_PIXELS

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEFAULT_SIZE = 224  # an inferred input size is the median image side, at most this (timm's usual input)
MIN_SIZE = 8
SPEC_SAMPLE = 1_000  # images decoded to infer channels, size, mean and std when no input spec is given
MAX_FALLBACKS = 16  # consecutive undecodable items before a decode error is raised after all
SCAN_THREADS = 8
TAIL_BYTES = 1_024  # end of a file read by the scan to find the PNG IEND chunk / the JPEG end marker


class ImageStore(Protocol):
    """Where the images of a dataset come from: positions -> PIL images, picklable."""

    def __len__(self) -> int: ...
    def open(self, position: int) -> Image.Image: ...
    def describe(self, position: int) -> tuple[str, tuple[int, int]]: ...
    def name(self, position: int) -> str: ...
    def select(self, positions: Sequence[int]) -> ImageStore: ...


class ImageFiles:
    """Image files under a root folder, named by their relative paths (already checked to stay inside)."""

    def __init__(self, root: str | os.PathLike, files: Sequence[str]) -> None:
        self.root = str(root)
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def name(self, position: int) -> str:
        return self.files[position]

    def open(self, position: int) -> Image.Image:
        with Image.open(os.path.join(self.root, self.files[position])) as image:
            image.load()  # decoded now, the file closed on leaving: no handle survives into a worker
            return image

    def describe(self, position: int) -> tuple[str, tuple[int, int]]:
        """Mode and size from the header only."""
        with Image.open(os.path.join(self.root, self.files[position])) as image:
            return image.mode, image.size

    def select(self, positions: Sequence[int]) -> ImageFiles:
        return ImageFiles(self.root, [self.files[int(i)] for i in positions])


# ----------------------------------------------------------------------------- files that stay inside

def resolve_root(root: str | os.PathLike, what: str = "data folder") -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"{what} {str(path)!r} does not exist or is not a folder")
    return path.resolve()


def checked_file_name(root: Path, name: Any, where: str) -> str:
    """A file name from a metadata file as a relative posix path, refused unless it stays inside `root`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidDataError(f"{where}: empty file_name; every row needs the path of its image")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise UnsafePathError(f"{where}: file_name {name[:200]!r} leaves the data folder; file names must be "
                              f"relative paths inside {root}, without '..'")
    path = root / posix
    if not path.resolve().is_relative_to(root):
        raise UnsafePathError(f"{where}: {name[:200]!r} is a link that leads outside {root}; copy the file into "
                              "the data folder instead of linking to it")
    return posix.as_posix()


def list_images(folder: Path, root: Path) -> list[str]:
    """Sorted relative paths (to `root`) of the image files under `folder`, hidden entries left out.

    Links are followed while they stay inside `root` (each folder once); one that leads outside is refused.
    """
    found: list[str] = []
    seen: set[Path] = set()
    stack = [folder]
    while stack:
        directory = stack.pop()
        real = directory.resolve()
        if not real.is_relative_to(root):
            raise UnsafePathError(f"{directory} is a link that leads outside the data folder {root} (to {real}); "
                                  "copy the files in instead of linking")
        if real in seen:
            continue
        seen.add(real)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                if entry.is_symlink() and entry.is_file() and not path.resolve().is_relative_to(root):
                    raise UnsafePathError(f"{path} is a link that leads outside the data folder {root} (to "
                                          f"{os.path.realpath(path)}); copy the files in instead of linking")
                if entry.is_dir():
                    stack.append(path)
                elif entry.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(path.relative_to(root).as_posix())
    return sorted(found)


# ----------------------------------------------------------------------------- the fast scan

def scan_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """None for a file that looks whole (header readable, PNG/JPEG end present) and not too large (at most
    ``max_pixels``: a 140 KB 12000x12000 PNG would take gigabytes to decode), else the reason it is bad."""
    try:
        with Image.open(path) as image:
            image_format, (width, height) = image.format, image.size
        if width < 1 or height < 1:
            return f"it has no pixels ({width}x{height})"
        if width * height > max_pixels:
            return (f"it is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); the limit is "
                    f"{max_pixels / 1e6:g} megapixels (max_image_pixels, --max-image-pixels)")
        if image_format in ("PNG", "JPEG"):
            with open(path, "rb") as file:
                file.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
                tail = file.read()
            if (b"IEND" if image_format == "PNG" else b"\xff\xd9") not in tail:
                return f"the {image_format} file is truncated (no end marker)"
    except Image.DecompressionBombError as error:  # over Pillow's own limit, whatever max_pixels says
        return (f"it is too large ({error}); the limit is {min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)) / 1e6:g} "
                "megapixels")
    except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not an image"
        return f"not a readable image ({error})"
    return None


def scan_files(store: ImageFiles, where: str, skip_bad: bool,
               max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[list[int], list[dict[str, str]]]:
    """Positions of the files that pass `scan_image`, and the skipped ones; refuses bad files unless `skip_bad`."""
    paths = [os.path.join(store.root, f) for f in store.files]
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        reasons = list(pool.map(functools.partial(scan_image, max_pixels=max_pixels), paths, chunksize=64))
    bad = [{"file": f, "reason": r} for f, r in zip(store.files, reasons) if r is not None]
    if bad and not skip_bad:
        listed = "\n".join(f"  - {b['file']}: {b['reason']}" for b in bad[:5])
        more = f"\n  ... and {len(bad) - 5:,} more" if len(bad) > 5 else ""
        raise InvalidDataError(f"{where}: {len(bad):,} of {len(paths):,} images cannot be used:\n{listed}{more}\n"
                               "Fix or delete them, or skip them (skip_bad_images=True, --skip-bad-images)")
    return [i for i, r in enumerate(reasons) if r is None], bad


# ----------------------------------------------------------------------------- input spec

def infer_input_spec(store: ImageStore, seed: int = 0, sample: int = SPEC_SAMPLE) -> InputSpec:
    """A sensible input spec when the caller (the teacher's config) gives none, from ≤ `sample` seeded images.

    Channels: 1 when most sampled images are grey (modes L, 1, I;16...), else 3. Size: the median of
    the longer sides, between 8 and 224 (28 for Fashion-MNIST files, 224 for photos). Mean and std:
    per channel, over the sampled images as `image_to_tensor` makes them at that size (accumulated one
    image at a time: a sample of large photos never sits in memory at once).
    """
    picked = seeded_subset(len(store), sample, seed)
    positions = range(len(store)) if picked is None else picked.tolist()
    described = []
    for position in positions:
        try:
            described.append((position, *store.describe(position)))
        except Exception:  # a bad image is the scan's business; the sample does without it
            continue
    if not described:
        raise InvalidDataError("no image of the training split could be read to infer the input size")
    grey = sum(mode in GREY_MODES for _, mode, _ in described)
    channels = 1 if grey * 2 > len(described) else 3
    size = int(np.clip(np.median([max(dims) for _, _, dims in described]), MIN_SIZE, DEFAULT_SIZE))
    plain = InputSpec(channels, size, (0.0,) * channels, (1.0,) * channels)
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for position, _, _ in described:
        try:
            pixels = image_to_tensor(store.open(position), plain)[0].double().flatten(1)
        except Exception:  # as above
            continue
        total += pixels.sum(dim=1)
        total_sq += pixels.pow(2).sum(dim=1)
        count += pixels.shape[1]
    if count == 0:
        raise InvalidDataError("no image of the training split could be decoded to infer the normalisation")
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-3)
    return InputSpec(channels, size, tuple(round(v, 6) for v in mean.tolist()),
                     tuple(round(v, 6) for v in std.tolist()))


# ----------------------------------------------------------------------------- the dataset

class LabelledImages(BatchedDataset):
    """Items ``(image float32 [C, H, W] in [0, 1], targets int64 [T])`` of labelled images from outside.

    ``codes`` are the class indices ``[N, A]`` of the A label attributes; the tasks and targets follow
    `kf_model.data.tasks` (one-vs-rest or K-way for a single attribute, one task per attribute otherwise).
    """

    def __init__(self, store: ImageStore, codes: torch.Tensor, attributes: Sequence[Attribute], *,
                 input_spec: InputSpec, split: str, split_info: dict[str, Any], source: str,
                 task_mode: str = "one-vs-rest", tasks: list[TaskSpec] | None = None,
                 one_vs_rest: bool | None = None) -> None:
        if len(store) != len(codes):
            raise KFError(f"internal: {len(store)} images but {len(codes)} label rows")
        self.store = store
        self.codes = codes
        self.attributes = list(attributes)
        self.input_spec = input_spec
        self.split = split
        self.split_info = split_info
        self.source = source
        self.task_mode = task_mode
        if tasks is None or one_vs_rest is None:
            tasks, one_vs_rest = make_tasks(self.attributes, task_mode)
        self.tasks, self.one_vs_rest = tasks, one_vs_rest
        self.decode_failures = 0  # items replaced by the next one in this process (see the module docstring)

    @property
    def name(self) -> str:
        return self.source

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The K class names of a single-label source, in class-index order (None with several attributes)."""
        return self.attributes[0].classes if len(self.attributes) == 1 else None

    @property
    def class_indices(self) -> torch.Tensor:
        """The class index int64 ``[N]`` of each item of a single-label source."""
        if len(self.attributes) != 1:
            raise KFError(f"{self.source} has {len(self.attributes)} label attributes, not one class per item")
        return self.codes[:, 0]

    @property
    def files(self) -> list[str]:
        """The item names: file paths relative to the data folder, or row numbers of a 🤗 dataset."""
        return [self.store.name(i) for i in range(len(self.store))]

    @property
    def targets(self) -> torch.Tensor:
        """All targets int64 ``[N, T]``, without decoding any image."""
        return encode_targets(self.codes, self.attributes, self.one_vs_rest)

    def __len__(self) -> int:
        return len(self.codes)

    def _decode(self, position: int) -> tuple[torch.Tensor, int]:
        """The image of `position`, or of the next decodable item (see the module docstring)."""
        error: Exception | None = None
        for step in range(min(MAX_FALLBACKS, len(self))):
            current = (position + step) % len(self)
            try:
                image = self.store.open(current)  # sized by the scan (--max-image-pixels, up to 10x the app's)
                return image_to_tensor(image, self.input_spec, max_pixels=MAX_TRAINING_IMAGE_PIXELS)[0], current
            except Exception as caught:  # never end an epoch on one file; bounded by MAX_FALLBACKS
                error = caught
                self.decode_failures += 1
                warnings.warn(f"{self.source}: cannot decode {self.store.name(current)} ({caught}); "
                              "using the next item instead", RuntimeWarning, stacklevel=3)
        raise InvalidDataError(f"{self.source}: {min(MAX_FALLBACKS, len(self))} images in a row from "
                               f"{self.store.name(position)} cannot be decoded (last error: {error}); "
                               "check the data folder") from error

    def get_batch(self, items: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked ``(images [B, C, H, W], targets [B, T])`` of dataset positions `items`."""
        items = torch.as_tensor(items, dtype=torch.int64).reshape(-1).tolist()
        decoded = [self._decode(i) for i in items]
        images = torch.stack([image for image, _ in decoded]) if decoded else torch.empty(
            0, self.input_spec.channels, self.input_spec.size, self.input_spec.size)
        positions = torch.tensor([p for _, p in decoded], dtype=torch.int64)
        return images, encode_targets(self.codes[positions], self.attributes, self.one_vs_rest)

    def select(self, items: torch.Tensor | Sequence[int]) -> LabelledImages:
        """The sub-dataset at positions `items`: same tasks, input spec and split record."""
        items = torch.as_tensor(items, dtype=torch.int64).reshape(-1)
        return LabelledImages(self.store.select(items.tolist()), self.codes[items], self.attributes,
                              input_spec=self.input_spec, split=self.split, split_info=self.split_info,
                              source=self.source, task_mode=self.task_mode, tasks=self.tasks,
                              one_vs_rest=self.one_vs_rest)

    def describe(self) -> dict[str, Any]:
        """What a run trained on, JSON-able (for a bank's manifest or a run record)."""
        return {"source": self.source, "split": self.split, "items": len(self), "task_mode": self.task_mode,
                "label_columns": [a.name for a in self.attributes], "input_spec": self.input_spec.to_dict(),
                "split_info": self.split_info}

    def __repr__(self) -> str:
        return (f"LabelledImages({self.source!r}, split={self.split!r}, items={len(self)}, tasks={len(self.tasks)}, "
                f"input_spec={self.input_spec})")


def build_split(store: ImageStore, codes: torch.Tensor, attributes: Sequence[Attribute], *, keys: Sequence[str],
                given: Sequence[str | None], options: SourceOptions, source: str) -> LabelledImages:
    """The requested split of a whole labelled source: assign splits, scan, infer the input spec, subset.

    Tasks and class indices come from all splits together, so train, val and test agree on them.
    """
    strata = codes[:, 0].tolist() if len(attributes) == 1 else [0] * len(codes)
    splits, info = assign_splits(keys, given, strata, val_fraction=options.val_fraction,
                                 test_fraction=options.test_fraction, seed=options.split_seed)
    positions = np.flatnonzero(splits == options.split).tolist()
    if not positions:
        counts = ", ".join(f"{k} {v:,}" for k, v in info["counts"].items())
        fix = "" if options.split == "train" else f"; add {options.split} items or raise {options.split}_fraction"
        raise DataNotFoundError(f"{source}: the {options.split} split has no images ({counts}){fix}")
    subset = seeded_subset(len(positions), options.limit, options.seed)  # before the scan: a few files of many
    if subset is not None:
        positions = [positions[i] for i in subset.tolist()]
    chosen = store.select(positions)
    if isinstance(chosen, ImageFiles):
        kept, skipped = scan_files(chosen, source, options.skip_bad_images, options.max_image_pixels)
        info = {**info, "skipped": len(skipped), "skipped_files": [b["file"] for b in skipped[:20]]}
        if not kept:
            raise InvalidDataError(f"{source}: none of the {len(positions):,} images of the {options.split} "
                                   "split can be read")
        positions = [positions[i] for i in kept]
        chosen = chosen.select(kept)
    spec = options.input_spec
    if spec is None:
        train = np.flatnonzero(splits == "train").tolist()
        spec = infer_input_spec(store.select(train), seed=options.split_seed)
        info = {**info, "input_spec_inferred": True}
    return LabelledImages(chosen, codes[positions], attributes, input_spec=spec, split=options.split,
                          split_info=info, source=source, task_mode=options.task_mode)


__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "ImageStore", "LabelledImages", "build_split", "checked_file_name",
           "infer_input_spec", "list_images", "resolve_root", "scan_files", "scan_image"]
