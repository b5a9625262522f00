"""The paper's two other claims, as recorded experiments: transfer of the CKN, and disentanglement.

    python train/experiments.py transfer --dataset dsprites --quick --output runs/experiments
    python train/experiments.py disentanglement --quick --output runs/experiments
    python train/experiments.py sweep --quick --output runs/experiments      # kf_model.sweep

Both write JSON (``transfer-<dataset>.json``, ``disentanglement-dsprites.json``) next to the networks they
trained; ``kf_model.plots``-style figures and the README tables are made from those files only.

**Transfer.** Factorize a teacher of some tasks only (dSprites: shape, scale, orientation; Fashion-MNIST: the
first 7 classes), then learn each held-out task (pos_x, pos_y; the last 3 classes) from 1 %, 10 % and 100 % of
a training pool's labels, with:

- ``kf_tsn``: a new TSN on the frozen CKN (what ``train/add_task.py`` does, CE + aux CE + InfoMin);
- ``teacher_tsn``: the same TSN on the frozen trunk of the teacher (its pooled last stage);
- ``ckn_probe``: a linear probe on the frozen CKN feature z_c;
- ``scratch``: the same network as ``kf_tsn`` (CKN architecture + TSN), every weight trained from scratch;
- ``ceiling``: that task's factor in a factorization that included it (teacher and CKN saw its labels).

Each (task, fraction, method) runs for several seeds (label subset and initialisation); the JSON keeps every
seed's accuracy, the mean and the standard deviation.

**Disentanglement** on dSprites (5 factors), with ``kf_model.disentanglement`` (disentanglement_lib's
metrics): teacher features, KD-student features, CKN features, the concatenated TSN features, and the
concatenated TSN features of a factorization whose TSNs end in 2 channels each (a 10-d latent, the width of
the reference's dSprites configs).

``--quick`` networks and budgets fit a shared CPU in minutes; their numbers are small-scale and say so in
the JSON (``scale``). Without ``--quick`` the sizes are those of ``train/configs``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from kf_model.bank import FactorBank, load_module
from kf_model.data import FACTOR_SIZES, load_dataset
from kf_model.data.dsprites import factors_to_index, render_indices
from kf_model.data.specs import TaskSpec
from kf_model.disentanglement import Budget, GroundTruth, all_metrics
from kf_model.errors import KFError
from kf_model.growing import NewTaskLoss, NewTaskNetwork, TaskColumns, Trunk, new_tsn, task_column, train_network
from kf_model.models import CommonKnowledgeNetwork, TaskSpecificNetwork, Teacher, TSNOutput
from kf_model.training import DistillJob, FactorizeJob, FactorizeJobConfig, TeacherJob, TeacherJobConfig, run

METHODS = ("kf_tsn", "teacher_tsn", "ckn_probe", "scratch")
FRACTIONS = (0.01, 0.1, 1.0)


# ============================================================================= settings

@dataclass(frozen=True)
class Setting:
    """Which tasks a dataset's base factorization sees and which are held out."""

    dataset: str
    base_tasks: tuple[str, ...]
    held_out: tuple[str, ...]
    coord_channels: bool
    stem_stride: int


