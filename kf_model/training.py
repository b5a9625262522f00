"""The Accelerate training loop shared by the three scripts in ``train/``.

    python train/train_teacher.py --config train/configs/dsprites_teacher.json --output-dir runs/dsprites/teacher
    accelerate launch train/factorize.py --config ... --teacher runs/dsprites/teacher --output-dir runs/dsprites/bank

One loop (:func:`fit`) trains any :class:`Job`; a job says what differs between the scripts: the networks,
the loss, the quick validation and what is written at the end.

- :class:`TeacherJob`: the multi-task teacher (one head per task, or one K-way classifier read as K
  one-vs-rest tasks).
- :class:`DistillJob`: the paper's multi-task KD baseline: one student (as many parameters as CKN + all TSNs)
  distilled from the frozen teacher.
- :class:`FactorizeJob`: knowledge factorization: CKN + one TSN per task, trained with the IMB objective
  from the frozen teacher, saved as a :class:`~kf_model.bank.FactorBank`.

Reproducibility: on a given machine a run is a function of its arguments (up to the GPU's non-deterministic
kernels, if any). The data order of epoch e is a permutation
seeded by (seed, e) (:class:`EpochShuffleSampler`), the step counter and the LR schedule are checkpointed
with the model, the optimizer and every RNG (``Accelerator.save_state``), and a resumed run skips the
batches it had already consumed in the current epoch. Kill-and-resume therefore ends with the same weights
as an uninterrupted run (tests/test_training.py checks it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm import tqdm

import kf_model
from kf_model.bank import FactorBank, load_module, save_module
from kf_model.data import DATASET_NAMES, load_dataset
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import KFError
from kf_model.factor import AssembledNetwork
from kf_model.losses import IMBConfig, IMBObjective, distillation_objective, label_smoothed_ce, multitask_ce
from kf_model.networks import (
    BackboneConfig,
    CommonKnowledgeNetwork,
    EncoderConfig,
    TaskSpecificNetwork,
    Teacher,
    count_parameters,
)

VALIDATION_SEED = 20220707  # the validation carve-out of the train split never depends on --seed
TRAINING_FILE = "training.json"
LOG_FILE = "log.jsonl"
CHECKPOINTS_DIR = "checkpoints"


# ============================================================================= command line

def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every script shares: data, schedule, optimizer, Accelerate, checkpoints, logging."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of option values (keys: option names); flags override it")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_NAMES, help="dataset to train on (required)")
    data.add_argument("--data-dir", help="where dataset files are looked for (Fashion-MNIST)")
    data.add_argument("--download", action="store_true", help="download missing dataset files")
    data.add_argument("--limit", type=int, help="train on a seeded random subset of this many images")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the --limit subset (same for every stage)")
    data.add_argument("--val-size", type=int, default=0,
                      help="images carved out of the train split (fixed seed, never trained on) for a quick "
                           "validation at the end; 0 skips it")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")

    schedule = parser.add_argument_group("schedule and optimizer")
    schedule.add_argument("--batch-size", type=int, default=128, help="per process and per micro-batch")
    schedule.add_argument("--eval-batch-size", type=int, default=256)
    schedule.add_argument("--max-steps", type=int, help="optimizer steps (with --epochs: whichever comes first)")
    schedule.add_argument("--epochs", type=float, help="passes over the training set (default 1 without --max-steps)")
    schedule.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    schedule.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    schedule.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    schedule.add_argument("--weight-decay", type=float, default=1e-4, help="not applied to biases and norm layers")
    schedule.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up, then cosine decay")
    schedule.add_argument("--min-lr-ratio", type=float, default=0.01, help="final LR as a fraction of --lr")
    schedule.add_argument("--clip-grad-norm", type=float, default=0.0, help="clip the gradient norm (0: off)")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", help="where outputs, checkpoints and logs go (required)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    run.add_argument("--gradient-accumulation-steps", type=int, default=1)
    run.add_argument("--cpu", action="store_true", help="run on the CPU even if an accelerator is available")
    run.add_argument("--num-threads", type=int, default=None,
                     help="CPU threads of torch (default: all cores); 1 is much faster on a machine other jobs share")
    run.add_argument("--checkpoint-every", type=int, default=0,
                     help="save a resumable checkpoint every N steps in <output-dir>/checkpoints (0: never)")
    run.add_argument("--checkpoints-total-limit", type=int, default=2, help="keep only the newest N checkpoints")
    run.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH|latest",
                     help="continue from a checkpoint folder, or from the newest one in <output-dir>/checkpoints")
    run.add_argument("--stop-after-steps", type=int, default=None,
                     help="stop (with a checkpoint) after this many steps, keeping the schedule of the full run: "
                          "a deliberate interruption, to be continued with --resume")
    run.add_argument("--log-with", choices=("none", "tensorboard"), default="none",
                     help="experiment tracker (tensorboard needs `pip install tensorboard`)")
    run.add_argument("--log-every", type=int, default=20, help="steps between progress-bar/log updates")
    return parser


REQUIRED = ("dataset", "output_dir")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               required: Sequence[str] = REQUIRED) -> argparse.Namespace:
    """Parse ``argv``; values of ``--config FILE`` become defaults, so flags given on the command line win."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    config_path = early.parse_known_args(argv)[0].config
    if config_path:
        try:
            values = json.loads(Path(config_path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"cannot read --config {config_path}: {error}")
        if not isinstance(values, dict):
            parser.error(f"--config {config_path} must hold a JSON object of option values")
        values = {key.lstrip("-").replace("-", "_"): value for key, value in values.items()}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known - {"config"})
        if unknown:
            parser.error(f"--config {config_path}: unknown option(s) {unknown}")
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    missing = [f"--{name.replace('_', '-')}" for name in required if getattr(args, name, None) in (None, "")]
    if missing:
        parser.error(f"missing required option(s): {', '.join(missing)} (on the command line or in --config)")
    if args.log_with == "tensorboard" and not (importlib.util.find_spec("tensorboard")
                                               or importlib.util.find_spec("tensorboardX")):
        parser.error("--log-with tensorboard needs the tensorboard package, which is not installed: "
                     "`pip install tensorboard`, or drop the option (log.jsonl is always written)")
    for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    args.argv = argv
    return args


