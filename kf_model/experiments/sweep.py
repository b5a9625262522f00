"""Why are TSNs not clearly more disentangled than the teacher? A small sweep on a validation split.

    python train/experiments.py sweep --quick --output runs/experiments

One teacher of the 5 dSprites factors, then one factorization per point of a grid over the three knobs the
issue names: the TSN bottleneck width (the last TSN encoder width; 2 gives the reference configs' 10-d latent
over 5 tasks), beta (the weight of the InfoMin term in ``kf_model.losses.IMBConfig``) and the InfoMin variant
(``batch``: KL of the batch moments of z_i, the reference's; ``vib``: per-sample KL of a variational TSN).
Every stage is trained with ``--val-size``: a fixed carve-out of the train split that no stage sees. Each
point is scored on that carve-out only, never on the test split:

- task accuracy of every factor on (up to) ``Scale.test_limit`` of its images, and their mean;
- ``kf_model.experiments.disentanglement`` metrics of two representations: ``pooled`` (the TSNs' pooled encoder
  features f_i, concatenated: 5 x width dims; what the disentanglement table scores) and ``z`` (the TSNs'
  z_i = W_i f_i, concatenated: 5 x the CKN width; mu for ``vib``; what the InfoMin term acts on; its rank
  per task is at most the width). Metric samples and interventions are drawn from the
  carve-out's cells only (``GroundTruth.allowed``);
- the same for the teacher (its accuracy, its penultimate features), the reference the TSNs are held to.

Explicitness is skipped (its logistic regressions were half the scoring time); modularity is kept.

``--quick`` uses the experiments' quick networks with a smaller metric budget (``SWEEP_BUDGET``) so the grid
fits a shared CPU; its numbers are small-scale and say so in the JSON (``scale``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kf_model.bank import FactorBank, load_module
from kf_model.data import FACTOR_SIZES
from kf_model.data.dsprites import FACTOR_NAMES, NUM_IMAGES, factors_to_index, render_indices
from kf_model.errors import KFError
from kf_model.evaluation.plots import _figure, _save
from kf_model.experiments.disentanglement import Budget, GroundTruth, all_metrics
from kf_model.experiments.stages import SETTINGS, Scale, factorize, train_teacher
from kf_model.models import Teacher
from kf_model.training import DataConfig, DataSourceConfig, load_training_data

REPRESENTATIONS = ("pooled", "z")
SWEEP_BUDGET = Budget(num_train=500, num_test=250, intervention_train=150, intervention_eval=100, batch_size=64,
                      gbt_estimators=10)
VAL_SIZE = 5_000  # cells of the dSprites train split carved out (fixed seed, never trained on) for validation


@dataclass(frozen=True)
class SweepPoint:
    """One factorization of the sweep."""

    width: int  # last TSN encoder width: the pooled feature of one TSN has this many dims
    beta: float
    infomin: str  # "batch" or "vib"

    @property
    def name(self) -> str:
        return f"w{self.width}-beta{self.beta:g}-{self.infomin}"

    def factorize_args(self) -> tuple[str, ...]:
        variational = ("--variational",) if self.infomin == "vib" else ()
        return ("--beta", f"{self.beta:g}", "--infomin", self.infomin, *variational)


@dataclass(frozen=True)
class Grid:
    """The knobs swept (every combination); ``quick()`` fits a shared CPU in about 20 minutes (12 points)."""

    widths: tuple[int, ...]
    betas: tuple[float, ...]
    infomins: tuple[str, ...]

    @classmethod
    def quick(cls) -> Grid:
        return cls(widths=(2, 16), betas=(0.0, 1e-3, 1.0), infomins=("batch", "vib"))

    def points(self) -> list[SweepPoint]:
        return [SweepPoint(w, b, v) for w, b, v in itertools.product(self.widths, self.betas, self.infomins)]


def validation_cells(scale: Scale, val_size: int) -> Tensor:
    """Grid indices of the dSprites validation carve-out the stages were trained without (``--val-size``)."""
    data = DataConfig(DataSourceConfig("dsprites"), val_size=val_size, limit=scale.train_limit, data_seed=0)
    _, validation, _ = load_training_data(data)
    return validation.grid_indices


def cell_mask(cells: Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """factor classes [n, 5] -> bool [n]: is the cell one of ``cells``."""
    mask = np.zeros(NUM_IMAGES, dtype=bool)
    mask[cells.numpy()] = True
    return lambda classes: mask[np.ravel_multi_index(tuple(np.asarray(classes).T), FACTOR_SIZES)]


def sweep_representations(bank: FactorBank) -> dict[str, Callable[[Tensor], Tensor]]:
    """name -> images -> codes [B, D] (see the module docstring)."""
    stack = bank.assemble()
    return {"pooled": lambda x: stack.tsns.pooled_features(x).flatten(1),
            "z": lambda x: stack(x, return_features=True).tsn.z.flatten(1)}


@torch.no_grad()
def task_accuracies(predict: Callable[[Tensor], dict[str, Tensor]], names: list[str], cells: Tensor,
                    batch_size: int = 500) -> dict[str, float]:
    """Accuracy of ``predict`` (images -> {task: logits}) on the dSprites images of ``cells``, per task."""
    truth = torch.as_tensor(np.stack(np.unravel_index(cells.numpy(), FACTOR_SIZES), axis=1))
    columns = [FACTOR_NAMES.index(name) for name in names]
    correct = dict.fromkeys(names, 0)
    for i in range(0, len(cells), batch_size):
        logits = predict(render_indices(cells[i:i + batch_size]))
        for column, name in zip(columns, names):
            correct[name] += int((logits[name].argmax(-1) == truth[i:i + batch_size, column]).sum())
    return {name: correct[name] / len(cells) for name in names}


def score(predict: Callable[[Tensor], dict[str, Tensor]], names: list[str],
          representations: dict[str, Callable[[Tensor], Tensor]], cells: Tensor, scale: Scale,
          budget: Budget) -> dict[str, Any]:
    """Validation task accuracy of ``predict`` and the disentanglement of each representation, on ``cells``."""
    chosen = cells[torch.randperm(len(cells), generator=torch.Generator().manual_seed(0))[:scale.test_limit]]
    accuracy = task_accuracies(predict, names, chosen.sort().values)
    allowed = cell_mask(cells)
    scores: dict[str, Any] = {}
    for name, features in representations.items():

        @torch.no_grad()
        def represent(classes: np.ndarray, features: Callable[[Tensor], Tensor] = features) -> np.ndarray:
            return features(render_indices(factors_to_index(classes))).double().numpy()

        scores[name] = all_metrics(GroundTruth(tuple(FACTOR_SIZES), represent, allowed), seed=0, budget=budget,
                                   explicitness=False)
    return {"accuracy": accuracy, "mean_accuracy": float(np.mean(list(accuracy.values()))),
            "validation_images": len(chosen), **scores}


def score_point(bank: FactorBank, cells: Tensor, scale: Scale, budget: Budget) -> dict[str, Any]:
    """One factorization: its factors' accuracy, its ``pooled`` and ``z`` representations."""
    return score(bank.assemble(), [t.name for t in bank.tasks], sweep_representations(bank), cells, scale, budget)


