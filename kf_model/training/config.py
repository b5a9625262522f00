"""What the library needs from a run's options, as small dataclasses that check themselves.

The train/ scripts parse flags (``kf_model.training.options``); :meth:`FromArgs.from_args` turns the parsed
options into these configs in one place (:func:`kf_model.training.fit`, ``train/evaluate.py``, the
benchmark), so library functions never read an ``argparse.Namespace``. Each config validates its own
fields in ``__post_init__``, as PEFT's configs do: a config built in code is held to the same rules as
the flags (ranges in ``options.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from kf_model.data.tasks import TASK_MODES
from kf_model.errors import InvalidArgumentError, KFError
from kf_model.limits import MAX_IMAGE_PIXELS, MAX_INPUT_SIZE, MAX_STAGES
from kf_model.losses import IMBConfig
from kf_model.models import BACKBONES
from kf_model.training.options import (
    COUNT,
    MIXED_PRECISIONS,
    NON_NEGATIVE,
    OPTIMIZERS,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    SMOOTHING,
    STRIDE,
    TRACKERS,
    WIDTH,
    ranged,
)

C = TypeVar("C", bound="FromArgs")


class FromArgs:
    """``from_args``: a config from the parsed options that name its fields (absent ones keep the default); a
    field whose type is itself a config dataclass is built from the same options."""

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace, **given: Any) -> C:
        types = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if not f.init or f.name in given:
                continue
            kind = types[f.name]
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                values[f.name] = nested_from_args(kind, args)
            elif hasattr(args, f.name):
                values[f.name] = getattr(args, f.name)
        return cls(**values, **given)


def nested_from_args(kind: type, args: argparse.Namespace) -> Any:
    """A config dataclass from parsed options, also one outside this module (e.g. ``IMBConfig``)."""
    if issubclass(kind, FromArgs):
        return kind.from_args(args)
    return kind(**{f.name: getattr(args, f.name) for f in fields(kind) if f.init and hasattr(args, f.name)})


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise InvalidArgumentError(message)


def check_option(name: str, kind: Callable[[str], Any], value: Any) -> None:
    """Hold a config's value (None: not set) to the argparse type of its flag (``options.ranged``), so a config
    built in code meets the same ranges as the command line."""
    if value is None:
        return
    flag = f"--{name.replace('_', '-')}"
    _require(isinstance(value, int | float) and not isinstance(value, bool),
             f"{flag} must be a number, got {value!r}")
    try:
        kind(str(value))
    except argparse.ArgumentTypeError as error:
        raise InvalidArgumentError(f"{flag}: {error}") from None


def backbone_arch(value: str) -> str:
    """argparse type of --arch / --ckn-arch: a kf backbone or a registered timm name."""
    if value.startswith("timm:"):
        from kf_model.models.timm_names import check_timm_name

        try:
            check_timm_name(value[5:])
        except KFError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value
    if value not in BACKBONES:
        raise argparse.ArgumentTypeError(f"unknown architecture {value!r}: choose {', '.join(BACKBONES)} or "
                                         "timm:<name>")
    return value


def _check_arch(name: str, value: Any) -> None:
    _require(isinstance(value, str), f"--{name.replace('_', '-')} must be a string, got {value!r}")
    try:
        backbone_arch(value)
    except argparse.ArgumentTypeError as error:
        raise InvalidArgumentError(f"--{name.replace('_', '-')}: {error}") from None


NUM_STAGES = ranged(int, 3, MAX_STAGES)
IMAGE_SIZE = ranged(int, 1, MAX_INPUT_SIZE)


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
    max_image_pixels: int = MAX_IMAGE_PIXELS
    unlabelled: bool = False
    augment: str = "none"
    views_per_image: int = 1

    def __post_init__(self) -> None:
        _require(bool(self.dataset or self.data_dir), "give a dataset (--dataset) or a folder of images (--data-dir)")
        _require(self.augment in ("none", "heavy"), f"--augment must be none or heavy, got {self.augment!r}")
        _require(isinstance(self.views_per_image, int) and self.views_per_image >= 1,
                 f"--views-per-image must be >= 1, got {self.views_per_image}")
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
        _check_arch("ckn_arch", self.ckn_arch)
        for name, kind in (("ckn_width", WIDTH), ("ckn_num_stages", NUM_STAGES), ("ckn_stem_stride", STRIDE)):
            check_option(name, kind, getattr(self, name))
        for width, stride in zip(self.tsn_widths, self.tsn_strides, strict=True):
            check_option("tsn_widths", WIDTH, width)
            check_option("tsn_strides", STRIDE, stride)


def recorded_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as a run records them (training.json's ``args``, the trackers' config)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("argv", "config")}


@dataclass(frozen=True)
class RunConfig(FromArgs):
    """How :func:`~kf_model.training.fit` runs a job: outputs, device and precision, checkpoints, logging; and
    what the run records of its command (``argv``) and of its option values (``options``)."""

    output_dir: str | None = None  # fit needs one; a job built only for its networks does not
    seed: int = 0
    cpu: bool = False
    mixed_precision: str = "no"
    num_threads: int | None = None
    eval_batch_size: int = 256
    clip_grad_norm: float = 0.0
    checkpoint_every: int = 0
    checkpoints_total_limit: int = 2
    resume: str | None = None
    stop_after_steps: int | None = None
    log_with: str = "none"
    log_every: int = 20
    argv: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        _require(self.mixed_precision in MIXED_PRECISIONS,
                 f"--mixed-precision must be one of {', '.join(MIXED_PRECISIONS)}, got {self.mixed_precision!r}")
        _require(self.log_with in TRACKERS, f"--log-with must be one of {', '.join(TRACKERS)}, got {self.log_with!r}")
        for name, kind in (("seed", SEED), ("num_threads", POSITIVE_INT), ("eval_batch_size", POSITIVE_INT),
                           ("clip_grad_norm", NON_NEGATIVE), ("checkpoint_every", COUNT),
                           ("checkpoints_total_limit", POSITIVE_INT), ("stop_after_steps", POSITIVE_INT),
                           ("log_every", POSITIVE_INT)):
            check_option(name, kind, getattr(self, name))

    @classmethod
    def from_args(cls, args: argparse.Namespace, **given: Any) -> RunConfig:
        given.setdefault("options", recorded_options(args))
        return super().from_args(args, **given)


@dataclass(frozen=True)
class JobConfig(FromArgs):
    """Everything a job's run reads: what every script shares (data, loader, optimizer, schedule, run); each job's
    config adds its own fields. ``Job.config_class.from_args`` is where a script's parsed flags become one."""

    data: DataConfig
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass(frozen=True)
class ArchitectureConfig(FromArgs):
    """A Teacher-class network's backbone (--arch, --width, --num-stages, --stem-stride, --coord-channels);
    ``width`` None lets the job choose it (distill.py --match-factorization)."""

    arch: str = "cnn"
    width: int | None = 32
    num_stages: int = 4
    stem_stride: int = 1
    coord_channels: bool = False

    def __post_init__(self) -> None:
        _check_arch("arch", self.arch)
        for name, kind in (("width", WIDTH), ("num_stages", NUM_STAGES), ("stem_stride", STRIDE)):
            check_option(name, kind, getattr(self, name))