SETTINGS = {
    "dsprites": Setting("dsprites", ("shape", "scale", "orientation"), ("pos_x", "pos_y"), True, 2),
    "fashion-mnist": Setting("fashion-mnist", ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal",
                                               "shirt"), ("sneaker", "bag", "ankle_boot"), False, 1),
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the experiments: ``quick()`` for a shared CPU, ``full()`` as train/configs."""

    name: str
    train_limit: int  # images of the training pool (and of every stage's training set)
    test_limit: int
    teacher_width: int
    ckn_width: int
    num_stages: int
    tsn_widths: tuple[int, ...]
    tsn_strides: tuple[int, ...]
    stage_steps: int  # teacher, KD student and factorization
    transfer_steps: int
    transfer_lr: float  # every method's peak LR (AdamW, cosine); 2e-3 left the linear probe at chance
    batch_size: int
    seeds: tuple[int, ...]
    budget: Budget

    @classmethod
    def quick(cls) -> Scale:
        return cls("quick", train_limit=3000, test_limit=1000, teacher_width=8, ckn_width=8, num_stages=3,
                   tsn_widths=(8, 16), tsn_strides=(4, 2), stage_steps=300, transfer_steps=300, transfer_lr=1e-2,
                   batch_size=64,
                   seeds=(0, 1, 2), budget=Budget.quick())

    @classmethod
    def full(cls) -> Scale:
        return cls("full", train_limit=60000, test_limit=10000, teacher_width=16, ckn_width=16, num_stages=4,
                   tsn_widths=(8, 16, 32), tsn_strides=(4, 2, 2), stage_steps=2000, transfer_steps=2000,
                   transfer_lr=5e-3, batch_size=128, seeds=(0, 1, 2), budget=Budget())


# ============================================================================= stages on some of the tasks

@dataclass(frozen=True)
class SubsetTeacherJobConfig(TeacherJobConfig):
    tasks: Sequence[str] | None = None  # --tasks: the dataset's tasks to train on (None: all)


@dataclass(frozen=True)
class SubsetFactorizeJobConfig(FactorizeJobConfig):
    tasks: Sequence[str] | None = None


class TaskSubset:
    """Mixin for a training job: train on the tasks named by ``--tasks`` only (as independent tasks)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)  # type: ignore[misc]
        parser.add_argument("--tasks", nargs="+", help="the dataset's tasks to train on (default: all)")

    def __init__(self, config: SubsetTeacherJobConfig | SubsetFactorizeJobConfig, info: Any) -> None:
        super().__init__(config, info)  # type: ignore[call-arg]
        names = config.tasks or [t.name for t in info.tasks]
        self.columns = [task_column(info.tasks, n, info.name) for n in names]
        if config.tasks:
            info.tasks, info.one_vs_rest = [info.tasks[c] for c in self.columns], False

    def select_data(self, dataset: Dataset) -> Dataset:
        return TaskColumns(dataset, self.columns)


class SubsetTeacherJob(TaskSubset, TeacherJob):
    config_class = SubsetTeacherJobConfig


class SubsetFactorizeJob(TaskSubset, FactorizeJob):
    config_class = SubsetFactorizeJobConfig


