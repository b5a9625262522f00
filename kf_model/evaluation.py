"""Evaluation of a knowledge factorization: teacher, KD baseline, every factor and the assembled network.

The library side of ``train/evaluate.py``, written as plain functions that tests call in-process::

    results = evaluate(teacher, student, bank, dataset)   # dict, JSON-friendly (None off the main process)
    paths = write_report(results, "runs/evaluation")      # results.json, results.md, *.png
    update_bank("path/to/bank", results, "runs/evaluation")  # factors.json metrics + README + evaluation/

What is measured, on the held-out split given (``dataset``, any object with ``__len__``,
``__getitem__ -> (image [C,H,W] in [0,1], targets int64 [T])``, ``.tasks`` and ``.input_spec``):

- per-task accuracy of the teacher, the KD student, each factor network (``FactorNetwork``: CKN + one TSN,
  run on its own) and the assembled network (CKN once + all TSNs stacked);
- one-vs-rest teachers (Fashion-MNIST): a teacher that is one K-way classifier is scored on task i as
  "is the K-way argmax == i" (its own one-vs-rest accuracy, the reference the factors are held to); the
  binary-logit reading (p_i > 0.5) is recorded too. Also the K-way accuracy of teacher and KD student, and
  the K-way accuracy of the argmax over the assembled factors' positive-class probabilities (no fine-tuning);
- exactness: per task, the max abs difference between the factor network's logits and the assembled
  network's logits (~1e-6: assembly is exact by design);
- disentanglement (DCI, MIG, SAP; estimators in ``kf_model.metrics``) of the task representations against
  the ground-truth task labels. The TSN representation is the concatenation of every TSN's pooled encoder
  feature (``TSNStack.pooled_features``: [B, k, s] -> [B, k*s]), i.e. what each TSN computes before its
  bias-free projection W_i; z_i = W_i f_i is a linear image of it, so a linear probe on z_i can decode no
  more than on f_i. The teacher's and the KD student's representation is their penultimate feature (pooled
  last stage, the input of their heads);
- leakage: a linear probe decoding task j from TSN i's features (train/held-out split of the probe
  samples), next to chance (majority class of the held-out part), and the same probe on the teacher's (and
  KD student's) features. Headline: mean off-diagonal excess over chance of the TSN probes vs the mean
  excess of the same probes on teacher features (each task j weighs the same in both means);
- parameter accounting (n*s + S vs 2^n*S vs the teacher) and the issue's targets as booleans.

Multi-process runs (``accelerate launch``): the dataloader is ``accelerator.prepare``-d and every batch is
``gather_for_metrics``-ed, with the dataset index of every sample, so each sample counts exactly once
(``results["samples"]["each_counted_once"]`` checks it). Metrics are computed and files written on the
main process only.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kf_model import metrics as M
from kf_model.bank import CARD_FILE, EVALUATION_DIR, MANIFEST_FILE, FactorBank, Manifest
from kf_model.card import format_value, render_model_card
from kf_model.errors import BankNotFoundError, IncompatibleFactorsError, InvalidArgumentError, UnknownTaskError
from kf_model.models import Teacher
from kf_model.utils import count_parameters

RESULTS_VERSION = 1
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
EXACTNESS_TOLERANCE = 1e-4  # max abs logit difference still called "exact" (float rounding is ~1e-6)
MODELS = ("teacher", "kd_student", "factor", "assembled")
MODEL_LABELS = {"teacher": "teacher", "kd_student": "KD student", "factor": "factor", "assembled": "assembled"}


# ----------------------------------------------------------------------------- collecting outputs

class IndexedDataset(Dataset):
    """Wraps a dataset so that every sample carries its index: ``(index, image, targets)``.

    Gathering the indices is what proves that each sample was counted exactly once across processes.
    A ``__getitems__`` of the wrapped dataset (batched rendering, e.g. dSprites) is kept.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Tensor, Tensor]:
        image, targets = self.dataset[index]
        return index, image, targets

    def __getitems__(self, indices: list[int]) -> list[tuple[int, Tensor, Tensor]]:
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [(i, image, targets) for i, (image, targets) in zip(indices, samples)]