# ============================================================================= data

@dataclass
class DataInfo:
    """What the networks need to know about a dataset (a Subset forgets it)."""

    name: str
    tasks: list[TaskSpec]
    input_spec: InputSpec
    one_vs_rest: bool


def _subset(dataset: Dataset, items: Tensor) -> Dataset:
    items = items.sort().values
    return dataset.select(items) if hasattr(dataset, "select") else Subset(dataset, items.tolist())


def load_training_data(args: argparse.Namespace) -> tuple[Dataset, Dataset | None, DataInfo]:
    """(train set, validation set or None, info). The validation images are a fixed carve-out of the train
    split (VALIDATION_SEED), never trained on by any stage; ``--limit`` then picks a seeded subset of the rest."""
    full = load_dataset(args.dataset, "train", root=args.data_dir, download=args.download)
    info = DataInfo(args.dataset, list(full.tasks), full.input_spec, bool(getattr(full, "one_vs_rest", False)))
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    if not 0 <= args.val_size < len(full):
        raise KFError(f"--val-size must be in [0, {len(full)}), got {args.val_size}")
    val_items, pool = order[:args.val_size], order[args.val_size:]
    if args.limit is not None:
        if args.limit < 1:
            raise KFError(f"--limit must be >= 1, got {args.limit}")
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.data_seed))[:args.limit]
        pool = pool[pick]
    return _subset(full, pool), (_subset(full, val_items) if args.val_size else None), info


