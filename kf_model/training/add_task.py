"""Growing a factor bank: a new task's factor, trained against the bank's frozen CKN.

The paper's third claim is that the common knowledge network transfers to new tasks. Growing a bank puts it
to use: one new TSN (and its heads) learns a task the bank never saw, from ground-truth labels and optionally
a teacher's logits, while the CKN stays frozen (no gradient, BatchNorm in eval mode). Nothing that is
already in the bank changes, so old tasks keep bit-identical outputs and any subset of old and new factors
still assembles exactly.

It is a job of the one training loop (:func:`kf_model.training.fit`: resume, checkpoints, mixed precision,
Accelerate) with the one objective (:class:`~kf_model.losses.IMBObjective`, configured for a frozen CKN):

    python train/add_task.py --bank runs/bank --dataset dsprites --task pos_x --output-dir runs/add-pos_x
    python train/add_task.py --bank org/repo@v1 --dataset dsprites --task pos_x --output-dir ... --push-to-hub

In Python (the same job, on a dataset in memory)::

    tsn = train_new_task(bank, spec, dataset)   # dataset items: (image [C,H,W] in [0,1], label int)
    bank.add_task(spec, tsn)
    bank.save_pretrained(folder)                 # or bank.push_to_hub(repo_id)
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from kf_model.bank import MANIFEST_FILE, FactorBank, bank_path, load_module, save_module
from kf_model.bank.growing import (
    BankLocation,
    fetch_evaluation,
    grow_folder,
    push_grown_bank,
    record_added_evaluation,
    record_added_task,
    write_grown_bank,
)
from kf_model.bank.growth import check_growable
from kf_model.data import load_dataset
from kf_model.data.columns import TaskColumns, task_column
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    IncompatibleFactorsError,
    InvalidArgumentError,
    InvalidDataError,
    KFError,
    TaskExistsError,
    UnknownTaskError,
)
from kf_model.losses import IMBConfig, IMBObjective
from kf_model.models import (
    CKNOutput,
    CommonKnowledgeNetwork,
    EncoderConfig,
    TaskSpecificNetwork,
    Teacher,
    TSNOutput,
    count_parameters,
)
from kf_model.training.config import (
    DataConfig,
    DataSourceConfig,
    JobConfig,
    LoaderConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    check_option,
)
from kf_model.training.data import DataInfo
from kf_model.training.jobs import Job
from kf_model.training.loop import FitData, fit
from kf_model.training.options import COUNT, REQUIRED

# The IMB objective of one new factor: what is left of it when the CKN is frozen (no InfoMax: it trains the CKN;
# the KD term only with a teacher). The defaults growing has always used.
FROZEN_CKN_OBJECTIVE = IMBConfig(label_smoothing=0.1, task_weight=1.0, lambda_kd=1.0, kd_temperature=4.0,
                                 lambda_feat=0.0, beta=1e-3, infomin="batch")

# ============================================================================= the network


class Trunk(nn.Module):
    """A frozen (or, for a from-scratch baseline, trainable) feature extractor giving pooled features [B, C].

    A CKN gives its common feature z_c; a teacher (or KD student) its pooled last stage, the input of its
    heads. Frozen means no gradients *and* BatchNorm kept in eval mode whatever ``train()`` asks: its running
    statistics are part of the bank's old factors and must not drift.
    """

    def __init__(self, net: CommonKnowledgeNetwork | Teacher, *, trainable: bool = False) -> None:
        super().__init__()
        self.net = net
        self.trainable = trainable
        if not trainable:
            net.requires_grad_(False).eval()

    @property
    def width(self) -> int:
        return self.net.backbone.stage_channels[-1]

    def train(self, mode: bool = True) -> Trunk:
        super().train(mode and self.trainable)
        return self

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.z if isinstance(out, CKNOutput) else out.features[-1]


class NewTaskNetwork(nn.Module):
    """Trunk + one TSN: the factor network of a new task while it trains. ``forward`` -> ``TSNOutput``."""

    def __init__(self, trunk: Trunk, tsn: TaskSpecificNetwork) -> None:
        super().__init__()
        if tsn.ckn_width != trunk.width:
            raise IncompatibleFactorsError(f"the TSN adds features of width {tsn.ckn_width} to a trunk of width "
                                           f"{trunk.width}")
        self.trunk, self.tsn = trunk, tsn

    def forward(self, x: Tensor) -> TSNOutput:
        if self.trunk.trainable:
            return self.tsn(x, self.trunk(x))
        with torch.no_grad():
            common = self.trunk(x)
        return self.tsn(x, common)


def factor_loss(objective: IMBObjective, out: TSNOutput, task: str, labels: Tensor,
                teacher_logits: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The IMB objective of one factor (``objective`` built with ``IMBObjective.frozen_ckn``): labels [B]."""
    def one_task(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.unsqueeze(1)

    return objective(logits={task: out.logits}, aux_logits={task: out.aux_logits}, targets=labels.reshape(-1, 1),
                     teacher_logits=None if teacher_logits is None else {task: teacher_logits},
                     ckn_features=[], teacher_features=[], task_features=one_task(out.z), mu=one_task(out.mu),
                     logvar=one_task(out.logvar))


def teacher_logits_for(teacher: Teacher, task: str, images: Tensor) -> Tensor:
    """The teacher's [B, K] logits of ``task`` (for a one-vs-rest teacher: its binary reading)."""
    with torch.no_grad():
        return teacher(images).logits[task]


def check_task_spec(spec: object, name: str = "spec") -> TaskSpec:
    """``spec`` if it is a TaskSpec, else refused saying how to make one (a name or a dict failed later as an
    AttributeError)."""
    if not isinstance(spec, TaskSpec):
        raise InvalidArgumentError(f"{name} must be a TaskSpec, e.g. TaskSpec('pos_x', ['left', 'right'], 'a "
                                   f"one-liner'), or TaskSpec.from_dict(...) for a dict; got {type(spec).__name__}")
    return spec


def check_training_arguments(*, steps: object, batch_size: object, lr: object, weight_decay: object = 0.0,
                             seed: object = 0) -> None:
    """The Python arguments of a new factor's training, named as the caller wrote them (not as the
    command-line flags that ``fit``'s configs would name them), before anything is built."""
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            need = " (InfoMin needs a batch)" if name == "batch_size" else ""
            raise InvalidArgumentError(f"{name} must be an integer >= {low}{need}, got {value!r}")
    for name, value, positive in (("lr", lr, True), ("weight_decay", weight_decay, False)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                or value < 0 or (positive and value == 0)):
            raise InvalidArgumentError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                       f"got {value!r}")


