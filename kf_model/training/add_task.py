"""Growing a factor bank: a new task's factor, trained against the bank's frozen CKN.

The paper's third claim is that the common knowledge network transfers to new tasks. Growing a bank puts it
to use: one new TSN (and its heads) learns a task the bank never saw, from ground-truth labels and optionally
a teacher's logits, while the CKN stays frozen (no gradient, BatchNorm in eval mode). Nothing that is
already in the bank changes, so old tasks keep bit-identical outputs and any subset of old and new factors
still assembles exactly.

    python train/add_task.py --bank runs/bank --dataset dsprites --task pos_x --output-dir runs/add-pos_x
    python train/add_task.py --bank org/repo@v1 --dataset dsprites --task pos_x --output-dir ... --push-to-hub

In Python::

    tsn = train_new_task(bank, spec, dataset)   # dataset items: (image [C,H,W] in [0,1], label int)
    bank.add_task(spec, tsn)
    bank.save_pretrained(folder)                 # or bank.push_to_hub(repo_id)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from kf_model.bank import (
    MANIFEST_FILE,
    FactorBank,
    bank_path,
    load_module,
    save_module,
)
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
from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    IncompatibleFactorsError,
    InvalidArgumentError,
    KFError,
    TaskExistsError,
    UnknownTaskError,
)
from kf_model.losses import infomin_batch_kl, kd_loss, label_smoothed_ce, vib_kl
from kf_model.models import (
    CKNOutput,
    CommonKnowledgeNetwork,
    EncoderConfig,
    TaskSpecificNetwork,
    Teacher,
    TSNOutput,
    count_parameters,
)
from kf_model.training import REQUIRED, DataInfo, Job, JobConfig, check_option
from kf_model.training.options import COUNT, NON_NEGATIVE, POSITIVE, SMOOTHING

# ============================================================================= the network and its loss


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


@dataclass
class NewTaskLoss:
    """The IMB objective restricted to one new factor: what is left when the CKN is frozen.

    CE_ls(head) + task_weight * CE_ls(aux head) + lambda_kd * KD(head, teacher) + beta * InfoMin(z_i).
    InfoMax trains the CKN, so it has no place here. ``infomin``: "batch" (reference) or "vib".
    """

    label_smoothing: float = 0.1
    task_weight: float = 1.0
    lambda_kd: float = 0.0
    kd_temperature: float = 4.0
    beta: float = 1e-3
    infomin: str = "batch"

    def __call__(self, out: TSNOutput, labels: Tensor, teacher_logits: Tensor | None = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        ce = label_smoothed_ce(out.logits, labels, self.label_smoothing)
        aux = label_smoothed_ce(out.aux_logits, labels, self.label_smoothing)
        terms = {"ce": ce, "aux_ce": aux}
        total = ce + self.task_weight * aux
        if teacher_logits is not None and self.lambda_kd > 0:
            terms["kd"] = kd_loss(out.logits, teacher_logits.detach(), self.kd_temperature)
            total = total + self.lambda_kd * terms["kd"]
        if self.beta > 0:
            if self.infomin == "vib":
                if out.mu is None:
                    raise KFError("the vib InfoMin needs a variational TSN")
                terms["infomin"] = vib_kl(out.mu, out.logvar)
            else:
                terms["infomin"] = infomin_batch_kl(out.z)
            total = total + self.beta * terms["infomin"]
        return total, {k: v.detach() for k, v in terms.items()}


def teacher_logits_for(teacher: Teacher, task: str, images: Tensor) -> Tensor:
    """The teacher's [B, K] logits of ``task`` (for a one-vs-rest teacher: its binary reading)."""
    with torch.no_grad():
        return teacher(images).logits[task]


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