@dataclass
class CollectedOutputs:
    """Everything the metrics need, gathered over all processes and sorted by dataset index (CPU tensors).

    ``predictions[model]``: [N, T] predicted class per task (bank task order); ``features[source]``: the
    probe subset's features ([P, D]; "tsn" is [P, k, s]); ``probe_index``: their dataset indices [P].
    """

    tasks: list[Any]  # TaskSpec, bank order
    index: Tensor  # [N]
    targets: Tensor  # [N, T]
    predictions: dict[str, Tensor]
    max_abs_diff: Tensor  # [T]: factor vs assembled logits
    dataset_length: int
    num_processes: int
    one_vs_rest: dict[str, Tensor] = field(default_factory=dict)  # K-way predictions, binary-logit readings
    probe_index: Tensor | None = None
    probe_targets: Tensor | None = None
    features: dict[str, Tensor] = field(default_factory=dict)
    inference_seconds: float = 0.0


def _task_columns(dataset: Any, names: Sequence[str], what: str) -> list[int]:
    dataset_names = [t.name for t in dataset.tasks]
    missing = [n for n in names if n not in dataset_names]
    if missing:
        raise UnknownTaskError(f"{what} task(s) {missing} are not tasks of the dataset ({dataset_names})")
    return [dataset_names.index(n) for n in names]


def _check_model_tasks(model: Teacher, names: Sequence[str], label: str) -> None:
    model_names = [t.name for t in model.tasks]
    missing = [n for n in names if n not in model_names]
    if missing:
        raise UnknownTaskError(f"the {label} has no task(s) {missing} (it has {model_names})")


def _check_input(bank: FactorBank, dataset: Any) -> None:
    spec = getattr(dataset, "input_spec", None)
    if spec is None:
        return
    bank_spec = bank.input_spec
    if (spec.channels, spec.size) != (bank_spec.channels, bank_spec.size):
        raise IncompatibleFactorsError(
            f"the dataset has {spec.channels}-channel {spec.size}px images but the bank was factorized on "
            f"{bank_spec.channels}-channel {bank_spec.size}px images"
        )


def _model_predictions(model: Teacher, output: Any, names: Sequence[str]) -> tuple[Tensor, Tensor | None, Tensor]:
    """(per-task predictions [B, T], K-way argmax [B] or None, binary-logit predictions [B, T]).

    A one-vs-rest model predicts "task i is positive" iff its K-way argmax is class i (its own one-vs-rest
    reading); other models predict the argmax of each task's logits.
    """
    binary = torch.stack([output.logits[n].argmax(-1) for n in names], dim=1)
    if output.class_logits is None:
        return binary, None, binary
    class_pred = output.class_logits.argmax(-1)
    order = [t.name for t in model.tasks]
    columns = torch.tensor([order.index(n) for n in names], device=class_pred.device)
    return (class_pred[:, None] == columns[None]).long(), class_pred, binary


def probe_subset(length: int, probe_samples: int | None, seed: int) -> Tensor:
    """Boolean mask [length] of the samples used for probes/disentanglement: a seeded random subset."""
    mask = torch.zeros(length, dtype=torch.bool)
    if probe_samples is None or probe_samples >= length:
        mask[:] = True
    elif probe_samples > 0:
        mask[torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:probe_samples]] = True
    return mask


