"""The runs of each experiment (claim b: disentanglement; the β / InfoMin sweep; claim c: transfer), and the
JSON assembled from the finished ones. Every stage trains without the validation carve-out (``VAL_SIZE``),
as the bundled recipes do, so one teacher and one factorization serve several experiments."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kf_model.experiments.runs import Run
from kf_model.experiments.stages import SETTINGS, Scale, Setting, SubsetFactorizeJob, SubsetTeacherJob
from kf_model.training import DistillJob, read_summary, run
from kf_model.training.loop import TRAINING_FILE

VAL_SIZE = 5_000  # the recipes' carve-out of the train split: never trained on, the sweep's validation split
CHECKPOINT_EVERY = 250
REFERENCE_BETA = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One network to train: a teacher, a KD student or a factorization, in ``<work>/stages/<name>``."""

    name: str
    job: str  # "teacher", "distill" or "factorize"
    tasks: tuple[str, ...] | None = None  # None: all of the dataset's tasks
    teacher: str | None = None  # the teacher stage it learns from
    seed: int = 0
    extra: tuple[str, ...] = ()  # more options, e.g. ("--beta", "0")

    @property
    def run_name(self) -> str:
        return f"train-{self.name}"


def stage_folder(work: Path, name: str) -> Path:
    return work / "stages" / name


def explicit_args(job: str, scale: Scale, setting: Setting) -> list[str]:
    """The sizes of a non-recipe scale (quick, tests) as flags; the full scale reads ``train/configs``."""
    coords = ["--coord-channels"] if setting.coord_channels else ["--no-coord-channels"]
    common = ["--dataset", setting.dataset, "--limit", str(scale.train_limit), "--batch-size", str(scale.batch_size),
              "--max-steps", str(scale.stage_steps), "--warmup-steps", str(min(100, scale.stage_steps // 10)),
              "--log-every", str(max(1, min(50, scale.stage_steps))), *coords]
    if job == "teacher":
        return [*common, "--width", str(scale.teacher_width), "--num-stages", str(scale.num_stages),
                "--stem-stride", str(setting.stem_stride)]
    if job == "distill":
        return [*common, "--width", str(scale.ckn_width), "--num-stages", str(scale.num_stages),
                "--stem-stride", str(setting.stem_stride)]
    init = "--init-ckn-from-teacher" if scale.teacher_width == scale.ckn_width else "--no-init-ckn-from-teacher"
    return [*common, "--ckn-width", str(scale.ckn_width), "--ckn-num-stages", str(scale.num_stages),
            "--ckn-stem-stride", str(setting.stem_stride), "--tsn-widths", *map(str, scale.tsn_widths),
            "--tsn-strides", *map(str, scale.tsn_strides), init, "--lambda-kd", "1.0", "--kd-temperature", "2.0",
            "--label-smoothing", "0.0"]


def stage_argv(stage: StageSpec, scale: Scale, setting: Setting, work: Path) -> list[str]:
    """The training script's command line of ``stage`` (later flags win over the config file and earlier ones)."""
    if scale.name == "full":
        base = ["--config", f"train/configs/{setting.dataset.replace('-', '_')}_{stage.job}.json"]
    else:
        base = explicit_args(stage.job, scale, setting)
    teacher = ["--teacher", str(stage_folder(work, stage.teacher))] if stage.teacher else []
    tasks = ["--tasks", *stage.tasks] if stage.tasks else []
    return [*base, *teacher, *tasks, *stage.extra, "--val-size", str(VAL_SIZE), "--seed", str(stage.seed),
            "--num-threads", "1", "--checkpoint-every", str(CHECKPOINT_EVERY), "--resume", "latest",
            "--output-dir", str(stage_folder(work, stage.name))]


def train_stage(stage: StageSpec, argv: list[str], folder: Path) -> dict[str, Any]:
    """Train ``stage`` (resuming its last checkpoint), or read it if it finished; its summary's essentials."""
    jobs = {"teacher": SubsetTeacherJob, "distill": DistillJob, "factorize": SubsetFactorizeJob}
    if not (folder / TRAINING_FILE).is_file():
        run(jobs[stage.job], argv)
    summary = read_summary(str(folder))
    keep = ("command", "steps", "seconds_per_step", "wall_time_s", "parameters", "validation",
            "teacher_validation", "validation_vs_teacher")
    return {"folder": str(folder), **{k: summary[k] for k in keep if k in summary}}


def stage_run(stage: StageSpec, scale: Scale, setting: Setting, work: Path) -> Run:
    argv = stage_argv(stage, scale, setting, work)
    return Run(stage.run_name, "train", lambda: train_stage(stage, argv, stage_folder(work, stage.name)))


# ============================================================================= the shared stages

TEACHER = StageSpec("teacher-all", "teacher")
KD_STUDENT = StageSpec("kd-student", "distill", teacher="teacher-all")


def factorization(seed: int = 0, beta: float = REFERENCE_BETA, infomin: str = "batch",
                  tsn_widths: tuple[int, ...] | None = None, init_ckn: bool = True) -> StageSpec:
    """A factorization of all tasks from the shared teacher (the recipe's, with these knobs changed)."""
    extra = ["--beta", f"{beta:g}", "--infomin", infomin, *(["--variational"] if infomin == "vib" else [])]
    name = f"bank-beta{beta:g}-{infomin}-s{seed}"
    if tsn_widths is not None:
        extra += ["--tsn-widths", *map(str, tsn_widths)]
        name += "-w" + "-".join(map(str, tsn_widths))
    if not init_ckn:
        extra += ["--no-init-ckn-from-teacher"]
        name += "-noinit"
    return StageSpec(name, "factorize", teacher="teacher-all", seed=seed, extra=tuple(extra))


def latent_widths(scale: Scale) -> tuple[int, ...]:
    """TSN widths ending in 2 channels: 5 TSNs give the 10-d latent of the reference's dSprites configs."""
    return (*scale.tsn_widths[:-1], 2)


def group_bounds(dims: int, groups: int) -> list[tuple[int, int]]:
    """``groups`` contiguous, near-equal slices of ``dims`` dims (the TSN blocks, or slices of a trunk's code)."""
    edges = np.linspace(0, dims, groups + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def grouped_importance(importance: Any, bounds: list[tuple[int, int]]) -> list[list[float]]:
    """DCI importance [D, K] summed over each group of dims -> [G, K], each factor's column summing to 1: how
    much of each factor each group's code carries."""
    matrix = np.asarray(importance, dtype=np.float64)
    grouped = np.stack([matrix[a:b].sum(axis=0) for a, b in bounds])
    totals = grouped.sum(axis=0)
    return (grouped / np.where(totals > 0, totals, 1.0)).round(4).tolist()


__all__ = ["CHECKPOINT_EVERY", "KD_STUDENT", "REFERENCE_BETA", "SETTINGS", "TEACHER", "VAL_SIZE", "StageSpec",
           "explicit_args", "factorization", "group_bounds", "grouped_importance", "latent_widths", "stage_argv",
           "stage_folder", "stage_run", "train_stage"]