@dataclass(frozen=True)
class TeacherJobConfig(JobConfig):
    """train_teacher.py: a teacher from ``backbone``, or a pretrained network (``from_model``: timm:NAME /
    torchvision:NAME with ``teacher_weights``) with a new head, as a linear probe or fine-tuned."""

    backbone: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    label_smoothing: float = 0.1
    from_model: str | None = None
    teacher_weights: str | None = None
    finetune: bool = False
    image_size: int | None = None

    def __post_init__(self) -> None:
        check_option("label_smoothing", SMOOTHING, self.label_smoothing)
        check_option("image_size", IMAGE_SIZE, self.image_size)


@dataclass(frozen=True)
class DistillJobConfig(JobConfig):
    """distill.py: a Teacher-class student (CE + KD) from a frozen teacher; ``match_factorization`` (a factorize.py
    config file) reports its size and, with no ``student.width``, picks the closest width."""

    teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    student: ArchitectureConfig = field(default_factory=lambda: ArchitectureConfig(width=None))
    match_factorization: str | None = None
    label_smoothing: float = 0.1
    lambda_kd: float = 1.0
    kd_temperature: float = 4.0

    def __post_init__(self) -> None:
        _require(self.teacher.teacher, "distill needs a teacher (--teacher)")
        _require(self.student.width is not None or self.match_factorization,
                 "distill.py needs --width or --match-factorization CONFIG")
        for name, kind in (("label_smoothing", SMOOTHING), ("lambda_kd", NON_NEGATIVE),
                           ("kd_temperature", POSITIVE)):
            check_option(name, kind, getattr(self, name))


@dataclass(frozen=True)
class FactorizeJobConfig(JobConfig):
    """factorize.py: CKN + TSNs (``networks``) trained with the IMB ``objective`` from a frozen teacher; the
    bank is optionally pushed to the Hub."""

    teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    networks: FactorNetworksConfig = field(default_factory=FactorNetworksConfig)
    objective: IMBConfig = field(default_factory=IMBConfig)
    init_ckn_from_teacher: bool = False
    freeze_ckn_stages: int = 0
    task_map: str | None = None
    push_to_hub: str | None = None
    hub_tag: str | None = None
    hub_private: bool = False

    def __post_init__(self) -> None:
        _require(self.teacher.teacher, "factorize needs a teacher (--teacher)")
        _require(self.freeze_ckn_stages >= 0, f"--freeze-ckn-stages must be >= 0, got {self.freeze_ckn_stages}")
        _require(not self.freeze_ckn_stages or self.init_ckn_from_teacher,
                 "--freeze-ckn-stages keeps the teacher's early stages: it needs --init-ckn-from-teacher")
        _require(self.objective.infomin != "vib" or self.networks.variational,
                 "--infomin vib needs --variational (the TSNs must output mu and logvar)")
        if self.push_to_hub is not None:  # checked before training, not refused by the Hub after it
            try:
                validate_repo_id(self.push_to_hub)
            except HFValidationError:
                raise InvalidArgumentError(f"--push-to-hub {self.push_to_hub[:100]!r} is not a Hub repo id "
                                           "('owner/name')") from None
