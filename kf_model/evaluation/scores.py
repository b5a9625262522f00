"""Scores from the collected outputs: accuracies, exactness, disentanglement, leakage, parameters, and the
issue's targets as booleans; :func:`evaluate` runs collection and scoring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kf_model import metrics as M
from kf_model.bank import FactorBank
from kf_model.evaluation.collect import EXACTNESS_TOLERANCE, CollectedOutputs, collect_outputs
from kf_model.models import Teacher
from kf_model.utils import count_parameters

RESULTS_VERSION = 1  # of results.json

def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _per_task(pred: Tensor, targets: Tensor, names: Sequence[str]) -> dict[str, float]:
    return {n: M.accuracy(pred[:, i], targets[:, i]) for i, n in enumerate(names)}


def jsonable(value: Any) -> Any:
    """Plain JSON types: tensors/arrays to lists, numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _check(check_id: str, description: str, value: float | None, threshold: float, passed: bool | None,
           details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": check_id, "description": description, "value": value, "threshold": threshold,
            "passed": passed, "details": details or {}}


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as booleans (``passed`` is None when a target cannot be evaluated).

    Multi-task (dSprites): each factor within 1.0 point of the teacher on its task; mean factor accuracy
    >= the KD baseline's mean. One-vs-rest (Fashion-MNIST): teacher >= 90 % K-way; every binary factor
    within 0.5 point of the teacher's own one-vs-rest accuracy; mean binary factor accuracy >= 97 %;
    assembled argmax >= teacher - 1.0 point K-way. Both: leakage of TSN features closer to chance than
    the same probes on teacher features. "Within x points" means no more than x points below (better is fine).
    """
    eps = 1e-9
    acc = results["accuracy"]
    names = [t["name"] for t in results["dataset"]["tasks"]]
    factor, teacher = acc["factor"], acc["teacher"]
    delta = {n: 100 * (factor[n] - teacher[n]) for n in names}
    checks = []
    ovr = results.get("one_vs_rest")
    if ovr is None:
        suite = "multi-task"
        checks.append(_check("factor_within_1pt_of_teacher", "every factor within 1.0 point of the teacher on its task",
                             min(delta.values()), -1.0, min(delta.values()) >= -1.0 - eps, delta))
        mean_factor, mean_kd = acc["mean"]["factor"], acc["mean"].get("kd_student")
        checks.append(_check("mean_factor_ge_kd", "mean factor accuracy >= mean KD-student accuracy",
                             mean_factor, mean_kd if mean_kd is not None else math.nan,
                             None if mean_kd is None else mean_factor >= mean_kd - eps))
    else:
        suite = "one-vs-rest"
        teacher_k = ovr["teacher_kway_accuracy"]
        checks.append(_check("teacher_kway_ge_90", "teacher K-way accuracy >= 90 %", teacher_k, 0.90,
                             teacher_k >= 0.90 - eps))
        checks.append(_check("factor_within_0.5pt_of_teacher_ovr",
                             "every binary factor within 0.5 point of the teacher's own one-vs-rest accuracy",
                             min(delta.values()), -0.5, min(delta.values()) >= -0.5 - eps, delta))
        mean_factor = acc["mean"]["factor"]
        checks.append(_check("mean_binary_factor_ge_97", "mean binary factor accuracy >= 97 %", mean_factor, 0.97,
                             mean_factor >= 0.97 - eps))
        assembled_k = ovr.get("assembled_argmax_kway_accuracy")
        checks.append(_check("assembled_argmax_within_1pt_of_teacher",
                             "K-way accuracy of the argmax over the assembled factors >= teacher - 1.0 point",
                             assembled_k, teacher_k - 0.01,
                             None if assembled_k is None else assembled_k >= teacher_k - 0.01 - eps))
    leak = results.get("leakage", {}).get("summary", {})
    tsn_excess, teacher_excess = leak.get("tsn_off_diagonal_excess"), leak.get("teacher_excess")
    checks.append(_check("leakage_below_teacher",
                         "mean off-diagonal probe excess over chance from TSN features < same probes on teacher "
                         "features", tsn_excess, teacher_excess if teacher_excess is not None else math.nan,
                         None if tsn_excess is None or teacher_excess is None else tsn_excess < teacher_excess))
    decided = [c["passed"] for c in checks if c["passed"] is not None]
    return {"suite": suite, "checks": jsonable(checks), "num_passed": sum(decided), "num_checked": len(decided),
            "all_passed": bool(decided) and all(decided)}


def compute_metrics(collected: CollectedOutputs, *, teacher: Teacher, student: Teacher | None, bank: FactorBank,
                    seed: int = 0, train_fraction: float = 0.5,
                    exactness_tolerance: float = EXACTNESS_TOLERANCE) -> dict[str, Any]:
    """All metrics of ``results.json`` except the provenance fields that ``evaluate`` adds."""
    start = time.perf_counter()
    tasks = collected.tasks
    names = [t.name for t in tasks]
    targets = collected.targets
    unique = int(collected.index.unique().numel())
    results: dict[str, Any] = {
        "samples": {"evaluated": int(collected.index.numel()), "unique": unique,
                    "dataset_length": collected.dataset_length, "num_processes": collected.num_processes,
                    "each_counted_once": unique == collected.index.numel() == collected.dataset_length},
    }

    accuracy = {m: _per_task(pred, targets, names) for m, pred in collected.predictions.items()}
    accuracy["mean"] = {m: _mean(list(accuracy[m].values())) for m in collected.predictions}
    results["accuracy"] = accuracy

    results["one_vs_rest"] = None
    if teacher.one_vs_rest:
        o = collected.one_vs_rest
        valid = o["class/valid"].bool()
        k = len(teacher.tasks)
        true = o["class/true"][valid]
        kway = {"num_classes": k, "invalid_rows": int((~valid).sum()),
                "teacher_kway_accuracy": M.accuracy(o["class/teacher"][valid], true),
                "kd_student_kway_accuracy": (M.accuracy(o["class/kd_student"][valid], true)
                                             if "class/kd_student" in o else None),
                "assembled_argmax_kway_accuracy": (M.accuracy(o["class/assembled"][valid], true)
                                                   if "class/assembled" in o else None),
                "teacher_ovr_from_kway": dict(zip([t.name for t in teacher.tasks],
                                                  M.one_vs_rest_accuracy_from_multiclass(
                                                      o["class/teacher"][valid], true, k))),
                "teacher_binary_logits": _per_task(o["binary/teacher"], targets, names)}
        if "binary/kd_student" in o:
            kway["kd_student_binary_logits"] = _per_task(o["binary/kd_student"], targets, names)
        results["one_vs_rest"] = kway

    diffs = {n: float(d) for n, d in zip(names, collected.max_abs_diff)}
    overall = max(diffs.values()) if diffs else 0.0
    results["exactness"] = {"max_abs_diff": diffs, "max_abs_diff_overall": overall,
                            "tolerance": exactness_tolerance, "exact": overall <= exactness_tolerance}

    results["disentanglement"], results["leakage"] = _representation_metrics(collected, seed, train_fraction)

    ckn_params = count_parameters(bank.ckn)
    tsn_params = [count_parameters(bank.tsns[n]) for n in names]
    params = M.parameter_accounting(ckn_params, tsn_params, count_parameters(teacher))
    params["kd_student_params"] = count_parameters(student) if student is not None else None
    params["tasks"] = names
    results["parameters"] = params
    results["timing"] = {"inference_s": collected.inference_seconds, "metrics_s": time.perf_counter() - start}
    return results


def _representation_metrics(collected: CollectedOutputs, seed: int, train_fraction: float
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [t.name for t in collected.tasks]
    num_classes = [t.num_classes for t in collected.tasks]
    n = 0 if collected.probe_index is None else int(collected.probe_index.numel())
    representation = ("tsn: concatenated pooled TSN encoder features (TSNStack.pooled_features, [k*s], before W_i); "
                      "teacher / kd_student: penultimate feature (pooled last stage, the heads' input)")
    if n < 4:
        note = f"skipped: {n} probe samples (need at least 4)"
        return ({"skipped": note, "representation": representation},
                {"skipped": note, "tasks": names, "summary": {}})
    y = collected.probe_targets
    feats = collected.features
    disentanglement: dict[str, Any] = {"representation": representation, "num_samples": n, "factors": names}
    for source, f in feats.items():
        disentanglement[source] = M.disentanglement_report(f.reshape(n, -1), y, seed=seed)

    kw = dict(train_fraction=train_fraction, seed=seed)
    tsn = feats["tsn"]
    leakage: dict[str, Any] = {"tasks": names, "num_samples": n,
                               "tsn": M.leakage_matrix([tsn[:, i] for i in range(tsn.shape[1])], y, num_classes, **kw),
                               "teacher": M.leakage_matrix([feats["teacher"]], y, num_classes, **kw)}
    if "kd_student" in feats:
        leakage["kd_student"] = M.leakage_matrix([feats["kd_student"]], y, num_classes, **kw)
    tsn_m = leakage["tsn"]
    summary = {"chance_mean": _mean(tsn_m["chance"]),
               "tsn_diagonal_accuracy": tsn_m["diagonal_accuracy"],
               "tsn_off_diagonal_accuracy": tsn_m["off_diagonal_accuracy"],
               "tsn_off_diagonal_excess": tsn_m["off_diagonal_excess"]}
    for source in ("teacher", "kd_student"):
        if source in leakage:
            summary[f"{source}_accuracy"] = _mean(leakage[source]["accuracy"][0])
            summary[f"{source}_excess"] = _mean(leakage[source]["excess"][0])
    if summary["tsn_off_diagonal_excess"] is not None:
        summary["tsn_leaks_less_than_teacher"] = summary["tsn_off_diagonal_excess"] < summary["teacher_excess"]
    leakage["summary"] = summary
    return disentanglement, leakage


def evaluate(teacher: Teacher, student: Teacher | None, bank: FactorBank, dataset: Any, *,
             accelerator: Any = None, batch_size: int = 256, probe_samples: int | None = 2000, seed: int = 0,
             train_fraction: float = 0.5, dataset_name: str | None = None, split: str | None = None,
             sources: dict[str, Any] | None = None, show_progress: bool = True,
             exactness_tolerance: float = EXACTNESS_TOLERANCE) -> dict[str, Any] | None:
    """Evaluate teacher, KD student, factors and assembled network on ``dataset``; the results dict.

    Returns the JSON-friendly results on the main process and ``None`` on the others (all processes must
    call it: the forward passes are sharded). ``sources`` (e.g. the folders the models came from) is
    recorded as given.
    """
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    start = time.perf_counter()
    collected = collect_outputs(teacher, student, bank, dataset, accelerator=accelerator, batch_size=batch_size,
                                probe_samples=probe_samples, seed=seed, show_progress=show_progress)
    if not accelerator.is_main_process:
        return None
    results: dict[str, Any] = {
        "format_version": RESULTS_VERSION,
        "dataset": {"name": dataset_name or getattr(dataset, "name", None), "split": split,
                    "num_samples": len(dataset), "tasks": [t.to_dict() for t in collected.tasks],
                    "one_vs_rest": bool(teacher.one_vs_rest)},
        "models": {"teacher": {"one_vs_rest": bool(teacher.one_vs_rest), "tasks": [t.name for t in teacher.tasks]},
                   "kd_student": None if student is None else {"one_vs_rest": bool(student.one_vs_rest)},
                   "bank": {"ckn_fingerprint": bank.manifest.ckn_fingerprint, "source": bank.source,
                            "tasks": [t.name for t in bank.tasks]}},
        "sources": sources or {},
        "device": str(accelerator.device),
        "settings": {"batch_size": batch_size, "probe_samples": probe_samples, "seed": seed,
                     "train_fraction": train_fraction},
    }
    results.update(compute_metrics(collected, teacher=teacher, student=student, bank=bank, seed=seed,
                                   train_fraction=train_fraction, exactness_tolerance=exactness_tolerance))
    results["targets"] = check_targets(results)
    results["timing"]["total_s"] = time.perf_counter() - start
    return jsonable(results)