def score_teacher(teacher: Teacher, cells: Tensor, scale: Scale, budget: Budget) -> dict[str, Any]:
    """The reference: the teacher's accuracy and its penultimate features, scored as the TSNs are."""
    return score(lambda x: teacher(x).logits, [t.name for t in teacher.tasks],
                 {"features": lambda x: teacher(x).features[-1]}, cells, scale, budget)


def sweep(scale: Scale, grid: Grid, work: Path, *, budget: Budget = SWEEP_BUDGET, val_size: int = VAL_SIZE,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and score every point of ``grid`` on the dSprites validation carve-out; JSON-able results."""
    start = time.perf_counter()
    setting = SETTINGS["dsprites"]
    carve_out = ("--val-size", str(val_size))
    teacher_dir = train_teacher(scale, setting, work / "teacher", None, extra=carve_out)
    cells = validation_cells(scale, val_size)
    reference = score_teacher(load_module(Teacher, teacher_dir, "teacher"), cells, scale, budget)
    log(f"teacher: accuracy {100 * reference['mean_accuracy']:.1f} | features DCI D "
        f"{reference['features']['dci_disentanglement']:.3f}")
    points: dict[str, Any] = {}
    for point in grid.points():
        began = time.perf_counter()
        widths = (*scale.tsn_widths[:-1], point.width)
        folder = factorize(scale, setting, teacher_dir, work / point.name, None, tsn_widths=widths,
                           extra=(*carve_out, *point.factorize_args()))
        points[point.name] = {**asdict(point), **score_point(FactorBank.from_pretrained(folder), cells, scale, budget),
                              "seconds": round(time.perf_counter() - began, 1)}
        row = points[point.name]
        log(f"{point.name}: accuracy {100 * row['mean_accuracy']:.1f} | " + " | ".join(
            f"{r} DCI D {row[r]['dci_disentanglement']:.3f} MIG {row[r]['mig']:.3f}" for r in REPRESENTATIONS))
    return {"experiment": "sweep", "dataset": "dsprites", "split": f"validation carve-out of the train split "
            f"({val_size:,} cells, never trained on)", "scale": asdict(scale), "budget": asdict(budget),
            "grid": asdict(grid), "representations": list(REPRESENTATIONS), "teacher": reference, "points": points,
            "timing_s": round(time.perf_counter() - start, 1)}


# ============================================================================= report

SWEEP_METRICS = {"dci_disentanglement": "DCI D", "mig": "MIG", "sap": "SAP", "modularity": "mod.",
                 "beta_vae": "BetaVAE", "factor_vae": "FactorVAE"}


def sweep_table(results: dict[str, Any]) -> str:
    """Markdown: one row per sweep point; validation accuracy in %, then each representation's metrics."""
    reps = results["representations"]
    header = " | ".join(f"{r} {label}" for r in reps for label in SWEEP_METRICS.values())
    lines = ["| TSN width | β | InfoMin | val. accuracy (%) | " + header + " |",
             "|---:|---:|---|---:|" + "---:|" * (len(reps) * len(SWEEP_METRICS))]
    teacher = results["teacher"]
    lines.append(f"| teacher (reference) | | | {100 * teacher['mean_accuracy']:.1f} | "
                 + " | ".join(f"{teacher['features'][m]:.3f}" for m in SWEEP_METRICS) + " |"
                 + " |" * (len(reps) - 1) * len(SWEEP_METRICS))
    for row in results["points"].values():
        cells = [f"{row[r][m]:.3f}" for r in reps for m in SWEEP_METRICS]
        lines.append(f"| {row['width']} | {row['beta']:g} | {row['infomin']} | {100 * row['mean_accuracy']:.1f} | "
                     + " | ".join(cells) + " |")
    budget = results["budget"]
    lines.append(f"\nThe teacher's row scores its penultimate features ({teacher['features']['code_dims']} dims) in "
                 f"the first metric columns. {results['scale']['name']} scale, {results['split']}: accuracy on "
                 f"{next(iter(results['points'].values()))['validation_images']:,} images; metrics on "
                 f"{budget['num_train']:,} / {budget['num_test']:,} samples, {budget['intervention_train']:,} / "
                 f"{budget['intervention_eval']:,} BetaVAE and FactorVAE points, {budget['gbt_estimators']} trees "
                 f"per DCI factor. `{results['command']}`")
    return "\n".join(lines)


def plot_sweep(results: dict[str, Any], path: str | Path) -> Path:
    """Validation accuracy vs DCI disentanglement, one marker per point, one panel per representation."""
    reps = results["representations"]
    fig = _figure(3.4 * len(reps), 3.0)
    axes = fig.subplots(1, len(reps), squeeze=False)[0]
    for ax, rep in zip(axes, reps):
        for row in results["points"].values():
            marker = "o" if row["infomin"] == "batch" else "s"
            color = "tab:blue" if row["width"] == min(results["grid"]["widths"]) else "tab:orange"
            ax.scatter(100 * row["mean_accuracy"], row[rep]["dci_disentanglement"], marker=marker, color=color)
            ax.annotate(f"β={row['beta']:g}", (100 * row["mean_accuracy"], row[rep]["dci_disentanglement"]),
                        fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(results["teacher"]["features"]["dci_disentanglement"], color="grey", linestyle="--",
                   label="teacher features")
        ax.set_xlabel("validation accuracy, mean of 5 factors (%)")
        ax.set_title(f"{rep} features", fontsize=9)
    axes[0].set_ylabel("DCI disentanglement")
    axes[0].legend(fontsize=6, loc="upper left")
    axes[-1].text(0.02, 0.02, "circle: batch, square: vib\nblue: narrowest width, orange: widest",
                  transform=axes[-1].transAxes, fontsize=6)
    return _save(fig, Path(path))


def check_grid(widths: list[int], betas: list[float], infomins: list[str]) -> Grid:
    """The grid of the command line, refused with a message when a value cannot be trained."""
    if any(w < 1 or w > 256 for w in widths):
        raise KFError(f"--widths must be in [1, 256], got {widths}")
    if any(not np.isfinite(b) or b < 0 for b in betas):
        raise KFError(f"--betas must be finite and >= 0, got {betas}")
    return Grid(tuple(widths), tuple(betas), tuple(infomins))


__all__ = ["REPRESENTATIONS", "SWEEP_BUDGET", "Grid", "SweepPoint", "cell_mask", "check_grid", "plot_sweep", "score",
           "score_point", "score_teacher", "sweep", "sweep_table", "task_accuracies", "validation_cells"]