class EpochShuffleSampler(Sampler[int]):
    """A new permutation each epoch, a pure function of (seed, epoch): every process and every resumed run
    sees the same order. It owns no RNG state, so Accelerate leaves it alone (no generator syncing)."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        yield from torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed)).tolist()


def make_train_loader(train_set: Dataset, args: argparse.Namespace) -> DataLoader:
    """The training DataLoader of ``fit`` (before ``accelerator.prepare``); the benchmark times the same one."""
    return DataLoader(train_set, batch_size=args.batch_size, drop_last=True, num_workers=args.num_workers,
                      sampler=EpochShuffleSampler(len(train_set), args.seed),
                      generator=torch.Generator().manual_seed(args.seed))  # worker seeds: not the global RNG


def batch_stream(accelerator: Accelerator, loader: DataLoader, start_batch: int) -> Iterator[tuple[int, Any]]:
    """Endless (epoch, batch) pairs of a prepared loader, starting ``start_batch`` micro-batches in."""
    epoch, skip = divmod(start_batch, len(loader))
    while True:
        loader.set_epoch(epoch)  # -> EpochShuffleSampler.set_epoch, on every process
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0


# ============================================================================= validation

@dataclass
class Predictions:
    """Gathered over processes, each sample exactly once (``gather_for_metrics``)."""

    predicted: Tensor  # [N, T] predicted class per task
    positive: Tensor | None  # [N, T] probability of the positive class (binary tasks only)
    targets: Tensor  # [N, T]

    def __len__(self) -> int:
        return len(self.targets)


@torch.no_grad()
def collect_predictions(accelerator: Accelerator, predict: Callable[[Tensor], dict[str, Tensor]], dataset: Dataset,
                        *, batch_size: int, num_workers: int = 0) -> Predictions:
    """Run ``predict`` (images -> {task: logits}) over ``dataset`` split across processes, gather everything."""
    loader = accelerator.prepare_data_loader(
        DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers))
    predicted, positive, targets = [], [], []
    for images, batch_targets in loader:
        with accelerator.autocast():
            logits = list(predict(images).values())
        binary = all(lg.shape[1] == 2 for lg in logits)
        pred = torch.stack([lg.argmax(dim=1) for lg in logits], dim=1)
        pos = torch.stack([lg.float().softmax(dim=1)[:, 1] for lg in logits], dim=1) if binary else pred.float()
        pred, pos, batch_targets = accelerator.gather_for_metrics((pred, pos, batch_targets))
        predicted.append(pred.cpu())
        positive.append(pos.cpu() if binary else None)
        targets.append(batch_targets.cpu())
    has_positive = bool(positive) and all(p is not None for p in positive)
    return Predictions(torch.cat(predicted), torch.cat(positive) if has_positive else None, torch.cat(targets))


def accuracy_report(predictions: Predictions, tasks: Sequence[TaskSpec], one_vs_rest: bool,
                    kway_model: bool = False) -> dict[str, Any]:
    """Per-task accuracy (percent) and their mean; one-vs-rest: also the K-way accuracy of the argmax of the
    positive-class probabilities. A K-way model (a one-vs-rest Teacher) is read as the evaluation reads it:
    task i is predicted positive iff its K-way argmax is i (for factors: their own binary decision)."""
    predicted = predictions.predicted
    if one_vs_rest and kway_model and predictions.positive is not None:
        predicted = torch.nn.functional.one_hot(predictions.positive.argmax(dim=1), len(tasks))
    correct = (predicted == predictions.targets).float().mean(dim=0) * 100
    report: dict[str, Any] = {
        "samples": len(predictions),
        "accuracy": {t.name: round(float(c), 3) for t, c in zip(tasks, correct)},
        "mean_accuracy": round(float(correct.mean()), 3),
    }
    if one_vs_rest and predictions.positive is not None:
        kway = (predictions.positive.argmax(dim=1) == predictions.targets.argmax(dim=1)).float().mean() * 100
        report["kway_accuracy"] = round(float(kway), 3)
    return report


def compare(report: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Points by which ``report`` beats ``reference`` (negative: behind), per task, mean and K-way."""
    delta = {name: round(acc - reference["accuracy"][name], 3) for name, acc in report["accuracy"].items()}
    delta["min"] = min(delta.values())
    delta["mean"] = round(report["mean_accuracy"] - reference["mean_accuracy"], 3)
    if "kway_accuracy" in report:
        delta["kway"] = round(report["kway_accuracy"] - reference["kway_accuracy"], 3)
    return delta


# ============================================================================= optimisation

def build_optimizer(modules: Sequence[nn.Module], args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and norm layers (1-d tensors)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    return torch.optim.AdamW(groups, lr=args.lr)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak LR, then cosine decay to ``min_ratio`` of it at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Progress:
    """The loop's own state, checkpointed with the model (``register_for_checkpointing``)."""

    step: int = 0  # optimizer steps done
    elapsed_s: float = 0.0  # training wall time over all resumed segments

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])


def checkpoint_number(path: Path) -> int:
    match = re.fullmatch(r"checkpoint_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def existing_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / CHECKPOINTS_DIR
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_number(p) >= 0] if folder.is_dir() else []
    return sorted(found, key=checkpoint_number)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """``latest`` -> the newest checkpoint of ``output_dir`` (None if there is none yet); a path must exist."""
    if resume is None:
        return None
    if resume == "latest":
        found = existing_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise KFError(f"--resume {resume}: no such checkpoint folder")
    return path


# ============================================================================= jobs

def backbone_config(arch: str, width: int, num_stages: int, stem_stride: int, coord_channels: bool,
                    input_spec: InputSpec) -> dict[str, Any]:
    return asdict(BackboneConfig(arch=arch, in_channels=input_spec.channels, width=width, num_stages=num_stages,
                                 stem_stride=stem_stride, coord_channels=coord_channels,
                                 mean=list(input_spec.mean), std=list(input_spec.std)))


def add_backbone_arguments(parser: argparse.ArgumentParser, prefix: str = "", width: int = 32) -> None:
    group = parser.add_argument_group(f"{prefix or 'backbone'} architecture".strip("-"))
    group.add_argument(f"--{prefix}arch", choices=("cnn", "resnet18"), default="cnn")
    group.add_argument(f"--{prefix}width", type=int, default=width, help="cnn: channels of the first stage")
    group.add_argument(f"--{prefix}num-stages", type=int, default=4, help="cnn: stages (width doubles at each)")
    group.add_argument(f"--{prefix}stem-stride", type=int, default=1, help="2 halves the resolution at once")


