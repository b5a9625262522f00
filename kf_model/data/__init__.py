"""Datasets: `load_dataset(name, split)` gives `(image [C, H, W] in [0, 1], targets int64 [tasks])` items.

`load_dataset` reads the two built-in datasets; `open_dataset(source, split)` (sources.py) also reads image
folders, metadata.csv/.jsonl folders and 🤗 datasets (``hf:<name>``), with the same items and attributes.
Every dataset also carries `.tasks` (one TaskSpec per target), `.input_spec` (what networks normalise with),
`.one_vs_rest` (whether the tasks are the K classes of one K-way label), `.targets` (all targets, without
loading images) and `.get_batch(items)` (a stacked batch, the fast path).
"""

from __future__ import annotations

import numbers
import os

from torch.utils.data import Dataset

from kf_model.data.dsprites import (
    DSPRITES_INPUT_SPEC,
    DSPRITES_TASKS,
    FACTOR_SIZES,
    DSprites,
    factor_values,
    factors_to_index,
    index_to_factors,
    render,
)
from kf_model.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_INPUT_SPEC,
    FASHION_MNIST_SLUGS,
    FASHION_MNIST_TASKS,
    FashionMNIST,
)
from kf_model.data.sources import open_dataset
from kf_model.data.specs import InputSpec, TaskSpec, slugify
from kf_model.data.splits import seeded_subset
from kf_model.errors import InvalidArgumentError, UnknownNameError

DATASET_NAMES = ("dsprites", "fashion-mnist")
SPLITS = ("train", "test")

__all__ = [
    "DATASET_NAMES", "DSPRITES_INPUT_SPEC", "DSPRITES_TASKS", "FACTOR_SIZES", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_INPUT_SPEC", "FASHION_MNIST_SLUGS", "FASHION_MNIST_TASKS", "DSprites", "InputSpec", "TaskSpec",
    "factor_values", "factors_to_index", "index_to_factors", "load_dataset", "open_dataset", "render",
    "seeded_subset", "slugify",
]


def load_dataset(name: str, split: str, *, root: str | os.PathLike | None = None, limit: int | None = None,
                 seed: int = 0, download: bool = False) -> Dataset:
    """The dataset `name` ("dsprites" or "fashion-mnist"), split "train" or "test", optionally a seeded subset.

    `root` and `download` only matter for datasets stored on disk (Fashion-MNIST); dSprites is rendered.
    """
    if name not in DATASET_NAMES:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r} for dataset {name!r}; known splits: {', '.join(SPLITS)}")
    check_subset(limit, seed)
    dataset = DSprites(split) if name == "dsprites" else FashionMNIST(split, root=root, download=download)
    items = seeded_subset(len(dataset), limit, seed)
    return dataset if items is None else dataset.select(items)


def check_subset(limit: object, seed: object) -> None:
    """``limit`` (None or a whole number >= 1) and ``seed`` (a whole number, as numpy seeds), refused in words before
    any data is read: "5" or 2.5 failed as a TypeError inside the subset's slicing."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise InvalidArgumentError(f"limit must be None (all items) or a whole number of items >= 1, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise InvalidArgumentError(f"seed must be a whole number from 0 to {2**32 - 1:,}, got {seed!r}")