class _Networks:
    """The networks of one evaluation on one device; ``record`` runs them all on a batch."""

    def __init__(self, teacher: Teacher, student: Teacher | None, bank: FactorBank, dataset: Any,
                 device: torch.device) -> None:
        self.names = [t.name for t in bank.tasks]
        self.columns = torch.tensor(_task_columns(dataset, self.names, "bank"))
        _check_model_tasks(teacher, self.names, "teacher")
        if student is not None:
            _check_model_tasks(student, self.names, "KD student")
        _check_input(bank, dataset)
        self.device = device
        self.teacher = teacher.to(device).eval()
        self.student = student.to(device).eval() if student is not None else None
        bank.to(device)
        self.factors = {n: bank.factor(n) for n in self.names}
        self.assembled = bank.assemble(self.names)
        # Each factor's pooled TSN feature [B, 1, s] is caught on its way through the unmodified FactorNetwork:
        # the same function as TSNStack.pooled_features, without a second pass of the TSNs.
        self.pooled: dict[str, Tensor] = {}
        self.hooks = [self.factors[n].tsn.encoder.register_forward_hook(
            lambda _module, _inputs, output, name=n: self.pooled.__setitem__(name, output)) for n in self.names]
        # One-vs-rest teacher: the true K-way class is the argmax of the teacher's task columns of the targets;
        # the assembled K-way prediction needs a factor for every class.
        self.ovr = bool(teacher.one_vs_rest)
        teacher_names = [t.name for t in teacher.tasks]
        self.teacher_columns = torch.tensor(_task_columns(dataset, teacher_names, "teacher") if self.ovr else [])
        self.full_assembly = self.ovr and set(self.names) == set(teacher_names)
        self.assembly_order = [self.names.index(n) for n in teacher_names] if self.full_assembly else []

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def record(self, index: Tensor, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Per-sample outputs of every network for one batch: all tensors with the batch as first dim."""
        names = self.names
        images = images.to(self.device)
        record = {"index": index, "targets": targets[:, self.columns.to(targets.device)]}

        out = self.teacher(images)
        record["pred/teacher"], class_t, record["binary/teacher"] = _model_predictions(self.teacher, out, names)
        record["feat/teacher"] = out.features[-1].float()
        if self.ovr:
            truth = targets[:, self.teacher_columns.to(targets.device)]
            record.update({"class/true": truth.argmax(-1), "class/valid": (truth.sum(-1) == 1).long(),
                           "class/teacher": class_t})
        if self.student is not None:
            out = self.student(images)
            record["pred/kd_student"], class_s, record["binary/kd_student"] = _model_predictions(
                self.student, out, names)
            record["feat/kd_student"] = out.features[-1].float()
            if class_s is not None and self.ovr:
                record["class/kd_student"] = class_s

        factor = {n: self.factors[n](images) for n in names}
        assembled = self.assembled(images)
        record["pred/factor"] = torch.stack([factor[n].argmax(-1) for n in names], dim=1)
        record["pred/assembled"] = torch.stack([assembled[n].argmax(-1) for n in names], dim=1)
        record["diff"] = torch.stack([(factor[n] - assembled[n]).abs().amax(-1) for n in names], dim=1)
        if self.full_assembly:
            positive = torch.stack([assembled[n].softmax(-1)[:, 1] for n in names], dim=1)
            record["class/assembled"] = positive[:, self.assembly_order].argmax(-1)
        record["feat/tsn"] = torch.cat([self.pooled[n] for n in names], dim=1).float()
        return record


@contextmanager
def full_precision() -> Iterator[None]:
    """No TF32 inside: on Ampere+ GPUs TF32 convolutions differ by ~1e-3 between the grouped (assembled) and
    the plain (factor) TSN convs, which would blur the exactness check and the accuracies."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def collect_outputs(teacher: Teacher, student: Teacher | None, bank: FactorBank, dataset: Any, *,
                    accelerator: Any = None, batch_size: int = 256, probe_samples: int | None = 2000,
                    seed: int = 0, num_workers: int = 0, show_progress: bool = True) -> CollectedOutputs:
    """Run every network over ``dataset`` (sharded over processes) and gather the outputs on every process.

    Every batch goes through ``accelerator.gather_for_metrics`` (which drops the samples that an uneven last
    batch duplicates); features are kept only for the ``probe_subset`` samples.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = accelerator or Accelerator()
    nets = _Networks(teacher, student, bank, dataset, accelerator.device)
    loader = DataLoader(IndexedDataset(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    loader = accelerator.prepare(loader)
    mask = probe_subset(len(dataset), probe_samples, seed)

    parts: dict[str, list[Tensor]] = {}
    max_diff = torch.zeros(len(nets.names), dtype=torch.float64)
    start = time.perf_counter()
    bar = tqdm(loader, desc="evaluate", unit="batch", disable=not (show_progress and accelerator.is_main_process))
    try:
        for index, images, targets in bar:
            with torch.inference_mode(), full_precision():
                record = nets.record(index, images, targets)
            gathered = {k: v.cpu() for k, v in accelerator.gather_for_metrics(record).items()}
            diff = gathered.pop("diff")
            if diff.numel():
                max_diff = torch.maximum(max_diff, diff.double().amax(0))
            keep = mask[gathered["index"]]
            parts.setdefault("probe_index", []).append(gathered["index"][keep])
            for key, value in gathered.items():
                parts.setdefault(key, []).append(value[keep] if key.startswith("feat/") else value)
    finally:
        nets.close()
    inference_seconds = time.perf_counter() - start
    if not parts:
        raise InvalidArgumentError("the dataset is empty: nothing to evaluate")

    # outside inference mode: plain tensors from here on (probes need autograd), sorted by dataset index
    joined = {k: torch.cat(v).clone() for k, v in parts.items()}
    order = joined["index"].argsort()
    data = {k: v[order] for k, v in joined.items() if not k.startswith("feat/") and k != "probe_index"}
    probe_order = joined["probe_index"].argsort()
    probe_index = joined["probe_index"][probe_order]
    features = {k.removeprefix("feat/"): v[probe_order] for k, v in joined.items() if k.startswith("feat/")}
    position = torch.searchsorted(data["index"], probe_index)  # probe samples among all (sorted) samples
    return CollectedOutputs(
        tasks=list(bank.tasks), index=data["index"], targets=data["targets"],
        predictions={m: data[f"pred/{m}"] for m in MODELS if f"pred/{m}" in data},
        max_abs_diff=max_diff, dataset_length=len(dataset), num_processes=accelerator.num_processes,
        one_vs_rest={k: v for k, v in data.items() if k.startswith(("class/", "binary/"))} if nets.ovr else {},
        probe_index=probe_index, probe_targets=data["targets"][position], features=features,
        inference_seconds=inference_seconds,
    )


# ----------------------------------------------------------------------------- metrics

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


# ----------------------------------------------------------------------------- report

def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    """``results.md``: the tables of an evaluation, in Markdown."""
    ds = results["dataset"]
    names = [t["name"] for t in ds["tasks"]]
    acc = results["accuracy"]
    ovr = results.get("one_vs_rest")
    samples = results["samples"]
    lines = [f"# Evaluation: {ds.get('name') or 'dataset'} ({ds.get('split') or 'held-out split'})", "",
             f"{samples['evaluated']:,} samples (each counted once: {format_value(samples['each_counted_once'])}, "
             f"{samples['num_processes']} process(es)); accuracies in %, deltas in points.", ""]

    teacher_note = (" Teacher and KD student are K-way classifiers: task i is scored as \"K-way argmax == i\" "
                    "(their own one-vs-rest accuracy).") if ovr else ""
    lines += ["## Per-task accuracy", "",
              "Factor = CKN + that task's TSN run alone; assembled = CKN once + all TSNs, no fine-tuning."
              + teacher_note, "",
              "| task | teacher | KD student | factor | assembled | factor − teacher | factor − KD "
              "| max abs logit diff |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    kd = acc.get("kd_student")
    diffs = results["exactness"]["max_abs_diff"]
    for n in names:
        t, f = acc["teacher"][n], acc["factor"][n]
        k = kd[n] if kd else None
        lines.append(f"| {n} | {_pct(t)} | {_pct(k)} | {_pct(f)} | {_pct(acc['assembled'][n])} | {_pts(f - t)} | "
                     f"{_pts(None if k is None else f - k)} | {diffs[n]:.2e} |")
    mean = acc["mean"]
    mk = mean.get("kd_student")
    lines.append(f"| **mean** | {_pct(mean['teacher'])} | {_pct(mk)} | {_pct(mean['factor'])} | "
                 f"{_pct(mean['assembled'])} | {_pts(mean['factor'] - mean['teacher'])} | "
                 f"{_pts(None if mk is None else mean['factor'] - mk)} | "
                 f"{results['exactness']['max_abs_diff_overall']:.2e} |")
    ex = results["exactness"]
    lines += ["", f"Assembly exact (max abs logit difference ≤ {ex['tolerance']:g}): "
                  f"**{format_value(ex['exact'])}**.", ""]

    if ovr:
        lines += ["## K-way accuracy (one-vs-rest tasks)", "", "| network | K-way accuracy |", "|---|---:|",
                  f"| teacher | {_pct(ovr['teacher_kway_accuracy'])} |",
                  f"| KD student | {_pct(ovr.get('kd_student_kway_accuracy'))} |",
                  f"| assembled factors, argmax of positive-class probabilities | "
                  f"{_pct(ovr.get('assembled_argmax_kway_accuracy'))} |", ""]
        lines += ["Teacher per task, two readings: K-way argmax == i (reference above) vs binary logits "
                  "(p_i > 0.5).", "", "| task | argmax reading | binary-logit reading |", "|---|---:|---:|"]
        lines += [f"| {n} | {_pct(acc['teacher'][n])} | {_pct(ovr['teacher_binary_logits'][n])} |" for n in names]
        lines.append("")

    targets = results["targets"]
    lines += [f"## Targets ({targets['suite']}): {targets['num_passed']}/{targets['num_checked']} passed", "",
              "| target | value | threshold | result |", "|---|---:|---:|---|"]
    for c in targets["checks"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        value, threshold = format_value(c["value"]), format_value(c["threshold"])
        lines.append(f"| {c['description']} | {value} | {threshold} | {verdict} |")
    lines.append("")

    dis = results["disentanglement"]
    lines += ["## Disentanglement of task representations", ""]
    if "skipped" in dis:
        lines += [dis["skipped"], ""]
    else:
        lines += [f"{dis['num_samples']:,} samples, against the ground-truth task labels. Representations: "
                  f"{dis['representation']}. Fast proxies (DCI from L2 linear-probe weights, SAP from nearest class "
                  "means), not disentanglement_lib's estimators: see `train/experiments.py disentanglement`.", "",
                  "| representation | DCI disentanglement | DCI completeness | DCI informativeness | MIG | SAP |",
                  "|---|---:|---:|---:|---:|---:|"]
        for source in ("tsn", "teacher", "kd_student"):
            if source in dis:
                d = dis[source]
                lines.append(f"| {source} | {d['dci_disentanglement']:.3f} | {d['dci_completeness']:.3f} | "
                             f"{d['dci_informativeness']:.3f} | {d['mig']:.3f} | {d['sap']:.3f} |")
        lines.append("")

    leak = results["leakage"]
    lines += ["## Leakage (linear probes, held-out accuracy)", ""]
    if "skipped" in leak:
        lines += [leak["skipped"], ""]
    else:
        s = leak["summary"]
        m = leak["tsn"]
        lines += [f"Probe on {m['num_train']:,} samples, scored on {m['num_test']:,}. Row = features of, column = "
                  "task decoded; chance = majority class of the held-out part.", "",
                  "| features \\ task | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
        for i, n in enumerate(names):
            lines.append(f"| TSN {n} | " + " | ".join(_pct(a) for a in m["accuracy"][i]) + " |")
        for source in ("teacher", "kd_student"):
            if source in leak:
                lines.append(f"| {MODEL_LABELS[source]} | "
                             + " | ".join(_pct(a) for a in leak[source]["accuracy"][0]) + " |")
        lines.append("| *chance* | " + " | ".join(_pct(c) for c in m["chance"]) + " |")
        lines += ["", "| summary | value |", "|---|---:|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in s.items()]
        lines.append("")

    p = results["parameters"]
    lines += ["## Parameter accounting", "",
              f"n = {p['num_tasks']} tasks, S = CKN = {p['ckn_params']:,}, mean s = TSN = "
              f"{sum(p['tsn_params']) / p['num_tasks']:,.0f} parameters.", "",
              "| what | parameters |", "|---|---:|",
              f"| factor bank, n·s + S (any subset) | {p['bank_params']:,} |",
              f"| one student per subset, 2^n·S (paper) | {p['subset_students_params_paper']:,} |",
              f"| all assembled subsets stored separately | {p['materialised_subsets_params']:,} |",
              f"| teacher | {p['teacher_params']:,} |",
              f"| KD student | {format_value(p.get('kd_student_params'))} |",
              f"| one factor network (S + s, mean) | {sum(p['assembled_params_single_task']) // p['num_tasks']:,} |",
              "", f"Bank / subset students: {format_value(p['bank_fraction_of_subset_students'])}; "
              f"bank / teacher: {format_value(p['bank_vs_teacher'])}.", ""]
    t = results.get("timing", {})
    lines += [f"Timing: inference {t.get('inference_s', 0):.1f} s, metrics {t.get('metrics_s', 0):.1f} s.", ""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the PNG plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULTS_JSON, "markdown": out / RESULTS_MD}
    paths["json"].write_text(json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(render_markdown(results))
    if plots:
        from kf_model import plots as P

        paths.update(P.plot_all(results, out))
    return paths


# ----------------------------------------------------------------------------- bank update

def bank_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics`` entry of ``factors.json``: per-task accuracies and a flat summary."""
    acc = results["accuracy"]
    kd = acc.get("kd_student") or {}
    tasks = {n: {"accuracy": acc["factor"][n], "teacher_accuracy": acc["teacher"][n],
                 "kd_accuracy": kd.get(n)} for n in acc["factor"]}
    ds = results["dataset"]
    summary: dict[str, Any] = {
        "dataset": ds.get("name"), "split": ds.get("split"), "samples": results["samples"]["evaluated"],
        "mean_factor_accuracy": acc["mean"]["factor"], "mean_teacher_accuracy": acc["mean"]["teacher"],
        "mean_kd_accuracy": acc["mean"].get("kd_student"),
        "assembly_max_abs_diff": results["exactness"]["max_abs_diff_overall"],
    }
    ovr = results.get("one_vs_rest")
    if ovr:
        summary["teacher_kway_accuracy"] = ovr["teacher_kway_accuracy"]
        summary["kd_kway_accuracy"] = ovr.get("kd_student_kway_accuracy")
        summary["assembled_argmax_kway_accuracy"] = ovr.get("assembled_argmax_kway_accuracy")
    leak = results["leakage"].get("summary", {})
    summary["leakage_tsn_off_diagonal_excess"] = leak.get("tsn_off_diagonal_excess")
    summary["leakage_teacher_excess"] = leak.get("teacher_excess")
    dis = results["disentanglement"]
    if "tsn" in dis:
        summary["dci_disentanglement_tsn"] = dis["tsn"]["dci_disentanglement"]
        summary["dci_disentanglement_teacher"] = dis["teacher"]["dci_disentanglement"]
    targets = results["targets"]
    summary["targets_passed"] = f"{targets['num_passed']}/{targets['num_checked']}"
    summary["details"] = f"{EVALUATION_DIR}/{RESULTS_MD}"
    return jsonable({"tasks": tasks, "summary": summary})


