"""Every model's outputs on the held-out split, in one pass over the data: teacher, KD student, each factor
network and the assembled network, with each sample's dataset index (multi-process runs count each once).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kf_model.bank import FactorBank
from kf_model.errors import IncompatibleFactorsError, InvalidArgumentError, UnknownTaskError
from kf_model.models import Teacher

EXACTNESS_TOLERANCE = 1e-4  # max abs logit difference still called "exact" (float rounding is ~1e-6)
MODELS = ("teacher", "kd_student", "factor", "assembled")
MODEL_LABELS = {"teacher": "teacher", "kd_student": "KD student", "factor": "factor", "assembled": "assembled"}


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
