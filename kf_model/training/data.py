"""The data of a run: the source the options name, the fixed validation carve-out, the seeded loader."""

from __future__ import annotations

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
from kf_model.data.augment import AugmentConfig
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.data.splits import VALIDATION_SEED as VALIDATION_SEED  # re-exported: kf_model.training
from kf_model.data.splits import validation_order
from kf_model.data.unlabelled import UnlabelledImages, is_unlabelled_folder
from kf_model.errors import KFError
from kf_model.training.config import DataConfig, DataSourceConfig, LoaderConfig


@dataclass
class DataInfo:
    """What the networks need to know about a dataset (a Subset forgets it)."""

    name: str
    tasks: list[TaskSpec]
    input_spec: InputSpec
    one_vs_rest: bool
    skipped: dict[str, Any] | None = None  # images the scan skipped (--skip-bad-images): count and first names


def skipped_images(dataset: Dataset, split: str) -> dict[str, Any] | None:
    """What ``--skip-bad-images`` left out of this split, said on the console and recorded in training.json."""
    info = getattr(dataset, "split_info", None) or {}
    count = info.get("skipped") or 0
    if not count:
        return None
    files = list(info.get("skipped_files") or [])
    shown = ", ".join(files[:5]) + (f" and {count - 5:,} more" if count > 5 else "")
    print(f"skipped {count:,} bad image{'s' if count > 1 else ''} of the {split} split (--skip-bad-images): {shown}")
    return {"count": count, "files": files}


def _subset(dataset: Dataset, items: Tensor) -> Dataset:
    items = items.sort().values
    return dataset.select(items) if hasattr(dataset, "select") else Subset(dataset, items.tolist())


def open_data_source(source: DataSourceConfig, split: str, input_spec: InputSpec | None = None
                     ) -> tuple[Dataset, DataInfo]:
    """A split of the data the options name: a built-in dataset, your folder (--data-dir) or hf:<repo>.

    ``input_spec`` is an external teacher's (size, channels, normalisation): your images are prepared with it;
    a built-in dataset must already have its size and channels."""
    if source.dataset is None and source.data_dir and (source.unlabelled or is_unlabelled_folder(source.data_dir)):
        return open_unlabelled(source, input_spec, split)
    if source.unlabelled:
        raise KFError("--unlabelled reads a folder of images (--data-dir DIR)")
    if source.dataset in DATASET_NAMES:
        dataset = load_dataset(source.dataset, split, root=source.data_dir, download=source.download)
        spec = dataset.input_spec
        if input_spec is not None and (input_spec.channels, input_spec.size) != (spec.channels, spec.size):
            fixes = [f"pass --image-size {spec.size}"] if input_spec.channels == spec.channels else []
            rgb = " --rgb" if input_spec.channels == 3 else ""
            fixes.append(f"export the data (python -m kf_model.data export {source.dataset} --out DIR{rgb}) and "
                         "train on --data-dir DIR, which prepares images as the teacher takes them")
            raise KFError(f"the teacher takes {input_spec.channels}-channel {input_spec.size}-px images, "
                          f"{source.dataset} has {spec.channels}-channel {spec.size}-px ones: " + ", or ".join(fixes))
        name = source.dataset
    else:
        from kf_model.data import open_dataset

        columns = None if source.label_columns is None else list(source.label_columns)
        dataset = open_dataset(source.dataset or source.data_dir, split, input_spec=input_spec,
                               task_mode=source.task_mode, label_columns=columns, image_column=source.image_column,
                               skip_bad_images=source.skip_bad_images, max_image_pixels=source.max_image_pixels)
        spec, name = dataset.input_spec, source.dataset or Path(source.data_dir).name
    info = DataInfo(name, list(dataset.tasks), input_spec or spec, bool(getattr(dataset, "one_vs_rest", False)),
                    skipped_images(dataset, split))
    return dataset, info


def open_unlabelled(source: DataSourceConfig, input_spec: InputSpec | None, split: str = "train"
                     ) -> tuple[Dataset, DataInfo]:
    """A folder of images without labels (kf_model.data.unlabelled): no tasks of its own; the job's task map
    or teacher names them."""
    if input_spec is None:
        raise KFError(f"--data-dir {source.data_dir} has no labels: distil it from a timm / torchvision / converted "
                      "teacher (whose config gives the input size) with --task-map FILE.json")
    augment = AugmentConfig() if source.augment == "heavy" else None
    dataset = UnlabelledImages(source.data_dir, input_spec, views_per_image=source.views_per_image, augment=augment,
                               skip_bad_images=source.skip_bad_images, max_image_pixels=source.max_image_pixels)
    return dataset, DataInfo(dataset.name, [], input_spec, False, skipped_images(dataset, split))


def load_training_data(config: DataConfig, input_spec: InputSpec | None = None
                       ) -> tuple[Dataset, Dataset | None, DataInfo]:
    """(train set, validation set or None, info). The validation images are a fixed carve-out of the train
    split (VALIDATION_SEED), never trained on by any stage; ``--limit`` then picks a seeded subset of the rest."""
    full, info = open_data_source(config.source, "train", input_spec)
    if config.val_size and not info.tasks:  # the validation measures accuracy: refused now, not after training
        raise KFError(f"--val-size {config.val_size}: {info.name} has no labels to measure accuracy on; leave "
                      "--val-size out (the teacher gives every target)")
    order = validation_order(len(full))
    if not 0 <= config.val_size < len(full):
        raise KFError(f"--val-size must be in [0, {len(full)}), got {config.val_size}")
    val_items, pool = order[:config.val_size], order[config.val_size:]
    if config.limit is not None:
        if config.limit < 1:
            raise KFError(f"--limit must be >= 1, got {config.limit}")
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.data_seed))[:config.limit]
        pool = pool[pick]
    return _subset(full, pool), (_subset(full, val_items) if config.val_size else None), info


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


def make_train_loader(train_set: Dataset, config: LoaderConfig) -> DataLoader:
    """The training DataLoader of ``fit`` (before ``accelerator.prepare``); the benchmark times the same one."""
    return DataLoader(train_set, batch_size=config.batch_size, drop_last=True, num_workers=config.num_workers,
                      sampler=EpochShuffleSampler(len(train_set), config.seed),
                      generator=torch.Generator().manual_seed(config.seed))  # worker seeds: not the global RNG


def batch_stream(accelerator: Accelerator, loader: DataLoader, start_batch: int) -> Iterator[tuple[int, Any]]:
    """Endless (epoch, batch) pairs of a prepared loader, starting ``start_batch`` micro-batches in."""
    epoch, skip = divmod(start_batch, len(loader))
    while True:
        loader.set_epoch(epoch)  # -> EpochShuffleSampler.set_epoch, on every process
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0