_REPO_IN_CARD = re.compile(r'FactorBank\.from_pretrained\("([^"]+)"')


def update_bank(bank_dir: str | Path, results: dict[str, Any], report_dir: str | Path | None = None) -> Path:
    """Record the metrics in ``<bank>/factors.json``, re-render ``README.md`` and copy the report files
    (results.json/md, PNGs) from ``report_dir`` into ``<bank>/evaluation/``. Returns the manifest path.

    The rest of the manifest is kept as it is; the card keeps the repo id it was rendered with, if any.
    Results of another factorization (CKN fingerprint differs) are refused.
    """
    bank = Path(bank_dir)
    manifest_path = bank / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BankNotFoundError(f"{bank} is not a local factor bank folder: it has no {MANIFEST_FILE}")
    recorded = Manifest.read(manifest_path)  # validates format and content
    evaluated = results.get("models", {}).get("bank", {})
    if evaluated.get("ckn_fingerprint") != recorded.ckn_fingerprint:
        raise IncompatibleFactorsError(
            f"these results are of the bank with CKN {str(evaluated.get('ckn_fingerprint'))[:12]}, not of {bank} "
            f"(CKN {recorded.ckn_fingerprint[:12]}): refusing to record them there"
        )
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"] = bank_metrics(results)
    if report_dir is None:
        manifest["metrics"]["summary"].pop("details", None)
    card_path = bank / CARD_FILE
    repo_id = None
    if card_path.is_file():
        found = _REPO_IN_CARD.search(card_path.read_text())
        if found and found.group(1) != "path/to/this/folder":
            repo_id = found.group(1)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    card_path.write_text(render_model_card(manifest, repo_id=repo_id))
    if report_dir is not None:
        source, target = Path(report_dir), bank / EVALUATION_DIR
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and (path.name in (RESULTS_JSON, RESULTS_MD) or path.suffix == ".png"):
                if path.resolve() != (target / path.name).resolve():
                    shutil.copy2(path, target / path.name)
    return manifest_path


__all__ = [
    "CollectedOutputs",
    "IndexedDataset",
    "bank_metrics",
    "check_targets",
    "collect_outputs",
    "compute_metrics",
    "evaluate",
    "full_precision",
    "jsonable",
    "probe_subset",
    "render_markdown",
    "update_bank",
    "write_report",
]
