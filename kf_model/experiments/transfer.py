"""Transfer of the CKN: each held-out task learnt from a fraction of its labels by a new TSN on the
frozen CKN, the same TSN on the teacher's trunk, a linear probe, and from scratch (see the package doc)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from kf_model.bank import FactorBank, load_module
from kf_model.data import load_dataset
from kf_model.data.specs import TaskSpec
from kf_model.errors import KFError
from kf_model.experiments.stages import Scale, Setting, factorize, train_teacher, transfer_steps
from kf_model.losses import IMBConfig
from kf_model.models import CommonKnowledgeNetwork, TaskSpecificNetwork, Teacher, TSNOutput
from kf_model.training.add_task import (
    FROZEN_CKN_OBJECTIVE,
    NewTaskNetwork,
    Trunk,
    fit_new_factor,
    new_tsn,
    task_column,
)

METHODS = ("kf_tsn", "teacher_tsn", "ckn_probe", "scratch")
FRACTIONS = (0.01, 0.1, 1.0)


# ============================================================================= transfer

class LinearProbe(nn.Module):
    """A linear head on a frozen trunk, shaped like a TSN's output so the same loop trains it."""

    def __init__(self, trunk: Trunk, num_classes: int) -> None:
        super().__init__()
        self.trunk, self.head = trunk, nn.Linear(trunk.width, num_classes)

    def forward(self, x: Tensor) -> TSNOutput:
        with torch.no_grad():
            z = self.trunk(x)
        logits = self.head(z)
        return TSNOutput(logits, logits, z, None, None)


def transfer_model(method: str, spec: TaskSpec, bank: FactorBank, teacher: Teacher) -> tuple[nn.Module, IMBConfig]:
    """The network and objective of one transfer method (see the module docstring): the frozen-CKN IMB objective
    without a teacher (CE + aux CE + InfoMin); a linear probe has neither aux head nor InfoMin."""
    loss = replace(FROZEN_CKN_OBJECTIVE, label_smoothing=0.1, beta=1e-3, lambda_kd=0.0)
    if method == "kf_tsn":
        return NewTaskNetwork(Trunk(bank.ckn), new_tsn(bank, spec)), loss
    if method == "teacher_tsn":
        trunk = Trunk(teacher)
        like = new_tsn(bank, spec)
        tsn = TaskSpecificNetwork(spec.to_dict(), asdict(like.encoder_config), trunk.width)
        return NewTaskNetwork(trunk, tsn), loss
    if method == "ckn_probe":
        return LinearProbe(Trunk(bank.ckn), spec.num_classes), replace(loss, task_weight=0.0, beta=0.0)
    if method == "scratch":
        ckn = CommonKnowledgeNetwork(**bank.ckn.init_config)
        return NewTaskNetwork(Trunk(ckn, trainable=True), new_tsn(bank, spec)), loss
    raise KFError(f"unknown transfer method {method!r}; known: {', '.join(METHODS)}")


@torch.no_grad()
def test_accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch_size]).logits.argmax(-1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def _tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    return dataset.get_batch(torch.arange(len(dataset)))


def _spread(values: list[float]) -> dict[str, Any]:
    return {"accuracies": values, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def transfer(setting: Setting, scale: Scale, work: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the transfer experiment of one dataset; returns the JSON-able results (see the module docstring)."""
    start = time.perf_counter()
    base_teacher = train_teacher(scale, setting, work / "teacher-base", setting.base_tasks)
    base_bank = factorize(scale, setting, base_teacher, work / "bank-base", setting.base_tasks)
    all_teacher = train_teacher(scale, setting, work / "teacher-all", None)
    all_bank = factorize(scale, setting, all_teacher, work / "bank-all", None)
    stages_s = time.perf_counter() - start

    pool = load_dataset(setting.dataset, "train", limit=scale.train_limit, seed=0)
    test = load_dataset(setting.dataset, "test", limit=scale.test_limit, seed=0)
    pool_images, pool_targets = _tensors(pool)
    test_images, test_targets = _tensors(test)
    ceiling_bank = FactorBank.from_pretrained(all_bank)
    results: dict[str, Any] = {}
    for name in setting.held_out:
        column = task_column(pool.tasks, name, setting.dataset)
        spec = pool.tasks[column]
        labels, truth = pool_targets[:, column], test_targets[:, column]
        ceiling = test_accuracy(_FactorView(ceiling_bank, name), test_images, truth)
        per_fraction: dict[str, Any] = {}
        for fraction in FRACTIONS:
            count = max(2, math.ceil(fraction * len(pool_images)))
            per_method: dict[str, list[float]] = {m: [] for m in METHODS}
            for seed in scale.seeds:
                chosen = torch.randperm(len(pool_images), generator=torch.Generator().manual_seed(seed))[:count]
                data = TensorDataset(pool_images[chosen], labels[chosen])
                for method in METHODS:
                    bank = FactorBank.from_pretrained(base_bank)  # fresh modules: nothing leaks between runs
                    teacher = load_module(Teacher, base_teacher, "teacher")
                    torch.manual_seed(seed)
                    model, objective = transfer_model(method, spec, bank, teacher)
                    fit_new_factor(model, spec, data, steps=transfer_steps(scale, count), batch_size=scale.batch_size,
                                   lr=scale.transfer_lr, seed=seed, objective=objective)
                    per_method[method].append(test_accuracy(model, test_images, truth))
            per_fraction[f"{fraction:g}"] = {"labels": count, **{m: _spread(v) for m, v in per_method.items()}}
            log(f"{setting.dataset} {name} {100 * fraction:g}% ({count} labels): " + ", ".join(
                f"{m} {100 * per_fraction[f'{fraction:g}'][m]['mean']:.1f}" for m in METHODS)
                + f" | ceiling {100 * ceiling:.1f}")
        results[name] = {"classes": spec.num_classes, "chance": float(torch.bincount(truth).max()) / len(truth),
                         "ceiling": ceiling, "fractions": per_fraction}
    return {"experiment": "transfer", "dataset": setting.dataset, "scale": asdict(scale), "setting": asdict(setting),
            "methods": list(METHODS), "fractions": list(FRACTIONS), "test_images": len(test_images),
            "pool_images": len(pool_images), "tasks": results,
            "timing_s": {"stages": round(stages_s, 1), "total": round(time.perf_counter() - start, 1)}}


class _FactorView(nn.Module):
    """One task of a bank as a module returning a TSN-like output (for ``test_accuracy``)."""

    def __init__(self, bank: FactorBank, task: str) -> None:
        super().__init__()
        self.factor = bank.factor(task)

    def forward(self, x: Tensor) -> TSNOutput:
        logits = self.factor(x)
        return TSNOutput(logits, logits, logits, None, None)