def load_teacher(path: str, info: DataInfo) -> Teacher:
    """The frozen teacher: eval mode (its BatchNorm statistics must not drift), no gradients."""
    teacher = load_module(Teacher, Path(path), f"teacher {path}")
    names, expected = [t.name for t in teacher.tasks], [t.name for t in info.tasks]
    if names != expected:
        raise KFError(f"teacher {path} solves tasks {names}, but {info.name} has {expected}")
    return teacher.eval().requires_grad_(False)


def read_summary(folder: str) -> dict[str, Any]:
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


class Job:
    """What differs between the scripts. ``build`` sets ``model`` (trained and saved), optionally
    ``objective`` (a module with trainable parameters of the loss) and ``teacher`` (frozen)."""

    name = ""
    script = ""
    description = ""
    model: nn.Module
    objective: nn.Module | None = None
    teacher: Teacher | None = None
    kway_model = True  # a Teacher-class model: one-vs-rest tasks are read from its K-way argmax
    required: tuple[str, ...] = REQUIRED  # options that must come from the command line or --config

    def __init__(self, args: argparse.Namespace, info: DataInfo) -> None:
        self.args, self.info = args, info

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = base_parser(cls.description)
        cls.add_arguments(parser)
        return parser

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    def build(self) -> None:
        raise NotImplementedError

    def select_data(self, dataset: Dataset) -> Dataset:
        """The part of a train/validation set this job uses (e.g. some task columns); default: all of it."""
        return dataset

    def loss(self, model: nn.Module, objective: nn.Module | None, images: Tensor,
             targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def predict(self, model: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """{task: logits} of the trained model, for the quick validation."""
        return model(images).logits

    def parameter_counts(self) -> dict[str, int]:
        return {"model": count_parameters(self.model)}

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        """Write the trained model (main process only)."""
        save_module(model, output_dir)


class TeacherJob(Job):
    """The multi-task teacher: multitask CE, or for a one-vs-rest dataset K-way CE on its class logits."""

    name = "teacher"
    script = "train/train_teacher.py"
    description = "Train the multi-task teacher network."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_backbone_arguments(parser)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False,
                            help="append x/y coordinate maps to the input (position tasks need them)")
        parser.add_argument("--label-smoothing", type=float, default=0.1)

    def build(self) -> None:
        a, info = self.args, self.info
        backbone = backbone_config(a.arch, a.width, a.num_stages, a.stem_stride, a.coord_channels, info.input_spec)
        self.model = Teacher(backbone, [t.to_dict() for t in info.tasks], one_vs_rest=info.one_vs_rest)

    def loss(self, model, objective, images, targets):
        out = model(images)
        if self.info.one_vs_rest:
            ce = label_smoothed_ce(out.class_logits, targets.argmax(dim=1), self.args.label_smoothing)
        else:
            ce = multitask_ce(out.logits, targets, self.args.label_smoothing)
        return ce, {"ce": ce.detach()}


class DistillJob(Job):
    """The multi-task KD baseline: a smaller Teacher-class student, CE + KD from the frozen teacher."""

    name = "distill"
    script = "train/distill.py"
    description = "Distil one multi-task student from a frozen teacher (the KD baseline of the paper)."
    required = (*REQUIRED, "teacher")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--teacher", help="folder written by train_teacher.py (required)")
        add_backbone_arguments(parser)
        parser.set_defaults(width=None)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False)
        parser.add_argument("--match-factorization", metavar="CONFIG",
                            help="a factorize.py --config: report its CKN + TSNs parameter count and, without "
                                 "--width, pick the cnn width whose student comes closest to it")
        parser.add_argument("--label-smoothing", type=float, default=0.1)
        parser.add_argument("--lambda-kd", type=float, default=1.0, help="weight of the KD term (CE has weight 1)")
        parser.add_argument("--kd-temperature", type=float, default=4.0)

    def student(self, width: int) -> Teacher:
        a, info = self.args, self.info
        backbone = backbone_config(a.arch, width, a.num_stages, a.stem_stride, a.coord_channels, info.input_spec)
        return Teacher(backbone, [t.to_dict() for t in info.tasks], one_vs_rest=info.one_vs_rest)

    def build(self) -> None:
        self.teacher = load_teacher(self.args.teacher, self.info)
        self.factorization_params = None
        if self.args.match_factorization:
            self.factorization_params = factorization_parameter_count(self.args.match_factorization, self.info)
        width = self.args.width
        if width is None:
            if self.factorization_params is None:
                raise KFError("distill.py needs --width or --match-factorization CONFIG")
            width = matching_width(lambda w: count_parameters(self.student(w)), self.factorization_params)
            self.args.width = width
        self.model = self.student(width)
        if self.factorization_params is not None:
            print(f"KD student (cnn width {width}): {count_parameters(self.model):,} parameters; "
                  f"factorization (CKN + all TSNs): {self.factorization_params:,}")

    def loss(self, model, objective, images, targets):
        a = self.args
        with torch.no_grad():
            teacher = self.teacher(images)
        student = model(images)
        if self.info.one_vs_rest:  # distil the K-way classifier, as a K-way student
            return distillation_objective({"class": student.class_logits}, targets.argmax(dim=1, keepdim=True),
                                          {"class": teacher.class_logits}, label_smoothing=a.label_smoothing,
                                          lambda_kd=a.lambda_kd, temperature=a.kd_temperature)
        return distillation_objective(student.logits, targets, teacher.logits, label_smoothing=a.label_smoothing,
                                      lambda_kd=a.lambda_kd, temperature=a.kd_temperature)

    def parameter_counts(self) -> dict[str, int]:
        counts = {"model": count_parameters(self.model), "teacher": count_parameters(self.teacher)}
        if self.factorization_params is not None:
            counts["factorization"] = self.factorization_params
        return counts