class CheckedLabels(Dataset):
    """``(image, label)`` items whose labels are checked against the task's class count as they are read, on the
    CPU (the loop never waits on the device for it): a label of 5 or -1 for a 3-class task failed deep in the
    loss as "index 5 is out of bounds". Keeps the wrapped dataset's batched ``__getitems__``."""

    def __init__(self, dataset: Dataset, spec: TaskSpec) -> None:
        self.dataset, self.spec = dataset, spec

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        self.check(item, index)
        return item

    def __getitems__(self, indices: list[int]) -> list[Any]:
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        for index, item in zip(indices, samples, strict=True):
            self.check(item, index)
        return samples

    def check(self, item: Any, index: int) -> None:
        """The item's label (its targets' first value, the one the loss reads) is a class index of the task."""
        label = item[1]
        if not isinstance(label, int):
            values = (label if isinstance(label, Tensor) else torch.as_tensor(label)).reshape(-1)
            if values.is_floating_point() or values.dtype == torch.bool or not len(values):
                raise InvalidDataError(f"item {index}: the label must be an integer class index, got "
                                       f"{values.dtype} {values.tolist()[:4]}")
            label = int(values[0])
        if not 0 <= label < self.spec.num_classes:
            raise InvalidDataError(f"item {index} has label {label}; task {self.spec.name!r} has "
                                   f"{self.spec.num_classes} classes, labelled 0 to {self.spec.num_classes - 1}")


