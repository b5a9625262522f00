"""What the benchmark measures: banks (loaded, or built untrained from a recipe), teachers, training jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kf_model.bench.settings import CONFIG_DIR
from kf_model.bench.timing import Device
from kf_model.utils import REPO_ROOT

# ============================================================================= banks, teachers, training jobs

@dataclass
class BenchBank:
    """A bank to measure, with its teacher and the configuration its training runs with."""

    key: str  # folder name: "dsprites"
    path: Path
    loaded: bool  # loaded from its folder (else: untrained, built from the recipe)
    bank: Any  # FactorBank
    teacher: nn.Module
    teacher_source: str
    info: Any  # kf_model.training.DataInfo
    factorize_config: Path  # a factorize.py --config file
    factorize_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.info.name

    def summary(self) -> dict[str, Any]:
        from kf_model.utils import count_parameters

        weights = "from the bank folder" if self.loaded else "untrained, built from the recipe"
        return {"path": str(self.path), "dataset": self.dataset, "weights": weights,
                "tasks": [t.name for t in self.bank.tasks], "teacher": self.teacher_source,
                "training_config": self.factorize_source, "parameters": {
                    "teacher": count_parameters(self.teacher), **self.bank.parameter_counts()}}


def recipe_config(dataset: str, stage: str) -> Path:
    return CONFIG_DIR / f"{dataset.replace('-', '_')}_{stage}.json"


def dataset_info(dataset: str) -> Any:
    from kf_model.data import DSPRITES_INPUT_SPEC, DSPRITES_TASKS, FASHION_MNIST_INPUT_SPEC, FASHION_MNIST_TASKS
    from kf_model.training import DataInfo

    known = {"dsprites": (DSPRITES_TASKS, DSPRITES_INPUT_SPEC, False),
             "fashion-mnist": (FASHION_MNIST_TASKS, FASHION_MNIST_INPUT_SPEC, True)}
    if dataset not in known:
        raise ValueError(f"{dataset!r} is neither an existing factor bank folder nor a dataset with a recipe "
                         f"({', '.join(known)})")
    tasks, spec, one_vs_rest = known[dataset]
    return DataInfo(dataset, list(tasks), spec, one_vs_rest)


def parse_job_args(job_class: type, argv: list[str]) -> argparse.Namespace:
    from kf_model.training import parse_args

    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            return parse_args(job_class.parser(), argv, required=())
        except SystemExit as error:
            raise ValueError(f"{job_class.__name__} {' '.join(argv)}: {err.getvalue().strip()}") from error


def parse_job_config(job_class: type, argv: list[str], info: Any) -> Any:
    """``job_class``'s config (``config_class``) from a command line, for a job built on ``info`` without reading
    its data (the data options name ``info``'s dataset); a refusal is a ValueError, as for the parse."""
    from kf_model.errors import KFError
    from kf_model.training import DataConfig, DataSourceConfig

    args = parse_job_args(job_class, argv)
    try:
        return job_class.config_class.from_args(args, data=DataConfig(DataSourceConfig(dataset=info.name)))
    except KFError as error:
        raise ValueError(f"{job_class.__name__} {' '.join(argv)}: {error}") from error


def recipe_teacher(info: Any) -> nn.Module:
    """The teacher of the recipe (``train/configs/<dataset>_teacher.json``), built by ``TeacherJob``."""
    from kf_model.training import TeacherJob

    job = TeacherJob(parse_job_config(TeacherJob, ["--config", str(recipe_config(info.name, "teacher"))], info), info)
    job.build()
    return job.model


def load_bench_bank(path_text: str, work: Path) -> BenchBank:
    """A bank folder -> loaded; a missing folder named after a dataset -> an untrained bank from its recipe."""
    from kf_model.bank import MANIFEST_FILE, FactorBank
    from kf_model.models import Teacher
    from kf_model.training import DataInfo, FactorizeJob, FactorNetworksConfig, build_factor_networks

    path = Path(path_text)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    key = path.name
    notes: list[str] = []
    if (path / MANIFEST_FILE).is_file():
        bank = FactorBank.from_pretrained(path)
        manifest = bank.manifest
        dataset = manifest.dataset or key
        teacher_summary = manifest.teacher or {}
        one_vs_rest = bool(teacher_summary.get("one_vs_rest")) or dataset == "fashion-mnist"
        info = DataInfo(dataset, list(manifest.tasks), manifest.input_spec, one_vs_rest)
        if isinstance(teacher_summary.get("backbone"), dict):
            teacher = Teacher(teacher_summary["backbone"], [t.to_dict() for t in manifest.tasks], one_vs_rest)
            teacher_source = "architecture from the bank manifest's teacher summary (untrained weights)"
        elif recipe_config(dataset, "teacher").is_file():
            teacher = recipe_teacher(info)
            teacher_source = f"architecture from {recipe_config(dataset, 'teacher').relative_to(REPO_ROOT)} (untrained)"
        else:
            ckn_backbone = bank.ckn.init_config["backbone"]
            teacher = Teacher(ckn_backbone, [t.to_dict() for t in manifest.tasks], one_vs_rest)
            teacher_source = "not recorded: the CKN's architecture (untrained weights)"
        training = (manifest.training or {}).get("config")
        factorize_config, factorize_source = recipe_config(dataset, "factorize"), ""
        if isinstance(training, dict):
            candidate = work / f"{key}-factorize.json"
            candidate.write_text(json.dumps({k: v for k, v in training.items() if v is not None}))
            try:
                parse_job_args(FactorizeJob, ["--config", str(candidate)])
                factorize_config, factorize_source = candidate, "the bank manifest's training configuration"
            except ValueError as error:
                notes.append(f"the manifest's training configuration is not usable here ({error}); using the recipe")
        if not factorize_source:
            if not factorize_config.is_file():
                raise ValueError(f"{path}: its manifest records no training configuration and {dataset!r} has no "
                                 "recipe in train/configs/")
            factorize_source = str(factorize_config.relative_to(REPO_ROOT))
        return BenchBank(key, path, True, bank, teacher.eval(), teacher_source, info, factorize_config,
                         factorize_source, notes)

    info = dataset_info(key)
    factorize_config = recipe_config(key, "factorize")
    options = parse_job_args(FactorizeJob, ["--config", str(factorize_config)])
    ckn, tsns = build_factor_networks(FactorNetworksConfig.from_args(options), info)
    teacher = recipe_teacher(info)
    bank = FactorBank.from_modules(ckn, tsns, input_spec=info.input_spec, dataset=key, teacher={
        "description": "untrained, built by kf_model.bench from the recipe", "one_vs_rest": info.one_vs_rest,
        "backbone": teacher.init_config["backbone"]})
    notes.append(f"{path_text} does not exist: untrained bank and teacher built from train/configs/"
                 f"{key.replace('-', '_')}_*.json (speed does not depend on the weights)")
    return BenchBank(key, path, False, bank, teacher.eval(),
                     f"architecture from {recipe_config(key, 'teacher').relative_to(REPO_ROOT)} (untrained)", info,
                     factorize_config, str(factorize_config.relative_to(REPO_ROOT)), notes)


@dataclass
class TrainingSetup:
    """One job's networks, objective and optimizer, as ``kf_model.training.fit`` builds them."""

    job: Any
    model: nn.Module
    objective: nn.Module | None
    optimizer: torch.optim.Optimizer
    batch_size: int

    def step_fn(self, images: Tensor, targets: Tensor, device: Device) -> Callable[[], None]:
        """One optimizer step on this batch: the body of ``fit``'s loop (autocast, loss, backward, step)."""
        job, model, objective, optimizer = self.job, self.model, self.objective, self.optimizer

        def step() -> None:
            with device.autocast():
                loss, _ = job.loss(model, objective, images, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step


def build_training(job_class: type, argv: list[str], info: Any, device: Device,
                   batch_size: int | None) -> TrainingSetup:
    from kf_model.errors import KFError
    from kf_model.training import build_optimizer

    config = parse_job_config(job_class, argv, info)
    if batch_size is not None:
        config = replace(config, loader=replace(config.loader, batch_size=batch_size))
    job = job_class(config, info)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            job.build()
        except KFError:  # e.g. a CKN that cannot start from this teacher: speed does not depend on it
            if not getattr(config, "init_ckn_from_teacher", False):
                raise
            job = job_class(replace(config, init_ckn_from_teacher=False), info)
            job.build()
    job.teacher.to(device.device)
    job.model.to(device.device).train()
    if job.objective is not None:
        job.objective.to(device.device).train()
    trainable = [job.model] + ([job.objective] if job.objective is not None else [])
    return TrainingSetup(job, job.model, job.objective, build_optimizer(trainable, config.optimizer),
                         config.loader.batch_size)


def training_loader(data: Any, loader: Any) -> tuple[Any, torch.utils.data.DataLoader]:
    """The training set and its DataLoader (``DataConfig``, ``LoaderConfig``), as ``kf_model.training.fit`` builds
    them."""
    from kf_model import training

    train_set, _, _ = training.load_training_data(data)
    return train_set, training.make_train_loader(train_set, loader)
