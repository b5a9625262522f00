"""One transfer run (a held-out task learnt by one method from some of the labels) as a job of kf's one
training loop (``kf_model.training.fit``): checkpoints, ``--resume latest``, the validation report and the
recorded command come with it. :func:`train_transfer_run` is the only entry point the experiments use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kf_model.bank import FactorBank, load_module
from kf_model.data import load_dataset
from kf_model.data.columns import TaskColumns, task_column
from kf_model.errors import KFError
from kf_model.experiments.transfer import LinearProbe, test_accuracy, transfer_model
from kf_model.losses import IMBConfig, IMBObjective
from kf_model.models import Teacher
from kf_model.training import (
    TRAINING_FILE,
    DataConfig,
    DataSourceConfig,
    Job,
    JobConfig,
    LoaderConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    fit,
    read_summary,
)
from kf_model.training.add_task import NewTaskNetwork, Trunk, factor_loss, new_tsn

TRANSFER_METHODS = ("kf_tsn", "teacher_tsn", "ckn_probe", "scratch")
WIDE = "kf_tsn_wide"  # the trunk-level question: does a TSN of twice the width close the gap on the frozen CKN?


@dataclass(frozen=True)
class TransferJobConfig(JobConfig):
    method: str = "kf_tsn"
    task: str | None = None
    base_bank: str | None = None
    base_teacher: str | None = None
    test_limit: int = 10_000

    def __post_init__(self) -> None:
        if self.method not in (*TRANSFER_METHODS, WIDE):
            raise KFError(f"unknown transfer method {self.method!r}; known: {', '.join((*TRANSFER_METHODS, WIDE))}")
        if not (self.task and self.base_bank and self.base_teacher):
            raise KFError("a transfer run needs a task, a base bank and a base teacher")


def method_model(method: str, task: str, bank: FactorBank, teacher: Teacher, spec: Any) -> tuple[nn.Module, IMBConfig]:
    """The network and objective config of ``method`` (``transfer_model``'s, plus the wide TSN on the frozen CKN)."""
    if method != WIDE:
        return transfer_model(method, spec, bank, teacher)
    _, loss = transfer_model("kf_tsn", spec, bank, teacher)
    widths = [2 * w for w in next(iter(bank.tsns.values())).encoder_config.widths]
    return NewTaskNetwork(Trunk(bank.ckn), new_tsn(bank, spec, widths=widths)), loss


class TransferJob(Job):
    """A held-out task on a base factorization's networks; the test accuracy is written into training.json."""

    name = "transfer"
    script = "train/experiments.py"
    kway_model = False
    config_class = TransferJobConfig
    config: TransferJobConfig

    def __init__(self, config: TransferJobConfig, info: Any) -> None:
        super().__init__(config, info)
        self.column = task_column(info.tasks, config.task, info.name)
        self.spec = info.tasks[self.column]
        info.tasks, info.one_vs_rest = [self.spec], False

    def select_data(self, dataset: Dataset) -> Dataset:
        return TaskColumns(dataset, [self.column])

    def build(self) -> None:
        bank = FactorBank.from_pretrained(self.config.base_bank)
        teacher = load_module(Teacher, Path(self.config.base_teacher), "base teacher")
        self.model, objective_config = method_model(self.config.method, self.spec.name, bank, teacher, self.spec)
        self.criterion = IMBObjective.frozen_ckn(objective_config)

    def loss(self, model, objective, images, targets):
        return factor_loss(self.criterion, model(images), self.spec.name, targets[:, 0])

    def predict(self, model, images):
        return {self.spec.name: model(images).logits}

    def parameter_counts(self) -> dict[str, int]:
        trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"trained": trained, "model": sum(p.numel() for p in self.model.parameters())}

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        test = load_dataset(self.info.name, "test", limit=self.config.test_limit, seed=0)
        images, targets = test.get_batch(torch.arange(len(test)))
        summary["test_accuracy"] = test_accuracy(model, images, targets[:, self.column])
        summary["test_images"] = len(test)


@dataclass(frozen=True)
class TransferRun:
    """What one transfer run is: the method, the task, how many labels (a seeded subset of the pool)."""

    dataset: str
    method: str
    task: str
    labels: int  # images of the pool whose labels are used (--limit of the pool minus the validation carve-out)
    seed: int  # label subset and initialisation
    steps: int
    lr: float
    batch_size: int
    val_size: int
    test_limit: int


def train_transfer_run(run: TransferRun, base_bank: Path, base_teacher: Path, output: Path, *,
                       checkpoint_every: int, argv: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train (or resume, or just read) one transfer run in ``output``; returns its accuracies and cost."""
    if not (output / TRAINING_FILE).is_file():
        config = TransferJobConfig(
            data=DataConfig(DataSourceConfig(run.dataset), val_size=run.val_size, limit=run.labels,
                            data_seed=run.seed),
            loader=LoaderConfig(batch_size=run.batch_size, seed=run.seed),
            optimizer=OptimizerConfig(lr=run.lr),
            schedule=ScheduleConfig(max_steps=run.steps, warmup_steps=min(100, run.steps // 10)),
            run=RunConfig(output_dir=str(output), seed=run.seed, num_threads=1, checkpoint_every=checkpoint_every,
                          resume="latest", log_every=max(1, min(50, run.steps)), argv=argv),
            method=run.method, task=run.task, base_bank=str(base_bank), base_teacher=str(base_teacher),
            test_limit=run.test_limit)
        fit(TransferJob, config)
    summary = read_summary(str(output))
    return {"test_accuracy": summary["test_accuracy"], "test_images": summary["test_images"],
            "validation_accuracy": summary["validation"]["mean_accuracy"] / 100,
            "train_images": summary["train_images"],
            "steps": summary["steps"], "seconds_per_step": summary["seconds_per_step"],
            "parameters": summary["parameters"], "wall_time_s": summary["wall_time_s"]}


__all__ = ["TRANSFER_METHODS", "WIDE", "LinearProbe", "TransferJob", "TransferJobConfig", "TransferRun",
           "method_model", "test_accuracy", "train_transfer_run"]
