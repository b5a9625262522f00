"""The experiments' settings (which tasks a dataset's base factorization sees), their sizes
(``Scale``), and the training stages they run on some of the tasks (teacher, factorization, KD student)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from kf_model.data.columns import TaskColumns, task_column
from kf_model.experiments.disentanglement import Budget
from kf_model.training import DistillJob, FactorizeJob, FactorizeJobConfig, TeacherJob, TeacherJobConfig, run

# ============================================================================= settings

@dataclass(frozen=True)
class Setting:
    """Which tasks a dataset's base factorization sees and which are held out."""

    dataset: str
    base_tasks: tuple[str, ...]
    held_out: tuple[str, ...]
    coord_channels: bool
    stem_stride: int


SETTINGS = {
    "dsprites": Setting("dsprites", ("shape", "scale", "orientation"), ("pos_x", "pos_y"), True, 2),
    "fashion-mnist": Setting("fashion-mnist", ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal",
                                               "shirt"), ("sneaker", "bag", "ankle_boot"), False, 1),
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the experiments: ``quick()`` for a shared CPU, ``full()`` as train/configs."""

    name: str
    train_limit: int  # images of the training pool (and of every stage's training set)
    test_limit: int
    teacher_width: int
    ckn_width: int
    num_stages: int
    tsn_widths: tuple[int, ...]
    tsn_strides: tuple[int, ...]
    stage_steps: int  # teacher, KD student and factorization
    transfer_steps: int
    transfer_lr: float  # every method's peak LR (AdamW, cosine); 2e-3 left the linear probe at chance
    batch_size: int
    seeds: tuple[int, ...]
    budget: Budget

    @classmethod
    def quick(cls) -> Scale:
        return cls("quick", train_limit=3000, test_limit=1000, teacher_width=8, ckn_width=8, num_stages=3,
                   tsn_widths=(8, 16), tsn_strides=(4, 2), stage_steps=300, transfer_steps=300, transfer_lr=1e-2,
                   batch_size=64,
                   seeds=(0, 1, 2), budget=Budget.quick())

    @classmethod
    def full(cls) -> Scale:
        return cls("full", train_limit=60000, test_limit=10000, teacher_width=16, ckn_width=16, num_stages=4,
                   tsn_widths=(8, 16, 32), tsn_strides=(4, 2, 2), stage_steps=2000, transfer_steps=2000,
                   transfer_lr=5e-3, batch_size=128, seeds=(0, 1, 2), budget=Budget())


TRANSFER_EPOCHS = 20  # passes over a transfer run's labelled images
MIN_TRANSFER_STEPS = 300


def transfer_steps(scale: Scale, labels: int) -> int:
    """Steps of a transfer run with ``labels`` labelled images: 20 passes over them, at least 300, at most the
    scale's ``transfer_steps``. 1 % of the labels is fitted (and over-fitted) long before the 2,000 steps that
    all of them need; every method of a cell gets the same count."""
    batches_per_pass = math.ceil(labels / max(1, min(scale.batch_size, labels)))
    return min(scale.transfer_steps, max(MIN_TRANSFER_STEPS, TRANSFER_EPOCHS * batches_per_pass))


# ============================================================================= stages on some of the tasks

@dataclass(frozen=True)
class SubsetTeacherJobConfig(TeacherJobConfig):
    tasks: Sequence[str] | None = None  # --tasks: the dataset's tasks to train on (None: all)


@dataclass(frozen=True)
class SubsetFactorizeJobConfig(FactorizeJobConfig):
    tasks: Sequence[str] | None = None


class TaskSubset:
    """Mixin for a training job: train on the tasks named by ``--tasks`` only (as independent tasks)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)  # type: ignore[misc]
        parser.add_argument("--tasks", nargs="+", help="the dataset's tasks to train on (default: all)")

    def __init__(self, config: SubsetTeacherJobConfig | SubsetFactorizeJobConfig, info: Any) -> None:
        super().__init__(config, info)  # type: ignore[call-arg]
        names = config.tasks or [t.name for t in info.tasks]
        self.columns = [task_column(info.tasks, n, info.name) for n in names]
        if config.tasks:
            info.tasks, info.one_vs_rest = [info.tasks[c] for c in self.columns], False

    def select_data(self, dataset: Dataset) -> Dataset:
        return TaskColumns(dataset, self.columns)


class SubsetTeacherJob(TaskSubset, TeacherJob):
    config_class = SubsetTeacherJobConfig


class SubsetFactorizeJob(TaskSubset, FactorizeJob):
    config_class = SubsetFactorizeJobConfig


def _stage_args(scale: Scale, setting: Setting, output: Path, seed: int = 0) -> list[str]:
    return ["--dataset", setting.dataset, "--limit", str(scale.train_limit), "--batch-size", str(scale.batch_size),
            "--max-steps", str(scale.stage_steps), "--warmup-steps", str(min(100, scale.stage_steps // 10)),
            "--log-every", "50", "--num-threads", "1", "--seed", str(seed), "--output-dir", str(output)]


def _coords(setting: Setting) -> list[str]:
    return ["--coord-channels"] if setting.coord_channels else ["--no-coord-channels"]


def train_teacher(scale: Scale, setting: Setting, output: Path, tasks: tuple[str, ...] | None,
                  extra: tuple[str, ...] = ()) -> Path:
    if not (output / "model.safetensors").is_file():
        run(SubsetTeacherJob, [*_stage_args(scale, setting, output), "--width", str(scale.teacher_width),
                               "--num-stages", str(scale.num_stages), "--stem-stride", str(setting.stem_stride),
                               *_coords(setting), *(["--tasks", *tasks] if tasks else []), *extra])
    return output


def factorize(scale: Scale, setting: Setting, teacher: Path, output: Path, tasks: tuple[str, ...] | None,
              tsn_widths: tuple[int, ...] | None = None, extra: tuple[str, ...] = ()) -> Path:
    """A factorization at ``scale`` (``extra``: more factorize options, e.g. ``--beta``; later ones win)."""
    if not (output / "factors.json").is_file():
        widths = tsn_widths or scale.tsn_widths
        run(SubsetFactorizeJob, [
            *_stage_args(scale, setting, output), "--teacher", str(teacher), "--ckn-width", str(scale.ckn_width),
            "--ckn-num-stages", str(scale.num_stages), "--ckn-stem-stride", str(setting.stem_stride),
            *_coords(setting), "--tsn-widths", *map(str, widths), "--tsn-strides", *map(str, scale.tsn_strides),
            "--init-ckn-from-teacher" if scale.teacher_width == scale.ckn_width else "--no-init-ckn-from-teacher",
            "--lambda-kd", "1.0", "--kd-temperature", "2.0", "--label-smoothing", "0.0",
            *(["--tasks", *tasks] if tasks else []), *extra])
    return output


def distill(scale: Scale, setting: Setting, teacher: Path, output: Path) -> Path:
    if not (output / "model.safetensors").is_file():
        run(DistillJob, [*_stage_args(scale, setting, output), "--teacher", str(teacher),
                         "--width", str(scale.ckn_width), "--num-stages", str(scale.num_stages),
                         "--stem-stride", str(setting.stem_stride), *_coords(setting)])
    return output