def check_finite(model: nn.Module, final_loss: float | None = None) -> None:
    """Refuse a trained network with NaN or infinite weights (or a run that ended on such a loss): returned, it
    would answer NaN for every image. One pass over the weights, once, after training."""
    finite = all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()]
                 if t.is_floating_point())
    if not finite or (final_loss is not None and not math.isfinite(final_loss)):
        raise InvalidArgumentError(
            f"training diverged ({'non-finite weights' if not finite else f'final loss {final_loss}'}): the new "
            "factor would answer NaN. Lower lr, and check that the images are float32 in [0, 1] and the labels right")


def check_teacher_task(teacher: Teacher, spec: TaskSpec, label: str = "teacher") -> None:
    names = [t.name for t in teacher.tasks]
    if spec.name not in names:
        raise UnknownTaskError(f"the {label} has no task {spec.name!r} to distil from (it has {names})")
    found = teacher.tasks[names.index(spec.name)]
    if found.num_classes != spec.num_classes:
        raise IncompatibleFactorsError(f"the {label}'s task {spec.name!r} has {found.num_classes} classes, "
                                       f"the new task {spec.num_classes}")


def new_tsn(bank: FactorBank, spec: TaskSpec, *, widths: list[int] | None = None, strides: list[int] | None = None,
            variational: bool | None = None) -> TaskSpecificNetwork:
    """An untrained TSN for ``spec``, stamped with the bank's CKN fingerprint.

    By default it copies the architecture of the bank's first TSN (the factorization's choice), so a grown
    bank's factors cost the same; ``widths``/``strides``/``variational`` override it.
    """
    if not bank.tsns:
        raise KFError("the bank has no loaded TSN to copy an architecture from: load it with all tasks")
    like = next(iter(bank.tsns.values()))
    encoder = like.encoder_config
    if widths is not None or strides is not None:
        widths = list(widths if widths is not None else encoder.widths)
        strides = list(strides if strides is not None else encoder.strides)
        if len(widths) != len(strides) or not widths:
            raise KFError(f"TSN widths {widths} and strides {strides} need the same, non-zero length")
        encoder = replace(encoder, widths=widths, strides=strides)
    return TaskSpecificNetwork(spec.to_dict(), asdict(EncoderConfig.from_dict(encoder)), bank.ckn.width,
                               ckn_fingerprint=bank.manifest.ckn_fingerprint,
                               variational=like.variational if variational is None else variational)


# ============================================================================= the job of one new factor

@dataclass(frozen=True)
class NewFactorJobConfig(JobConfig):
    """One new factor on a frozen trunk: the shared configs plus the IMB objective configured for a frozen CKN."""

    objective: IMBConfig = field(default_factory=lambda: FROZEN_CKN_OBJECTIVE)


