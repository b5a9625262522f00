"""The data of a run: the source the options name, the fixed validation carve-out, the seeded loader."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from kf_model.data import DATASET_NAMES, load_dataset
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import KFError

VALIDATION_SEED = 20220707  # the validation carve-out of the train split never depends on --seed


@dataclass
class DataInfo:
    """What the networks need to know about a dataset (a Subset forgets it)."""

    name: str
    tasks: list[TaskSpec]
    input_spec: InputSpec
    one_vs_rest: bool


def _subset(dataset: Dataset, items: Tensor) -> Dataset:
    items = items.sort().values
    return dataset.select(items) if hasattr(dataset, "select") else Subset(dataset, items.tolist())


def open_data_source(args: argparse.Namespace, split: str, input_spec: InputSpec | None = None
                         ) -> tuple[Dataset, DataInfo]:
    """A split of the data the options name: a built-in dataset, your folder (--data-dir) or hf:<repo>.

    ``input_spec`` is an external teacher's (size, channels, normalisation): your images are prepared with it;
    a built-in dataset must already have its size and channels."""
    if args.dataset in DATASET_NAMES:
        dataset = load_dataset(args.dataset, split, root=args.data_dir, download=args.download)
        spec = dataset.input_spec
        if input_spec is not None and (input_spec.channels, input_spec.size) != (spec.channels, spec.size):
            fixes = [f"pass --image-size {spec.size}"] if input_spec.channels == spec.channels else []
            rgb = " --rgb" if input_spec.channels == 3 else ""
            fixes.append(f"export the data (python -m kf_model.data export {args.dataset} --out DIR{rgb}) and "
                         "train on --data-dir DIR, which prepares images as the teacher takes them")
            raise KFError(f"the teacher takes {input_spec.channels}-channel {input_spec.size}-px images, "
                          f"{args.dataset} has {spec.channels}-channel {spec.size}-px ones: " + ", or ".join(fixes))
        name = args.dataset
    else:
        from kf_model.data import open_dataset

        source = args.dataset or args.data_dir
        dataset = open_dataset(source, split, input_spec=input_spec, task_mode=args.task_mode,
                               label_columns=args.label_columns, image_column=args.image_column,
                               skip_bad_images=getattr(args, "skip_bad_images", False))
        spec, name = dataset.input_spec, args.dataset or Path(args.data_dir).name
    info = DataInfo(name, list(dataset.tasks), input_spec or spec, bool(getattr(dataset, "one_vs_rest", False)))
    return dataset, info


def load_training_data(args: argparse.Namespace, input_spec: InputSpec | None = None
                       ) -> tuple[Dataset, Dataset | None, DataInfo]:
    """(train set, validation set or None, info). The validation images are a fixed carve-out of the train
    split (VALIDATION_SEED), never trained on by any stage; ``--limit`` then picks a seeded subset of the rest."""
    full, info = open_data_source(args, "train", input_spec)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    if not 0 <= args.val_size < len(full):
        raise KFError(f"--val-size must be in [0, {len(full)}), got {args.val_size}")
    val_items, pool = order[:args.val_size], order[args.val_size:]
    if args.limit is not None:
        if args.limit < 1:
            raise KFError(f"--limit must be >= 1, got {args.limit}")
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.data_seed))[:args.limit]
        pool = pool[pick]
    return _subset(full, pool), (_subset(full, val_items) if args.val_size else None), info


class EpochShuffleSampler(Sampler[int]):
    """A new permutation each epoch, a pure function of (seed, epoch): every process and every resumed run
    sees the same order. It owns no RNG state, so Accelerate leaves it alone (no generator syncing)."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        yield from torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed)).tolist()


def make_train_loader(train_set: Dataset, args: argparse.Namespace) -> DataLoader:
    """The training DataLoader of ``fit`` (before ``accelerator.prepare``); the benchmark times the same one."""
    return DataLoader(train_set, batch_size=args.batch_size, drop_last=True, num_workers=args.num_workers,
                      sampler=EpochShuffleSampler(len(train_set), args.seed),
                      generator=torch.Generator().manual_seed(args.seed))  # worker seeds: not the global RNG


def batch_stream(accelerator: Accelerator, loader: DataLoader, start_batch: int) -> Iterator[tuple[int, Any]]:
    """Endless (epoch, batch) pairs of a prepared loader, starting ``start_batch`` micro-batches in."""
    epoch, skip = divmod(start_batch, len(loader))
    while True:
        loader.set_epoch(epoch)  # -> EpochShuffleSampler.set_epoch, on every process
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0