class FactorizeJob(Job):
    """Knowledge factorization: AssembledNetwork(CKN, TSNs) + IMB objective from the frozen teacher."""

    name = "factorize"
    kway_model = False  # every factor decides its own binary task
    script = "train/factorize.py"
    description = "Factorize a frozen teacher into a common knowledge network and one TSN per task (IMB)."
    required = (*REQUIRED, "teacher")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--teacher", help="folder written by train_teacher.py (required)")
        add_backbone_arguments(parser, prefix="ckn-", width=16)
        parser.add_argument("--coord-channels", action=argparse.BooleanOptionalAction, default=False,
                            help="coordinate maps in the CKN and the TSN encoders")
        parser.add_argument("--init-ckn-from-teacher", action=argparse.BooleanOptionalAction, default=False,
                            help="start the CKN from the teacher's backbone (same architecture needed)")
        tsn = parser.add_argument_group("task-specific networks")
        tsn.add_argument("--tsn-widths", type=int, nargs="+", default=[8, 16, 32])
        tsn.add_argument("--tsn-strides", type=int, nargs="+", default=[2, 2, 2])
        tsn.add_argument("--variational", action="store_true", help="TSNs output (mu, logvar) and sample z")
        imb = parser.add_argument_group("IMB objective (kf_model.losses.IMBConfig)")
        defaults = IMBConfig()
        imb.add_argument("--infomin", choices=("batch", "vib"), default=defaults.infomin,
                         help="batch: KL of the batch moments of z_i (reference); vib: per-sample KL (needs "
                              "--variational)")
        for name in ("label_smoothing", "task_weight", "lambda_kd", "kd_temperature", "lambda_feat",
                     "infomax_temperature", "beta"):
            imb.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
        hub = parser.add_argument_group("Hub")
        hub.add_argument("--push-to-hub", metavar="REPO_ID", help="also publish the bank to this Hub repo")
        hub.add_argument("--hub-tag", help="tag the pushed commit")
        hub.add_argument("--hub-private", action="store_true", help="create the repo as private")

    def imb_config(self) -> IMBConfig:
        a = self.args
        return IMBConfig(label_smoothing=a.label_smoothing, task_weight=a.task_weight, lambda_kd=a.lambda_kd,
                         kd_temperature=a.kd_temperature, lambda_feat=a.lambda_feat,
                         infomax_temperature=a.infomax_temperature, beta=a.beta, infomin=a.infomin)

    def build(self) -> None:
        a = self.args
        if a.infomin == "vib" and not a.variational:
            raise KFError("--infomin vib needs --variational (the TSNs must output mu and logvar)")
        self.teacher = load_teacher(a.teacher, self.info)
        ckn, tsns = build_factor_networks(a, self.info)
        if a.init_ckn_from_teacher:
            if asdict(BackboneConfig.from_dict(ckn._hub_mixin_config["backbone"])) != \
                    asdict(BackboneConfig.from_dict(self.teacher._hub_mixin_config["backbone"])):
                raise KFError("--init-ckn-from-teacher needs the CKN's architecture to be the teacher's: teacher "
                              f"{self.teacher._hub_mixin_config['backbone']}, CKN {ckn._hub_mixin_config['backbone']}")
            ckn.backbone.load_state_dict(self.teacher.backbone.state_dict())
        self.model = AssembledNetwork(ckn, tsns)
        self.objective = IMBObjective(self.teacher.feature_widths, ckn.feature_widths, self.imb_config())

    def loss(self, model, objective, images, targets):
        with torch.no_grad():
            teacher = self.teacher(images)
        out = model(images, return_features=True)
        return objective(logits=out.tsn.logits, aux_logits=out.tsn.aux_logits, targets=targets,
                         teacher_logits=teacher.logits, ckn_features=out.ckn.features,
                         teacher_features=teacher.features, task_features=out.tsn.z, mu=out.tsn.mu,
                         logvar=out.tsn.logvar)

    def predict(self, model, images):
        return model(images)

    def parameter_counts(self) -> dict[str, int]:
        ckn, tsn_params = count_parameters(self.model.ckn), count_parameters(self.model.tsns)
        return {"ckn": ckn, "tsns": tsn_params, "model": ckn + tsn_params,
                "projectors": count_parameters(self.objective), "teacher": count_parameters(self.teacher)}

    def save(self, output_dir: Path, model: nn.Module, summary: dict[str, Any]) -> None:
        a = self.args
        teacher_summary = read_summary(a.teacher)
        teacher_config = self.teacher._hub_mixin_config
        backbone = teacher_config["backbone"]
        kind = "K-way classifier read as one-vs-rest tasks" if self.info.one_vs_rest else "multi-task network"
        teacher = {
            "description": f"{backbone['arch']} (width {backbone['width']}) {kind} trained on {self.info.name}",
            "params": count_parameters(self.teacher), "backbone": backbone,
            "one_vs_rest": bool(teacher_config.get("one_vs_rest")), "path": str(a.teacher),
            "validation": teacher_summary.get("validation"),
        }
        commands = [c for c in (teacher_summary.get("command"), summary["command"]) if c]
        training = {
            "method": "knowledge factorization, InfoMax-Bottleneck objective (Yang, Ye, Wang, ECCV 2022)",
            "commands": commands, "config": summary["args"], "objective": asdict(self.imb_config()),
            "steps": summary["steps"], "wall_time_s": summary["wall_time_s"], "world_size": summary["world_size"],
            "validation": summary.get("validation"), "teacher_validation": summary.get("teacher_validation"),
            "validation_vs_teacher": summary.get("validation_vs_teacher"),
        }
        model = model.to("cpu").eval()
        bank = FactorBank.from_modules(model.ckn, model.tsns.unstack(), input_spec=self.info.input_spec,
                                       dataset=self.info.name, teacher=teacher, training=training)
        bank.save_pretrained(output_dir)
        if a.push_to_hub:
            commit = bank.push_to_hub(a.push_to_hub, tag=a.hub_tag, private=a.hub_private or None,
                                      commit_message=f"Factor bank: {self.info.name}, {summary['steps']} steps")
            summary["pushed"] = {"repo_id": a.push_to_hub, "commit": commit, "tag": a.hub_tag}
            print(f"pushed the factor bank to {a.push_to_hub} (commit {commit[:12]}"
                  + (f", tag {a.hub_tag})" if a.hub_tag else ")"))