class NewFactorJob(Job):
    """A network mapping images to one task's ``TSNOutput`` (a TSN on a frozen CKN, or an experiment's baseline),
    trained by :func:`~kf_model.training.fit` with the frozen-CKN IMB objective; ``model`` and ``teacher`` come
    built (the Python path), or :meth:`build_model` makes them (``AddTaskJob``)."""

    name = "new_factor"
    kway_model = False
    script = "train/add_task.py"
    config_class = NewFactorJobConfig
    config: NewFactorJobConfig

    def __init__(self, config: NewFactorJobConfig, info: DataInfo, *, model: nn.Module | None = None,
                 teacher: Teacher | None = None) -> None:
        super().__init__(config, info)
        self.spec = info.tasks[0]
        self.given_model, self.teacher = model, teacher

    def build(self) -> None:
        self.model = self.given_model if self.given_model is not None else self.build_model()
        if self.teacher is not None:
            check_teacher_task(self.teacher, self.spec)
        objective = self.config.objective
        tsn = getattr(self.model, "tsn", None)
        if objective.infomin == "vib" and tsn is not None and not tsn.variational:
            raise KFError("--infomin vib needs a variational TSN; this one is not (use --infomin batch)")
        self.criterion = IMBObjective.frozen_ckn(objective if self.teacher else replace(objective, lambda_kd=0.0))

    def build_model(self) -> nn.Module:
        raise InvalidArgumentError(f"{type(self).__name__} needs a model")

    def select_data(self, dataset: Dataset) -> Dataset:
        return CheckedLabels(dataset, self.spec)  # a dataset from the caller: its labels checked as read

    def loss(self, model, objective, images, targets):
        teacher_logits = teacher_logits_for(self.teacher, self.spec.name, images) if self.teacher else None
        return factor_loss(self.criterion, model(images), self.spec.name, targets.reshape(len(targets), -1)[:, 0],
                           teacher_logits)

    def predict(self, model, images):
        return {self.spec.name: model(images).logits}

    def parameter_counts(self) -> dict[str, int]:
        counts = {"trained": count_parameters(self.model, trainable_only=True),
                  "frozen": count_parameters(self.model) - count_parameters(self.model, trainable_only=True)}
        if self.teacher is not None:
            counts["teacher"] = count_parameters(self.teacher)
        return counts

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        """Nothing: the caller holds the trained network."""


def fit_new_factor(model: nn.Module, spec: TaskSpec, dataset: Dataset, *, steps: int, batch_size: int = 64,
                   lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0, teacher: Teacher | None = None,
                   objective: IMBConfig = FROZEN_CKN_OBJECTIVE, input_spec: InputSpec | None = None,
                   output_dir: str | Path | None = None) -> nn.Module:
    """Train ``model`` (images -> ``TSNOutput`` of ``spec``) on ``dataset`` items ``(image, label)`` with
    :func:`~kf_model.training.fit`; returns it in eval mode. Without ``output_dir`` the run's log goes to a
    temporary folder. Only parameters with ``requires_grad`` are optimised; the run stays on the model's device.
    """
    check_task_spec(spec)
    check_training_arguments(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed)
    if len(dataset) < 2:
        raise KFError(f"need at least 2 training images for the new factor, got {len(dataset)}")
    device = next(model.parameters()).device
    info = DataInfo("in-memory", [spec], input_spec, one_vs_rest=False)
    with tempfile.TemporaryDirectory(prefix="kf-new-factor-") as scratch:
        config = NewFactorJobConfig(
            data=DataConfig(DataSourceConfig(dataset="in-memory")),
            loader=LoaderConfig(batch_size=min(batch_size, len(dataset)), seed=seed),
            optimizer=OptimizerConfig(lr=lr, weight_decay=weight_decay),
            schedule=ScheduleConfig(max_steps=steps, warmup_steps=0),
            run=RunConfig(output_dir=str(output_dir or scratch), seed=seed, cpu=device.type == "cpu",
                          log_every=max(1, min(20, steps))),
            objective=objective)
        result = fit(NewFactorJob, config, data=FitData(dataset, None, info),
                     job_options={"model": model, "teacher": teacher})
    check_finite(result.model, (result.summary or {}).get("final_train_loss"))
    return result.model


