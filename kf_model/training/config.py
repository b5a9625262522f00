"""What the library needs from a run's options, as small dataclasses that check themselves.

The train/ scripts parse flags (``kf_model.training.options``); :meth:`FromArgs.from_args` turns the parsed
options into these configs in one place (:func:`kf_model.training.fit`, ``train/evaluate.py``, the
benchmark), so library functions never read an ``argparse.Namespace``. Each config validates its own
fields in ``__post_init__``, as PEFT's configs do: a config built in code is held to the same rules as
the flags (ranges in ``options.py``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from kf_model.errors import InvalidArgumentError

TASK_MODES = ("one-vs-rest", "kway")
OPTIMIZERS = ("adamw", "sgd")

C = TypeVar("C", bound="FromArgs")


class FromArgs:
    """``from_args``: a config from the parsed options that name its fields (absent ones keep the default)."""

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace, **given: Any) -> C:
        values = {f.name: getattr(args, f.name) for f in fields(cls)  # type: ignore[arg-type]
                  if f.init and f.name not in given and hasattr(args, f.name)}
        return cls(**values, **given)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgumentError(message)


@dataclass(frozen=True)
class DataSourceConfig(FromArgs):
    """Where a run's images come from: a built-in dataset, ``hf:<repo>``, or a folder of your images."""

    dataset: str | None = None
    data_dir: str | None = None
    download: bool = False
    task_mode: str = "one-vs-rest"
    label_columns: tuple[str, ...] | None = None
    image_column: str = "image"
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        _require(bool(self.dataset or self.data_dir), "give a dataset (--dataset) or a folder of images (--data-dir)")
        _require(self.task_mode in TASK_MODES, f"task_mode must be one of {', '.join(TASK_MODES)}, "
                                               f"got {self.task_mode!r}")
        if self.label_columns is not None:
            object.__setattr__(self, "label_columns", tuple(self.label_columns))


@dataclass(frozen=True)
class DataConfig(FromArgs):
    """The training data: its source, the validation carve-out and the optional seeded subset."""

    source: DataSourceConfig
    val_size: int = 0
    limit: int | None = None
    data_seed: int = 0

    def __post_init__(self) -> None:
        _require(self.val_size >= 0, f"--val-size must be >= 0, got {self.val_size}")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **given: Any) -> DataConfig:
        given.setdefault("source", DataSourceConfig.from_args(args))
        return super().from_args(args, **given)


@dataclass(frozen=True)
class LoaderConfig(FromArgs):
    """The training DataLoader: batch size per process, worker processes, the seed of its order."""

    batch_size: int = 128
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _require(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class OptimizerConfig(FromArgs):
    """AdamW or SGD with decoupled weight decay."""

    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        _require(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                               f"got {self.optimizer!r}")
        _require(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _require(0 <= self.momentum <= 1, f"--momentum must be in [0, 1], got {self.momentum}")
        _require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig(FromArgs):
    """How long a run trains (optimizer steps) and its learning-rate schedule."""

    max_steps: int | None = None
    epochs: float | None = None
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01

    def __post_init__(self) -> None:
        _require(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        _require(self.epochs is None or self.epochs > 0, f"--epochs must be > 0, got {self.epochs}")
        _require(self.gradient_accumulation_steps >= 1,
                 f"--gradient-accumulation-steps must be >= 1, got {self.gradient_accumulation_steps}")
        _require(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        _require(0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class TeacherSourceConfig(FromArgs):
    """The frozen teacher: any form ``kf_model.teachers`` reads (a kf folder, ``timm:``, ``torchvision:``,
    ``hf-hub:``), the safetensors weights of a named architecture, and an input size that overrides its own."""

    teacher: str | None = None
    teacher_weights: str | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        _require(self.image_size is None or self.image_size >= 1, f"--image-size must be >= 1, got {self.image_size}")


@dataclass(frozen=True)
class FactorNetworksConfig(FromArgs):
    """The CKN's backbone and the TSNs' encoder of a factorization (factorize.py's network options)."""

    ckn_arch: str = "cnn"
    ckn_width: int = 16
    ckn_num_stages: int = 4
    ckn_stem_stride: int = 1
    coord_channels: bool = False
    tsn_widths: tuple[int, ...] = (8, 16, 32)
    tsn_strides: tuple[int, ...] = (2, 2, 2)
    variational: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tsn_widths", tuple(self.tsn_widths))
        object.__setattr__(self, "tsn_strides", tuple(self.tsn_strides))
        _require(len(self.tsn_widths) == len(self.tsn_strides),
                 f"--tsn-widths {list(self.tsn_widths)} and --tsn-strides {list(self.tsn_strides)} need the same "
                 "length")
