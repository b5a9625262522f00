"""The real Fashion-MNIST (Xiao et al., 2017), read from its gzipped idx files, as 10 one-vs-rest tasks.

Looked for in `root`, then in Debian's package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist,
overridable with KF_FASHION_MNIST_DIR), then downloaded by torchvision only when asked: training and tests
work offline, and a missing file is an error that says where it looked and how to fix it.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kf_model.data.batched import BatchedDataset
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import DataNotFoundError, KFError, UnknownNameError

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_SLUGS = ("t_shirt_top", "trouser", "pullover", "dress", "coat",
                       "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SIZES = {"train": 60_000, "test": 10_000}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "KF_FASHION_MNIST_DIR"
DOWNLOAD_DIR = Path.home() / ".cache" / "kf" / "fashion-mnist"  # used when download=True and no root is given


def _task(name: str, slug: str) -> TaskSpec:
    noun = name if name[1] == "-" else name.lower()  # "a T-shirt/top", "a trouser"
    article = "an" if noun[0].lower() in "aeiou" else "a"
    return TaskSpec(slug, (f"not {name}", name), f"Is it {article} {noun}? (one-vs-rest)")


FASHION_MNIST_TASKS = [_task(name, slug) for name, slug in zip(FASHION_MNIST_CLASSES, FASHION_MNIST_SLUGS)]

# Pixel mean/std over the 60,000 training images scaled to [0, 1] (47,040,000 pixels), computed by
# `python -m kf_model.data stats fashion-mnist` from the Debian package's files.
FASHION_MNIST_INPUT_SPEC = InputSpec(channels=1, size=28, mean=(0.286041,), std=(0.353024,))


def _open(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read()


@functools.cache
def _read_idx(path: Path) -> torch.Tensor:
    """Decode one idx file (uint8 data only, as in (Fashion-)MNIST); cached, as the train images take ~1 s."""
    data = _open(path)
    zero, dtype, ndim = struct.unpack_from(">HBB", data, 0)
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise KFError(f"{path} is not an (Fashion-)MNIST idx file of uint8 (header {data[:4].hex()})")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(shape)):
        raise KFError(f"{path} is truncated or corrupt: expected {int(np.prod(shape))} values of shape {shape}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy())


def _system_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEBIAN_DIR)


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Where the idx files are looked for, in order."""
    dirs = []
    if root is not None:
        root = Path(root).expanduser()
        dirs += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]  # the last is torchvision's layout
    dirs.append(_system_dir())
    if root is None:
        dirs.append(DOWNLOAD_DIR / "FashionMNIST" / "raw")
    return dirs


def _find(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    for directory in dirs:
        found = []
        for name in FILES[split]:
            found += [p for p in (directory / f"{name}.gz", directory / name) if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def _not_found(split: str, dirs: list[Path], download_error: Exception | None) -> DataNotFoundError:
    images, labels = FILES[split]
    note = f" (from {ENV_DIR})" if os.environ.get(ENV_DIR) else f" (dataset-fashion-mnist; {ENV_DIR} overrides it)"
    places = "\n".join(f"  - {d}{note if d == _system_dir() else ''}" for d in dirs)
    message = (f"Fashion-MNIST ({split} split) not found: looked for {images}[.gz] and {labels}[.gz] in\n{places}\n"
               "Fix it with one of:\n"
               "  - sudo apt-get install dataset-fashion-mnist\n"
               "  - put the idx files in a folder and pass it as the data root (--data-dir DIR, root=DIR)\n"
               "  - let torchvision download them (--download, download=True)")
    if download_error is not None:
        message += f"\nThe download was tried and failed: {download_error}"
    return DataNotFoundError(message)


def _download(split: str, root: str | os.PathLike | None) -> None:
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    target = Path(root).expanduser() if root is not None else DOWNLOAD_DIR
    TorchvisionFashionMNIST(str(target), train=split == "train", download=True)


def load_arrays(split: str, root: str | os.PathLike | None = None,
                download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`(images uint8 [N, 28, 28], labels int64 [N])` of a split, from the first place that has both files."""
    if split not in FILES:
        raise UnknownNameError(f"unknown split {split!r} for dataset 'fashion-mnist'; known splits: train, test")
    dirs = search_dirs(root)
    found = _find(split, dirs)
    download_error = None
    if found is None and download:
        try:
            _download(split, root)
        except Exception as error:  # no network, disk full...: report it with the places looked at
            download_error = error
        dirs = search_dirs(root)
        found = _find(split, dirs)
    if found is None:
        raise _not_found(split, dirs, download_error)
    images, labels = (_read_idx(path.resolve()) for path in found)
    if images.shape != (SIZES[split], 28, 28) or labels.shape != (SIZES[split],):
        raise KFError(f"unexpected Fashion-MNIST {split} shapes {tuple(images.shape)} / {tuple(labels.shape)} "
                      f"in {found[0].parent}")
    return images, labels.long()


class FashionMNIST(BatchedDataset):
    """Fashion-MNIST items `(image [1, 28, 28] float32 in [0, 1], targets int64 [10] one-hot)`."""

    tasks: list[TaskSpec] = FASHION_MNIST_TASKS
    input_spec: InputSpec = FASHION_MNIST_INPUT_SPEC
    one_vs_rest = True
    name = "fashion-mnist"

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, download: bool = False,
                 *, images: torch.Tensor | None = None, class_indices: torch.Tensor | None = None) -> None:
        self.split = split
        if images is None or class_indices is None:
            images, class_indices = load_arrays(split, root, download)
        self.images = images  # uint8 [N, 28, 28], shared with the per-process cache: never modify in place
        self.class_indices = class_indices  # int64 [N], the 10-way class of each item

    def __len__(self) -> int:
        return len(self.class_indices)

    def get_batch(self, items: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked `(images [B, 1, 28, 28], targets [B, 10])` of dataset positions `items`."""
        items = torch.as_tensor(items, dtype=torch.int64)
        images = self.images[items].unsqueeze(1).float().div_(255)
        return images, torch.nn.functional.one_hot(self.class_indices[items], len(FASHION_MNIST_CLASSES))

    @property
    def targets(self) -> torch.Tensor:
        """All one-vs-rest targets int64 `[len, 10]`, without touching the images."""
        return torch.nn.functional.one_hot(self.class_indices, len(FASHION_MNIST_CLASSES))

    def select(self, items: torch.Tensor | Sequence[int]) -> FashionMNIST:
        """The sub-dataset at positions `items` (used by `load_dataset(limit=...)`)."""
        items = torch.as_tensor(items, dtype=torch.int64)
        return FashionMNIST(self.split, images=self.images[items], class_indices=self.class_indices[items])