def train_new_task(bank: FactorBank, spec: TaskSpec, dataset: Dataset, *, steps: int = 500, batch_size: int = 64,
                   lr: float = 2e-3, seed: int = 0, teacher: Teacher | None = None, lambda_kd: float = 1.0,
                   objective: IMBConfig | None = None, tsn: TaskSpecificNetwork | None = None
                   ) -> TaskSpecificNetwork:
    """Train the factor of a new task against ``bank``'s frozen CKN; returns the TSN for ``bank.add_task``.

    ``dataset`` yields ``(image [C,H,W] in [0,1], label)``; ``teacher`` (optional, any ``Teacher`` solving
    ``spec.name``) adds a KD term of weight ``lambda_kd``. Trained by ``fit`` (the job of train/add_task.py).
    """
    if not isinstance(bank, FactorBank):
        raise InvalidArgumentError(f"bank must be a FactorBank (FactorBank.from_pretrained(...)), got "
                                   f"{type(bank).__name__}")
    check_task_spec(spec)
    check_training_arguments(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    if tsn is not None and not isinstance(tsn, TaskSpecificNetwork):
        raise InvalidArgumentError(f"tsn must be a TaskSpecificNetwork (kf_model.training.add_task.new_tsn) or "
                                   f"None, got {type(tsn).__name__}")
    if teacher is not None:
        check_teacher_task(teacher, spec)
        teacher = teacher.to(bank.device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    tsn = tsn if tsn is not None else new_tsn(bank, spec)
    objective = objective or replace(FROZEN_CKN_OBJECTIVE, lambda_kd=lambda_kd)
    model = NewTaskNetwork(Trunk(bank.ckn), tsn.to(bank.device))
    fit_new_factor(model, spec, dataset, steps=steps, batch_size=batch_size, lr=lr, seed=seed, teacher=teacher,
                   objective=objective, input_spec=bank.input_spec)
    return tsn.eval()


@torch.no_grad()
def factor_accuracy(ckn: CommonKnowledgeNetwork, tsn: TaskSpecificNetwork, dataset: Dataset, *,
                    batch_size: int = 256, teacher: Teacher | None = None) -> dict[str, float | int | None]:
    """Held-out accuracy (fraction) of the factor (CKN + TSN) on ``(image, label)`` items, and of the teacher.

    A one-vs-rest teacher is read as the evaluation reads it: positive iff its K-way argmax is this class.
    """
    device = next(tsn.parameters()).device
    correct = teacher_correct = total = 0
    names = [t.name for t in teacher.tasks] if teacher is not None else []
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        images, labels = images.to(device), labels.to(device).reshape(-1)
        correct += int((tsn(images, ckn(images).z).logits.argmax(-1) == labels).sum())
        if teacher is not None:
            out = teacher(images)
            if out.class_logits is not None:
                predicted = (out.class_logits.argmax(-1) == names.index(tsn.task.name)).long()
            else:
                predicted = out.logits[tsn.task.name].argmax(-1)
            teacher_correct += int((predicted == labels).sum())
        total += len(labels)
    if total == 0:
        raise KFError("no held-out images to evaluate the new factor on")
    return {"accuracy": correct / total, "teacher_accuracy": teacher_correct / total if teacher is not None else None,
            "samples": total}


# ============================================================================= the train/add_task.py job

@dataclass(frozen=True)
class AddTaskJobConfig(NewFactorJobConfig):
    """add_task.py: the bank to grow (folder or ``org/repo[@rev]``), the task, its TSN (None: the bank's
    architecture), the frozen-CKN objective (its KD term only with a ``teacher``) and where it is committed."""

    bank: str | None = None
    task: str | None = None
    replace: bool = False
    teacher: str | None = None
    tsn_widths: Sequence[int] | None = None
    tsn_strides: Sequence[int] | None = None
    eval_limit: int = 2000
    push_to_hub: bool = False
    create_pr: bool = False
    hub_branch: str | None = None

    def __post_init__(self) -> None:
        if not (self.bank and self.task):
            raise InvalidArgumentError("add_task needs a bank (--bank) and a task (--task)")
        check_option("eval_limit", COUNT, self.eval_limit)
        object.__setattr__(self, "objective", replace(self.objective, lambda_feat=0.0))  # no InfoMax: CKN frozen


class AddTaskJob(NewFactorJob):
    """One new TSN + heads on a bank's frozen CKN, trained by kf's Accelerate loop (``fit``), written into the bank."""

    name = "add_task"
    description = "Grow a factor bank: train one new task's factor against the bank's frozen CKN."
    required = (*REQUIRED, "bank", "task")
    config_class = AddTaskJobConfig
    config: AddTaskJobConfig

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        grow = parser.add_argument_group("growing a bank")
        grow.add_argument("--bank", help="factor bank folder (grown in place) or Hub repo 'org/repo[@revision]'")
        grow.add_argument("--task", help="the dataset's task to add (a task the bank lacks, unless --replace)")
        grow.add_argument("--replace", action="store_true", help="retrain a task the bank already has")
        grow.add_argument("--teacher", help="a teacher folder solving --task: adds a KD term from its logits")
        grow.add_argument("--tsn-widths", type=int, nargs="+", help="default: the bank's TSN architecture")
        grow.add_argument("--tsn-strides", type=int, nargs="+", help="default: the bank's TSN architecture")
        grow.add_argument("--eval-limit", type=int, default=2000,
                          help="test-split images on which the new factor's accuracy is recorded (0: skip)")
        loss = parser.add_argument_group("loss (the IMB objective of one factor, CKN frozen)")
        defaults = FROZEN_CKN_OBJECTIVE
        loss.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
        loss.add_argument("--task-weight", type=float, default=defaults.task_weight)
        loss.add_argument("--lambda-kd", type=float, default=defaults.lambda_kd,
                          help="weight of the KD term (with --teacher)")
        loss.add_argument("--kd-temperature", type=float, default=defaults.kd_temperature)
        loss.add_argument("--beta", type=float, default=defaults.beta, help="InfoMin weight")
        loss.add_argument("--infomin", choices=("batch", "vib"), default=defaults.infomin)
        hub = parser.add_argument_group("Hub (for a --bank org/repo)")
        hub.add_argument("--push-to-hub", action="store_true",
                         help="commit the new factor, factors.json and README.md to the bank's repo")
        hub.add_argument("--create-pr", action="store_true", help="open a pull request instead (a repo you do not own)")
        hub.add_argument("--hub-branch", help="branch to commit to (default: the repo's default branch)")

    def __init__(self, config: AddTaskJobConfig, info: DataInfo) -> None:
        self.location = BankLocation.parse(config.bank)
        if (config.push_to_hub or config.create_pr) and self.location.repo_id is None:
            raise KFError("--push-to-hub/--create-pr need a --bank org/repo; a folder bank is grown in place")
        self.column = task_column(info.tasks, config.task, info.name)
        self.dataset_one_vs_rest = info.one_vs_rest
        info.tasks, info.one_vs_rest = [info.tasks[self.column]], False  # the loop's validation scores this task
        super().__init__(config, info)

    def select_data(self, dataset: Dataset) -> Dataset:
        return TaskColumns(dataset, [self.column])  # a kf dataset's own labels: in range by construction

    def build_model(self) -> nn.Module:
        """The bank (refused before training if it has the task or other images), the teacher, the new TSN."""
        a = self.config
        self.bank = self.location.load()
        check_growable(self.bank.folder, str(self.location))  # every file growing rewrites, before training
        existing = [t.name for t in self.bank.available_tasks]
        if self.spec.name in existing and not a.replace:  # refuse before training, not after
            raise TaskExistsError(f"{self.location} already has a task {self.spec.name!r}; pass --replace to "
                                  f"retrain it (its tasks: {', '.join(existing)})")
        spec = self.info.input_spec
        bank_spec = self.bank.input_spec
        if (spec.channels, spec.size) != (bank_spec.channels, bank_spec.size):
            raise IncompatibleFactorsError(f"{self.info.name} has {spec.channels}-channel {spec.size}px images, the "
                                           f"bank {bank_spec.channels}-channel {bank_spec.size}px")
        self.trained_with = self.bank.manifest.ckn_fingerprint
        if a.teacher:
            self.teacher = load_module(Teacher, Path(a.teacher), f"teacher {a.teacher}").eval().requires_grad_(False)
        tsn = new_tsn(self.bank, self.spec, widths=a.tsn_widths, strides=a.tsn_strides)
        return NewTaskNetwork(Trunk(self.bank.ckn), tsn)

    def parameter_counts(self) -> dict[str, int]:
        counts = {"tsn": count_parameters(self.model.tsn), "ckn_frozen": count_parameters(self.bank.ckn)}
        if self.teacher is not None:
            counts["teacher"] = count_parameters(self.teacher)
        return counts

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        """The bare factor (for ``bank.add_task`` in Python), its test accuracy, then the grown bank."""
        tsn = model.tsn.to("cpu").eval()
        save_module(tsn, bank_path(output_dir, "tsn", self.spec.name))
        evaluation = self.evaluate(tsn, summary)
        a = self.config
        provenance = {"command": summary["command"], "dataset": self.info.name, "steps": summary["steps"],
                      "ckn_fingerprint": self.trained_with, "teacher": a.teacher,
                      "lambda_kd": self.criterion.config.lambda_kd, "source": str(self.location),
                      "pulled_commit": self.location.commit, "test_evaluation": evaluation}
        if self.location.folder is not None:
            grow_folder(self.location.folder, tsn, trained_with=self.trained_with, replace=a.replace,
                        evaluation=evaluation, provenance=provenance)
            summary["grown"] = {"folder": str(self.location.folder)}
            print(f"added {self.spec.name!r} to {self.location.folder}")
            return
        self.grow_hub_bank(output_dir, tsn, evaluation, provenance, summary)

    def evaluate(self, tsn: TaskSpecificNetwork, summary: dict[str, Any]) -> dict[str, Any] | None:
        """The new factor's accuracy on ``eval_limit`` test images (None with ``eval_limit`` 0)."""
        a = self.config
        if not a.eval_limit:
            return None
        test = load_dataset(self.info.name, "test", root=a.data.source.data_dir, limit=a.eval_limit, seed=0)
        teacher = self.teacher.to("cpu") if self.teacher is not None else None
        evaluation = factor_accuracy(self.bank.to("cpu").ckn, tsn, TaskColumns(test, [self.column]), teacher=teacher)
        summary["test_evaluation"] = evaluation
        print(f"new factor {self.spec.name!r}: test accuracy {100 * evaluation['accuracy']:.2f}% on "
              f"{evaluation['samples']} images")
        return evaluation

    def grow_hub_bank(self, output_dir: Path, tsn: TaskSpecificNetwork, evaluation: dict[str, Any] | None,
                      provenance: dict[str, Any], summary: dict[str, Any]) -> None:
        """A Hub bank: the grown bank is written to <output-dir>/bank, then (optionally) committed."""
        a = self.config
        self.bank.add_task(self.spec, tsn, replace=a.replace)
        folder = self.bank.save_pretrained(output_dir / "bank", repo_id=self.location.repo_id)
        manifest = record_added_task(json.loads((folder / MANIFEST_FILE).read_text()), self.spec, evaluation,
                                     provenance)
        paths = write_grown_bank(folder, self.bank, self.spec, manifest, repo_id=self.location.repo_id)
        fetch_evaluation(self.location, folder)
        paths = [*record_added_evaluation(folder, self.spec, evaluation, self.trained_with, provenance), *paths]
        summary["grown"] = {"folder": str(folder), "pulled_commit": self.location.commit}
        if a.push_to_hub or a.create_pr:
            pushed = push_grown_bank(folder, paths, self.location, create_pr=a.create_pr, branch=a.hub_branch)
            summary["pushed"] = pushed
            print(f"pushed {self.spec.name!r} to {pushed['repo_id']}: commit {pushed['commit'][:12]}"
                  + (f", pull request {pushed['pull_request']}" if pushed["pull_request"] else ""))


__all__ = ["FROZEN_CKN_OBJECTIVE", "AddTaskJob", "AddTaskJobConfig", "CheckedLabels", "NewFactorJob",
           "NewFactorJobConfig", "NewTaskNetwork", "TaskColumns", "Trunk", "check_task_spec",
           "check_training_arguments", "factor_accuracy", "factor_loss", "fit_new_factor", "new_tsn",
           "train_new_task"]