def _stage_args(scale: Scale, setting: Setting, output: Path, seed: int = 0) -> list[str]:
    return ["--dataset", setting.dataset, "--limit", str(scale.train_limit), "--batch-size", str(scale.batch_size),
            "--max-steps", str(scale.stage_steps), "--warmup-steps", str(min(100, scale.stage_steps // 10)),
            "--log-every", "50", "--num-threads", "1", "--seed", str(seed), "--output-dir", str(output)]


def _coords(setting: Setting) -> list[str]:
    return ["--coord-channels"] if setting.coord_channels else ["--no-coord-channels"]


def train_teacher(scale: Scale, setting: Setting, output: Path, tasks: tuple[str, ...] | None,
                  extra: tuple[str, ...] = ()) -> Path:
    if not (output / "model.safetensors").is_file():
        run(SubsetTeacherJob, [*_stage_args(scale, setting, output), "--width", str(scale.teacher_width),
                               "--num-stages", str(scale.num_stages), "--stem-stride", str(setting.stem_stride),
                               *_coords(setting), *(["--tasks", *tasks] if tasks else []), *extra])
    return output


def factorize(scale: Scale, setting: Setting, teacher: Path, output: Path, tasks: tuple[str, ...] | None,
              tsn_widths: tuple[int, ...] | None = None, extra: tuple[str, ...] = ()) -> Path:
    """A factorization at ``scale`` (``extra``: more factorize options, e.g. ``--beta``; later ones win)."""
    if not (output / "factors.json").is_file():
        widths = tsn_widths or scale.tsn_widths
        run(SubsetFactorizeJob, [
            *_stage_args(scale, setting, output), "--teacher", str(teacher), "--ckn-width", str(scale.ckn_width),
            "--ckn-num-stages", str(scale.num_stages), "--ckn-stem-stride", str(setting.stem_stride),
            *_coords(setting), "--tsn-widths", *map(str, widths), "--tsn-strides", *map(str, scale.tsn_strides),
            "--init-ckn-from-teacher" if scale.teacher_width == scale.ckn_width else "--no-init-ckn-from-teacher",
            "--lambda-kd", "1.0", "--kd-temperature", "2.0", "--label-smoothing", "0.0",
            *(["--tasks", *tasks] if tasks else []), *extra])
    return output


def distill(scale: Scale, setting: Setting, teacher: Path, output: Path) -> Path:
    if not (output / "model.safetensors").is_file():
        run(DistillJob, [*_stage_args(scale, setting, output), "--teacher", str(teacher),
                         "--width", str(scale.ckn_width), "--num-stages", str(scale.num_stages),
                         "--stem-stride", str(setting.stem_stride), *_coords(setting)])
    return output


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


def transfer_model(method: str, spec: TaskSpec, bank: FactorBank, teacher: Teacher) -> tuple[nn.Module, NewTaskLoss]:
    """The network and loss of one transfer method (see the module docstring)."""
    loss = NewTaskLoss(label_smoothing=0.1, beta=1e-3)
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
                    model, loss = transfer_model(method, spec, bank, teacher)
                    train_network(model, data, loss, steps=scale.transfer_steps, batch_size=scale.batch_size,
                                  lr=scale.transfer_lr, seed=seed)
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


# ============================================================================= report: tables and figure

METHOD_LABELS = {"kf_tsn": "new TSN on frozen CKN", "teacher_tsn": "same TSN on frozen teacher trunk",
                 "ckn_probe": "linear probe on CKN", "scratch": "same size, from scratch"}
METRIC_LABELS = {"dci_disentanglement": "DCI D", "dci_completeness": "DCI C", "dci_informativeness_test": "DCI I",
                 "mig": "MIG", "sap": "SAP", "modularity": "modularity", "explicitness_test": "explicitness",
                 "beta_vae": "BetaVAE", "factor_vae": "FactorVAE"}


def _pm(spread: dict[str, Any]) -> str:
    return f"{100 * spread['mean']:.1f} ± {100 * spread['std']:.1f}"


def transfer_table(results: dict[str, Any]) -> str:
    """Markdown: one row per (held-out task, label fraction); test accuracy in %, mean ± std over seeds."""
    seeds = ", ".join(map(str, results["scale"]["seeds"]))
    lines = [f"| {results['dataset']} task | labels | " + " | ".join(METHOD_LABELS[m] for m in results["methods"])
             + " | ceiling (factorized with it) | chance |",
             "|---|---:|" + "---:|" * (len(results["methods"]) + 2)]
    for task, entry in results["tasks"].items():
        for fraction, row in entry["fractions"].items():
            cells = [_pm(row[m]) for m in results["methods"]]
            lines.append(f"| {task} | {float(fraction) * 100:g} % ({row['labels']:,}) | " + " | ".join(cells)
                         + f" | {100 * entry['ceiling']:.1f} | {100 * entry['chance']:.1f} |")
    lines.append(f"\n{results['scale']['name']} scale: {results['pool_images']:,}-image pool, "
                 f"{results['test_images']:,} test images, seeds {seeds}; "
                 f"{results['scale']['transfer_steps']} steps per run at LR {results['scale']['transfer_lr']:g}. "
                 f"`{results['command']}`")
    return "\n".join(lines)


def disentanglement_table(results: dict[str, Any]) -> str:
    """Markdown: one row per representation, one column per disentanglement_lib metric."""
    names = list(METRIC_LABELS)
    lines = ["| representation | dims | " + " | ".join(METRIC_LABELS[n] for n in names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for source, scores in results["representations"].items():
        lines.append(f"| {source} | {scores['code_dims']} | " + " | ".join(f"{scores[n]:.3f}" for n in names) + " |")
    budget = results["budget"]
    lines.append(f"\n{results['scale']['name']} scale: {budget['num_train']:,} train / {budget['num_test']:,} test "
                 f"samples, {budget['intervention_train']:,} / {budget['intervention_eval']:,} BetaVAE and FactorVAE "
                 f"points, {budget['gbt_estimators']} trees per DCI factor. `{results['command']}`")
    return "\n".join(lines)


def plot_transfer(runs: list[dict[str, Any]], path: str | Path) -> Path:
    """One panel per held-out task: accuracy vs fraction of labels, mean ± std per method, ceiling dashed."""
    from kf_model.plots import _figure, _save

    panels = [(r, task) for r in runs for task in r["tasks"]]
    fig = _figure(3.0 * len(panels), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (results, task) in zip(axes, panels):
        entry = results["tasks"][task]
        fractions = [float(f) * 100 for f in entry["fractions"]]
        for method in results["methods"]:
            rows = [entry["fractions"][f][method] for f in entry["fractions"]]
            ax.errorbar(fractions, [100 * r["mean"] for r in rows], yerr=[100 * r["std"] for r in rows],
                        marker="o", capsize=3, label=METHOD_LABELS[method])
        ax.axhline(100 * entry["ceiling"], color="black", linestyle="--", label="ceiling")
        ax.axhline(100 * entry["chance"], color="grey", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("% of labels")
        ax.set_title(f"{results['dataset']}: {task}", fontsize=9)
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(fontsize=6, loc="lower right")
    return _save(fig, Path(path))


def report_tables(folder: Path) -> list[str]:
    """The README's tables (Markdown), one per JSON file of ``folder``."""
    from kf_model.sweep import sweep_table

    parts = [transfer_table(json.loads(p.read_text())) for p in sorted(folder.glob("transfer-*.json"))]
    parts += [disentanglement_table(json.loads(p.read_text())) for p in sorted(folder.glob("disentanglement-*.json"))]
    return parts + [sweep_table(json.loads(p.read_text())) for p in sorted(folder.glob("sweep-*.json"))]


def report(folder: Path) -> str:
    """The README's tables from the JSON files in ``folder``; also writes ``transfer.png`` and
    ``sweep-<dataset>-<scale>.png`` there."""
    from kf_model.sweep import plot_sweep

    transfers = [json.loads(p.read_text()) for p in sorted(folder.glob("transfer-*.json"))]
    if transfers:
        plot_transfer(transfers, folder / "transfer.png")
    for path in sorted(folder.glob("sweep-*.json")):
        plot_sweep(json.loads(path.read_text()), path.with_suffix(".png"))
    return "\n\n".join(report_tables(folder)) + "\n"


# ============================================================================= command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transfer and disentanglement experiments of kf.")
    parser.add_argument("experiment", choices=("transfer", "disentanglement", "sweep", "report"),
                        help="sweep: width x beta x InfoMin variant on a validation split (kf_model.sweep); "
                             "report: the README tables (stdout, and <output>/experiments.md) + figures")
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="dsprites", help="transfer only")
    parser.add_argument("--widths", type=int, nargs="+", help="sweep: last TSN widths (default: 2 16)")
    parser.add_argument("--betas", type=float, nargs="+", help="sweep: InfoMin weights (default: 0 0.001 1)")
    parser.add_argument("--infomins", nargs="+", choices=("batch", "vib"), help="sweep: variants (default: both)")
    parser.add_argument("--quick", action="store_true", help="small networks and budgets (a shared CPU)")
    parser.add_argument("--output", default="runs/experiments", help="folder of the JSON results and networks")
    args = parser.parse_args(argv)
    if args.experiment == "report":
        text = report(Path(args.output))
        (Path(args.output) / "experiments.md").write_text(text)
        print(text)
        return 0
    torch.set_num_threads(1)
    scale = Scale.quick() if args.quick else Scale.full()
    output = Path(args.output)
    work = output / scale.name / ("dsprites" if args.experiment == "disentanglement" else args.dataset)
    if args.experiment == "sweep":
        work = output / scale.name / "sweep-dsprites"
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.experiment == "sweep":
            from kf_model.sweep import Grid, check_grid, sweep

            default = Grid.quick()
            grid = check_grid(args.widths or list(default.widths), args.betas or list(default.betas),
                              args.infomins or list(default.infomins))
            results = sweep(scale, grid, work)
            path = output / f"sweep-dsprites-{scale.name}.json"
        elif args.experiment == "transfer":
            results = transfer(SETTINGS[args.dataset], scale, work)
            path = output / f"transfer-{args.dataset}-{scale.name}.json"
        else:
            results = disentanglement(scale, work)
            path = output / f"disentanglement-dsprites-{scale.name}.json"
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    results["command"] = shlex.join(["python", "train/experiments.py", *(sys.argv[1:] if argv is None else argv)])
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


__all__ = ["FRACTIONS", "METHODS", "SETTINGS", "LinearProbe", "Scale", "Setting", "disentanglement",
           "dsprites_truth", "main", "representations", "transfer", "transfer_model"]