def build_factor_networks(args: argparse.Namespace, info: DataInfo
                          ) -> tuple[CommonKnowledgeNetwork, list[TaskSpecificNetwork]]:
    """The CKN and one TSN per task, as the factorize options describe them."""
    a = args
    ckn = CommonKnowledgeNetwork(backbone_config(a.ckn_arch, a.ckn_width, a.ckn_num_stages, a.ckn_stem_stride,
                                                 a.coord_channels, info.input_spec))
    if len(a.tsn_widths) != len(a.tsn_strides):
        raise KFError(f"--tsn-widths {a.tsn_widths} and --tsn-strides {a.tsn_strides} need the same length")
    encoder = asdict(EncoderConfig(in_channels=info.input_spec.channels, widths=list(a.tsn_widths),
                                   strides=list(a.tsn_strides), coord_channels=a.coord_channels,
                                   mean=list(info.input_spec.mean), std=list(info.input_spec.std)))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width, variational=a.variational) for t in info.tasks]
    return ckn, tsns


def matching_width(parameters: Callable[[int], int], target: int) -> int:
    """The width whose parameter count comes closest to ``target`` (counts grow with the width)."""
    width = 1
    while parameters(width + 1) < target and width < 1024:
        width += 1
    return min((width, width + 1), key=lambda w: abs(parameters(w) - target))


def factorization_parameter_count(config: str, info: DataInfo) -> int:
    """CKN + all TSNs of the factorization described by a factorize.py config file."""
    args = parse_args(FactorizeJob.parser(), ["--config", config], required=())
    ckn, tsns = build_factor_networks(args, info)
    return count_parameters(ckn) + sum(count_parameters(t) for t in tsns)


# ============================================================================= the loop

