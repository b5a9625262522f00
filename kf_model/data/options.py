"""`SourceOptions`: how `open_dataset` reads a data source, one object that validates itself."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from kf_model.data.specs import InputSpec
from kf_model.data.splits import check_fractions, check_split
from kf_model.data.tasks import check_task_mode
from kf_model.errors import InvalidConfigError
from kf_model.limits import MAX_IMAGE_PIXELS, MAX_TRAINING_IMAGE_PIXELS, check_int, check_text


@dataclass(frozen=True)
class SourceOptions:
    """Everything but the source's name; the fields are `open_dataset`'s keyword arguments."""

    split: str = field(default="train", metadata={"help": "train, val or test"})
    input_spec: InputSpec | None = field(default=None, metadata={
        "help": "channels, size, mean, std of the network (the teacher's config); None: inferred from the images"})
    task_mode: str = field(default="one-vs-rest", metadata={
        "help": "a single K-class label as K binary tasks (one-vs-rest) or as one K-way task (kway)"})
    label_columns: tuple[str, ...] | None = field(default=None, metadata={
        "help": "metadata / 🤗 columns that are labels (one task each); None: all of them"})
    image_column: str = field(default="image", metadata={"help": "the 🤗 dataset column holding the images"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of train carved out as val when missing"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of train carved out as test when missing"})
    split_seed: int = field(default=0, metadata={"help": "seed of a carved split (recorded in split_info)"})
    limit: int | None = field(default=None, metadata={"help": "a seeded subset of this many items"})
    seed: int = field(default=0, metadata={"help": "seed of the limit subset"})
    skip_bad_images: bool = field(default=False, metadata={
        "help": "skip (and count) images that fail the scan instead of refusing the data"})
    max_image_pixels: int = field(default=MAX_IMAGE_PIXELS, metadata={
        "help": "images larger than this (width x height) are refused by the scan, with their names"})
    streaming: bool = field(default=False, metadata={"help": "🤗 datasets only: iterate without downloading all"})
    root: str | os.PathLike | None = field(default=None, metadata={
        "help": "built-ins: the folder holding their files; hf: the datasets cache folder"})
    download: bool = field(default=False, metadata={"help": "built-ins: download missing files"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", check_split(self.split))
        check_task_mode(self.task_mode)
        check_fractions(self.val_fraction, self.test_fraction)
        if isinstance(self.input_spec, dict):
            object.__setattr__(self, "input_spec", InputSpec.from_dict(self.input_spec))
        elif self.input_spec is not None and not isinstance(self.input_spec, InputSpec):
            raise InvalidConfigError(f"input_spec must be an InputSpec or None, got {type(self.input_spec).__name__}")
        if self.label_columns is not None:
            columns = (self.label_columns,) if isinstance(self.label_columns, str) else tuple(self.label_columns)
            for i, column in enumerate(columns):
                check_text(f"label_columns[{i}]", column)
            object.__setattr__(self, "label_columns", columns)
        check_text("image_column", self.image_column)
        check_int("max_image_pixels", self.max_image_pixels, 1, MAX_TRAINING_IMAGE_PIXELS)
        for name in ("split_seed", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigError(f"{name} must be an integer, got {value!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise InvalidConfigError(f"limit must be a positive integer or None, got {self.limit!r}")

    def with_split(self, split: str) -> SourceOptions:
        return replace(self, split=split)

    def describe(self) -> dict[str, Any]:
        """The options that decide which items and targets a run saw, JSON-able (for a run record)."""
        return {"split": self.split, "task_mode": self.task_mode, "label_columns": self.label_columns and
                list(self.label_columns), "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "split_seed": self.split_seed, "limit": self.limit, "seed": self.seed}