def train_network(model: nn.Module, dataset: Dataset, loss: NewTaskLoss, *, steps: int, batch_size: int = 64,
                  lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0, teacher: Teacher | None = None,
                  task: str | None = None, trainable: list[nn.Parameter] | None = None) -> list[float]:
    """A plain AdamW loop (cosine LR) over ``dataset`` items ``(image, label)``; returns the loss per step.

    The Python path of growing a bank and the transfer experiment's loop (``train/add_task.py`` trains with
    kf's Accelerate loop instead). Only parameters with ``requires_grad`` are optimised.
    """
    if steps < 1 or batch_size < 2:
        raise KFError(f"need steps >= 1 and batch_size >= 2 (InfoMin needs a batch), got {steps} and {batch_size}")
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        generator=generator)
    device = next(model.parameters()).device
    model.train()
    history: list[float] = []
    while len(history) < steps:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device).reshape(-1)
            if images.shape[0] < 2:
                continue
            teacher_logits = teacher_logits_for(teacher, task, images) if teacher is not None else None
            total, _ = loss(model(images), labels, teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
            history.append(float(total.detach()))
            if len(history) == steps:
                break
    model.eval()
    return history


def train_new_task(bank: FactorBank, spec: TaskSpec, dataset: Dataset, *, steps: int = 500, batch_size: int = 64,
                   lr: float = 2e-3, seed: int = 0, teacher: Teacher | None = None, lambda_kd: float = 1.0,
                   loss: NewTaskLoss | None = None, tsn: TaskSpecificNetwork | None = None) -> TaskSpecificNetwork:
    """Train the factor of a new task against ``bank``'s frozen CKN; returns the TSN for ``bank.add_task``.

    ``dataset`` yields ``(image [C,H,W] in [0,1], label)``; ``teacher`` (optional, any ``Teacher`` solving
    ``spec.name``) adds a KD term of weight ``lambda_kd``. The CKN is checked unchanged afterwards.
    """
    if teacher is not None:
        check_teacher_task(teacher, spec)
        teacher = teacher.to(bank.device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    tsn = tsn if tsn is not None else new_tsn(bank, spec)
    loss = loss or NewTaskLoss(lambda_kd=lambda_kd if teacher is not None else 0.0)
    model = NewTaskNetwork(Trunk(bank.ckn), tsn.to(bank.device))
    train_network(model, dataset, loss, steps=steps, batch_size=batch_size, lr=lr, seed=seed, teacher=teacher,
                  task=spec.name)
    return tsn.eval()


# ============================================================================= data

class TaskColumns(Dataset):
    """A multi-task dataset reduced to some of its task columns: ``(image, targets[columns])``.

    Keeps the wrapped dataset's batched ``__getitems__`` (dSprites renders a batch at once).
    """

    def __init__(self, dataset: Any, columns: list[int]) -> None:
        self.dataset, self.columns = dataset, list(columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, targets = self.dataset[index]
        return image, targets[self.columns]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [(image, targets[self.columns]) for image, targets in samples]


def task_column(tasks: list[TaskSpec], name: str, dataset: str) -> int:
    names = [t.name for t in tasks]
    if name not in names:
        raise UnknownTaskError(f"{dataset} has no task {name!r}; its tasks: {', '.join(names)}")
    return names.index(name)


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
class AddTaskJobConfig(JobConfig):
    """add_task.py: the bank to grow (folder or ``org/repo[@rev]``), the task, its TSN (None: the bank's
    architecture), the loss of one factor (its KD term only with a ``teacher``) and where it is committed."""

    bank: str | None = None
    task: str | None = None
    replace: bool = False
    teacher: str | None = None
    tsn_widths: Sequence[int] | None = None
    tsn_strides: Sequence[int] | None = None
    eval_limit: int = 2000
    loss: NewTaskLoss = field(default_factory=lambda: NewTaskLoss(lambda_kd=1.0))
    push_to_hub: bool = False
    create_pr: bool = False
    hub_branch: str | None = None

    def __post_init__(self) -> None:
        if not (self.bank and self.task):
            raise InvalidArgumentError("add_task needs a bank (--bank) and a task (--task)")
        if self.loss.infomin not in ("batch", "vib"):
            raise InvalidArgumentError(f"--infomin must be batch or vib, got {self.loss.infomin!r}")
        check_option("eval_limit", COUNT, self.eval_limit)
        for name, kind in (("label_smoothing", SMOOTHING), ("task_weight", NON_NEGATIVE), ("lambda_kd", NON_NEGATIVE),
                           ("kd_temperature", POSITIVE), ("beta", NON_NEGATIVE)):
            check_option(name, kind, getattr(self.loss, name))


class AddTaskJob(Job):
    """One new TSN + heads on a bank's frozen CKN, trained by kf's Accelerate loop (``fit``)."""

    name = "add_task"
    kway_model = False
    script = "train/add_task.py"
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
        defaults = NewTaskLoss()
        loss.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
        loss.add_argument("--task-weight", type=float, default=defaults.task_weight)
        loss.add_argument("--lambda-kd", type=float, default=1.0, help="weight of the KD term (with --teacher)")
        loss.add_argument("--kd-temperature", type=float, default=defaults.kd_temperature)
        loss.add_argument("--beta", type=float, default=defaults.beta, help="InfoMin weight")
        loss.add_argument("--infomin", choices=("batch", "vib"), default=defaults.infomin)
        hub = parser.add_argument_group("Hub (for a --bank org/repo)")
        hub.add_argument("--push-to-hub", action="store_true",
                         help="commit the new factor, factors.json and README.md to the bank's repo")
        hub.add_argument("--create-pr", action="store_true", help="open a pull request instead (a repo you do not own)")
        hub.add_argument("--hub-branch", help="branch to commit to (default: the repo's default branch)")

    def __init__(self, config: AddTaskJobConfig, info: DataInfo) -> None:
        super().__init__(config, info)
        self.location = BankLocation.parse(config.bank)
        if (config.push_to_hub or config.create_pr) and self.location.repo_id is None:
            raise KFError("--push-to-hub/--create-pr need a --bank org/repo; a folder bank is grown in place")
        self.column = task_column(info.tasks, config.task, info.name)
        self.spec = info.tasks[self.column]
        self.dataset_one_vs_rest = info.one_vs_rest
        info.tasks, info.one_vs_rest = [self.spec], False  # the loop's validation then scores this task only

    def select_data(self, dataset: Dataset) -> Dataset:
        return TaskColumns(dataset, [self.column])

    def build(self) -> None:
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
            check_teacher_task(self.teacher, self.spec)
        tsn = new_tsn(self.bank, self.spec, widths=a.tsn_widths, strides=a.tsn_strides)
        self.model = NewTaskNetwork(Trunk(self.bank.ckn), tsn)
        self.criterion = replace(a.loss, lambda_kd=a.loss.lambda_kd if a.teacher else 0.0)

    def loss(self, model, objective, images, targets):
        teacher_logits = teacher_logits_for(self.teacher, self.spec.name, images) if self.teacher else None
        return self.criterion(model(images), targets[:, 0], teacher_logits)

    def predict(self, model, images):
        return {self.spec.name: model(images).logits}

    def parameter_counts(self) -> dict[str, int]:
        counts = {"tsn": count_parameters(self.model.tsn), "ckn_frozen": count_parameters(self.bank.ckn)}
        if self.teacher is not None:
            counts["teacher"] = count_parameters(self.teacher)
        return counts

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        a = self.config
        tsn = model.tsn.to("cpu").eval()
        ckn = self.bank.to("cpu").ckn
        save_module(tsn, bank_path(output_dir, "tsn", self.spec.name))  # the bare factor, for bank.add_task in Python
        evaluation = None
        if a.eval_limit:
            test = load_dataset(self.info.name, "test", root=a.data.source.data_dir, limit=a.eval_limit, seed=0)
            teacher = self.teacher.to("cpu") if self.teacher is not None else None
            evaluation = factor_accuracy(ckn, tsn, TaskColumns(test, [self.column]), teacher=teacher)
            summary["test_evaluation"] = evaluation
            print(f"new factor {self.spec.name!r}: test accuracy {100 * evaluation['accuracy']:.2f}% on "
                  f"{evaluation['samples']} images")
        provenance = {"command": summary["command"], "dataset": self.info.name, "steps": summary["steps"],
                      "ckn_fingerprint": self.trained_with, "teacher": a.teacher,
                      "lambda_kd": self.criterion.lambda_kd, "source": str(self.location),
                      "pulled_commit": self.location.commit,
                      "test_evaluation": evaluation}
        if self.location.folder is not None:
            grow_folder(self.location.folder, tsn, trained_with=self.trained_with, replace=a.replace,
                        evaluation=evaluation, provenance=provenance)
            summary["grown"] = {"folder": str(self.location.folder)}
            print(f"added {self.spec.name!r} to {self.location.folder}")
            return
        # a Hub bank: the grown bank is written to <output-dir>/bank, then (optionally) committed
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


__all__ = ["AddTaskJob", "AddTaskJobConfig", "NewTaskLoss", "NewTaskNetwork", "TaskColumns", "Trunk", "factor_accuracy",
           "new_tsn", "train_network", "train_new_task"]