def total_steps(args: argparse.Namespace, batches_per_epoch: int) -> int:
    steps_per_epoch = max(batches_per_epoch // args.gradient_accumulation_steps, 1)
    candidates = []
    if args.max_steps is not None:
        candidates.append(args.max_steps)
    if args.epochs is not None or args.max_steps is None:
        candidates.append(math.ceil((args.epochs if args.epochs is not None else 1.0) * steps_per_epoch))
    return max(min(candidates), 1)


def command_line(job: Job, argv: Sequence[str], world_size: int) -> str:
    launcher = ["python"] if world_size == 1 else ["accelerate", "launch", "--num_processes", str(world_size)]
    return shlex.join([*launcher, job.script, *argv])


def jsonable_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("argv", "config")}


@dataclass
class FitResult:
    """What a run leaves in memory: the summary written to ``training.json`` (None when stopped early with
    --stop-after-steps) and the trained, unwrapped model (on every process) in eval mode."""

    summary: dict[str, Any] | None
    model: nn.Module
    job: Job
    step: int


def finish_trackers(accelerator: Accelerator) -> None:
    """``end_training`` minus destroying the process group: a caller may go on with other distributed work."""
    for tracker in accelerator.trackers:
        tracker.finish()


def fit(job_class: type[Job], args: argparse.Namespace) -> FitResult:
    """Train ``job_class`` as ``args`` say; the summary is also written to ``<output-dir>/training.json``."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False),  # steps never end early
        log_with=None if args.log_with == "none" else args.log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"),
                                            automatic_checkpoint_naming=True,
                                            total_limit=args.checkpoints_total_limit),
    )
    main = accelerator.is_main_process
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    set_seed(args.seed)  # the same initial weights on every process

    # ---- data, networks, optimizer
    train_set, val_set, info = load_training_data(args)
    job = job_class(args, info)
    train_set, val_set = job.select_data(train_set), (None if val_set is None else job.select_data(val_set))
    job.build()
    if job.teacher is not None:
        job.teacher.to(accelerator.device)
    trainable = [job.model] + ([job.objective] if job.objective is not None else [])
    train_loader = make_train_loader(train_set, args)
    optimizer = build_optimizer(trainable, args)
    model, objective, optimizer, train_loader = accelerator.prepare(job.model, job.objective, optimizer, train_loader)
    if len(train_loader) == 0:
        raise KFError(f"{len(train_set)} training images make no full batch of {args.batch_size} per process")
    max_steps = total_steps(args, len(train_loader))
    scheduler = warmup_cosine(optimizer, args.warmup_steps, max_steps, args.min_lr_ratio)
    progress = Progress()
    accelerator.register_for_checkpointing(progress, scheduler)

    # ---- resume
    resume_from = resolve_resume(args.resume, output_dir)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {progress.step}")
    elif args.resume == "latest":
        accelerator.print(f"--resume latest: no checkpoint in {output_dir / CHECKPOINTS_DIR} yet, starting afresh")
    existing = existing_checkpoints(output_dir)  # continue the numbering (save_state refuses to overwrite)
    accelerator.project_configuration.iteration = checkpoint_number(existing[-1]) + 1 if existing else 0

    counts = job.parameter_counts()
    stop_at = min(max_steps, args.stop_after_steps) if args.stop_after_steps else max_steps
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_path = output_dir / LOG_FILE
        kept = [line for line in (log_path.read_text().splitlines() if log_path.is_file() and progress.step else [])
                if json.loads(line)["step"] <= progress.step]
        log_path.write_text("".join(line + "\n" for line in kept))
        print(f"{job.name}: {info.name}, {len(train_set):,} training images, {max_steps} steps of "
              f"{args.batch_size} x {args.gradient_accumulation_steps} x {accelerator.num_processes} process(es) on "
              f"{accelerator.device}; parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.log_with != "none":
        accelerator.init_trackers(job.name, config={k: v if isinstance(v, int | float | str | bool) else str(v)
                                                    for k, v in jsonable_args(args).items()})

    # ---- train
    model.train()
    if objective is not None:
        objective.train()
    bar = tqdm(total=max_steps, initial=progress.step, desc=job.name, disable=not main, dynamic_ncols=True)
    window: list[dict[str, Tensor]] = []  # loss terms since the last log line
    last_means: dict[str, float] = {}
    start = time.perf_counter()
    params = [p for m in trainable for p in m.parameters()]
    batches = batch_stream(accelerator, train_loader, progress.step * args.gradient_accumulation_steps)
    while progress.step < stop_at:
        _, (images, targets) = next(batches)
        with accelerator.accumulate(*[m for m in (model, objective) if m is not None]):
            with accelerator.autocast():
                loss, terms = job.loss(model, objective, images, targets)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.clip_grad_norm > 0:
                accelerator.clip_grad_norm_(params, args.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        window.append({"loss": loss.detach(), **{k: v for k, v in terms.items() if k != "total"}})  # no sync
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        progress.step += 1
        bar.update(1)

        if progress.step % args.log_every == 0 or progress.step == stop_at:
            means = {k: float(torch.stack([w[k].float() for w in window]).mean()) for k in window[0]}
            lr = scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            if main:
                with (output_dir / LOG_FILE).open("a") as log:
                    log.write(json.dumps({"step": progress.step, "lr": lr, **means}) + "\n")
            if args.log_with != "none":
                accelerator.log({"lr": lr, **{f"train/{k}": v for k, v in means.items()}}, step=progress.step)
            last_means, window = means, []

        interrupted = progress.step == stop_at < max_steps
        if (args.checkpoint_every and progress.step % args.checkpoint_every == 0) or interrupted:
            progress.elapsed_s += time.perf_counter() - start
            start = time.perf_counter()
            accelerator.save_state()
    bar.close()
    progress.elapsed_s += time.perf_counter() - start

    if progress.step < max_steps:  # --stop-after-steps: leave the checkpoint, write nothing else
        accelerator.print(f"stopped at step {progress.step} of {max_steps}; continue with --resume latest")
        finish_trackers(accelerator)
        return FitResult(None, accelerator.unwrap_model(model), job, progress.step)

    # ---- finish: identical buffers everywhere, quick validation, outputs
    trained = accelerator.unwrap_model(model)
    if accelerator.num_processes > 1:  # BatchNorm running stats saw each process's last batches
        for buffer in trained.buffers():
            torch.distributed.broadcast(buffer.data, src=0)
    trained.eval()
    summary: dict[str, Any] = {
        "job": job.name, "dataset": info.name,
        "command": command_line(job, args.argv, accelerator.num_processes),
        "args": jsonable_args(args), "world_size": accelerator.num_processes, "device": str(accelerator.device),
        "steps": progress.step, "max_steps": max_steps, "train_images": len(train_set),
        "epochs": round(progress.step * args.gradient_accumulation_steps / len(train_loader), 3),
        "final_train_loss": round(last_means.get("loss", math.nan), 6),  # mean over the last log interval
        "final_train_terms": {k: round(v, 6) for k, v in last_means.items()},
        "parameters": counts, "wall_time_s": round(progress.elapsed_s, 1),
        "seconds_per_step": round(progress.elapsed_s / max(progress.step, 1), 4),
        "resumed_from": str(resume_from) if resume_from else None,
        "versions": {"kf": kf_model.__version__, "torch": torch.__version__},
    }
    if val_set is not None:
        batch = dict(batch_size=args.eval_batch_size, num_workers=args.num_workers)
        predictions = collect_predictions(accelerator, lambda x: job.predict(trained, x), val_set, **batch)
        summary["validation"] = accuracy_report(predictions, info.tasks, info.one_vs_rest, job.kway_model)
        if job.teacher is not None:
            predictions = collect_predictions(accelerator, lambda x: job.teacher(x).logits, val_set, **batch)
            summary["teacher_validation"] = accuracy_report(predictions, info.tasks, info.one_vs_rest, True)
            summary["validation_vs_teacher"] = compare(summary["validation"], summary["teacher_validation"])
    accelerator.wait_for_everyone()
    if main:
        job.save(output_dir, trained, summary)
        (output_dir / TRAINING_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        report = summary.get("validation")
        if report:
            print(f"validation ({report['samples']} images): mean accuracy {report['mean_accuracy']:.2f}%"
                  + (f", K-way {report['kway_accuracy']:.2f}%" if "kway_accuracy" in report else "")
                  + f"; {progress.step} steps in {progress.elapsed_s:.0f} s")
        if "validation_vs_teacher" in summary:
            print("validation, points vs the teacher: " + ", ".join(
                f"{k} {v:+.2f}" for k, v in summary["validation_vs_teacher"].items()))
    accelerator.wait_for_everyone()
    finish_trackers(accelerator)
    return FitResult(summary, trained, job, progress.step)


def run(job_class: type[Job], argv: Sequence[str] | None = None) -> FitResult:
    """Parse the command line of ``job_class``'s script and train (in-process: tests call this)."""
    return fit(job_class, parse_args(job_class.parser(), argv, required=job_class.required))


def cli(job_class: type[Job]) -> None:
    """Entry point of a script: kf's errors end the run with their message, not a traceback."""
    try:
        run(job_class)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    finally:
        PartialState().destroy_process_group()  # a clean exit under accelerate launch / torchrun


__all__ = [
    "DataInfo", "DistillJob", "EpochShuffleSampler", "FactorizeJob", "FitResult", "Job", "Predictions", "Progress",
    "TeacherJob",
    "accuracy_report", "base_parser", "batch_stream", "build_factor_networks", "build_optimizer",
    "cli", "collect_predictions", "compare", "factorization_parameter_count", "fit", "load_training_data", "parse_args",
    "run",
    "warmup_cosine",
]
