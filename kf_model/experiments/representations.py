"""The disentanglement experiment on dSprites: disentanglement_lib's metrics of the teacher's, the KD
student's, the CKN's and the TSNs' representations."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kf_model.bank import FactorBank, load_module
from kf_model.data import FACTOR_SIZES
from kf_model.data.dsprites import factors_to_index, render_indices
from kf_model.experiments.disentanglement import GroundTruth, all_metrics
from kf_model.experiments.stages import SETTINGS, Scale, distill, factorize, train_teacher
from kf_model.models import Teacher

# ============================================================================= disentanglement

def dsprites_truth(features: Callable[[Tensor], Tensor]) -> GroundTruth:
    """dSprites' 5 factors -> rendered images -> ``features`` (a network's representation), as numpy."""

    @torch.no_grad()
    def represent(classes: np.ndarray) -> np.ndarray:
        return features(render_indices(factors_to_index(classes))).double().numpy()

    return GroundTruth(tuple(FACTOR_SIZES), represent)


def representations(teacher: Teacher, student: Teacher, bank: FactorBank, latent_bank: FactorBank
                    ) -> dict[str, Callable[[Tensor], Tensor]]:
    """The representations scored: name -> images -> codes [B, D]."""
    stack = bank.assemble()
    latent_stack = latent_bank.assemble()
    return {
        "teacher": lambda x: teacher(x).features[-1],
        "kd_student": lambda x: student(x).features[-1],
        "ckn": lambda x: bank.ckn(x).z,
        "tsn_concat": lambda x: stack.tsns.pooled_features(x).flatten(1),
        "tsn_latent_10d": lambda x: latent_stack.tsns.pooled_features(x).flatten(1),
    }


def disentanglement(scale: Scale, work: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The dSprites table: every representation scored with every disentanglement_lib metric."""
    start = time.perf_counter()
    setting = SETTINGS["dsprites"]
    teacher_dir = train_teacher(scale, setting, work / "teacher-all", None)
    bank_dir = factorize(scale, setting, teacher_dir, work / "bank-all", None)
    student_dir = distill(scale, setting, teacher_dir, work / "kd-student")
    latent_dir = factorize(scale, setting, teacher_dir, work / "bank-latent-10d", None,
                           tsn_widths=(*scale.tsn_widths[:-1], 2))
    teacher = load_module(Teacher, teacher_dir, "teacher")
    student = load_module(Teacher, student_dir, "KD student")
    sources = representations(teacher, student, FactorBank.from_pretrained(bank_dir),
                              FactorBank.from_pretrained(latent_dir))
    table: dict[str, Any] = {}
    for name, features in sources.items():
        began = time.perf_counter()
        table[name] = all_metrics(dsprites_truth(features), seed=0, budget=scale.budget)
        table[name]["seconds"] = round(time.perf_counter() - began, 1)
        log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in table[name].items() if isinstance(v, float)))
    return {"experiment": "disentanglement", "dataset": "dsprites", "factors": ["shape", "scale", "orientation",
                                                                                "pos_x", "pos_y"],
            "scale": asdict(scale), "budget": asdict(scale.budget), "representations": table,
            "timing_s": round(time.perf_counter() - start, 1)}
