"""The run lists of the three resumable experiments and the JSON assembled from their finished runs.

- ``disentanglement`` (claim b): the recipe's dSprites teacher, KD student, factorizations at the reference β
  (one per seed) and one with a 10-d TSN latent, each representation scored with disentanglement_lib's
  metrics, plus the per-TSN view: DCI importance summed per TSN (rows) and factor (columns), against equal
  slices of the teacher's, the KD student's and the CKN's codes.
- ``sweep``: β x InfoMin variant from the same teacher, scored on the validation carve-out; several seeds at
  β = 0 and the reference β (batch variant).
- ``transfer`` (claim c): a base factorization without the held-out tasks, each held-out task learnt from
  1 %, 10 % and 100 % of a pool's labels by every method, with seeds; the ceiling is the factor of a
  factorization that saw the task.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from kf_model.bank import FactorBank, load_module
from kf_model.data import FACTOR_SIZES, load_dataset
from kf_model.data.dsprites import FACTOR_NAMES
from kf_model.experiments.disentanglement import Budget, all_metrics
from kf_model.experiments.plans import (
    CHECKPOINT_EVERY,
    KD_STUDENT,
    REFERENCE_BETA,
    TEACHER,
    VAL_SIZE,
    StageSpec,
    factorization,
    group_bounds,
    grouped_importance,
    latent_widths,
    stage_folder,
    stage_run,
)
from kf_model.experiments.representations import dsprites_truth
from kf_model.experiments.runs import Run, RunBook, cost_table, provenance, write_atomic
from kf_model.experiments.stages import SETTINGS, Scale, Setting, transfer_steps
from kf_model.experiments.sweep import SWEEP_BUDGET, score_point, score_teacher, validation_cells
from kf_model.experiments.transfer import FRACTIONS
from kf_model.experiments.transfer_job import TRANSFER_METHODS, WIDE, TransferRun, train_transfer_run
from kf_model.metrics.probes import leakage_matrix
from kf_model.models import Teacher

SWEEP_BETAS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)
SWEEP_INFOMINS = ("batch", "vib")
# disentanglement_lib's budgets (10,000 / 5,000 samples) except where this CPU cannot pay them: DCI's trees fit on
# 3,000 samples with 30 rounds instead of 10,000 with 100 (measured: 2,000 samples x 10 rounds take ~2 CPU-minutes
# per representation, so the full budget would be ~1.5 CPU-hours each), and the intervention metrics (BetaVAE,
# FactorVAE) use 1,000 / 500 points instead of 10,000 / 5,000 (each point renders and encodes 64-128 images).
CLAIM_BUDGET_FULL = Budget(num_train=10_000, num_test=5_000, intervention_train=1_000, intervention_eval=500,
                           gbt_estimators=30, dci_samples=3_000)
SWEEP_BUDGET_FULL = Budget(num_train=2_000, num_test=1_000, intervention_train=500, intervention_eval=250,
                           gbt_estimators=10)


def claim_budget(scale: Scale) -> Budget:
    return CLAIM_BUDGET_FULL if scale.name == "full" else scale.budget


def sweep_budget(scale: Scale) -> Budget:
    return SWEEP_BUDGET_FULL if scale.name == "full" else SWEEP_BUDGET


def _spread(values: list[float]) -> dict[str, Any]:
    return {"values": values, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}


# ============================================================================= claim b: disentanglement

def features_of(kind: str, folder: Path) -> tuple[Any, list[str]]:
    """(images -> codes [B, D], the names of the code's groups): a network's representation of ``kind``."""
    if kind in ("teacher", "kd_student"):
        net = load_module(Teacher, folder, kind)
        return (lambda x: net(x).features[-1]), [f"slice {i + 1}" for i in range(len(FACTOR_NAMES))]
    bank = FactorBank.from_pretrained(folder)
    if kind == "ckn":
        return (lambda x: bank.ckn(x).z), [f"slice {i + 1}" for i in range(len(FACTOR_NAMES))]
    stack = bank.assemble()
    return (lambda x: stack.tsns.pooled_features(x).flatten(1)), [f"TSN {t.name}" for t in bank.tasks]


def group_leakage(codes: np.ndarray, factors: np.ndarray, bounds: list[tuple[int, int]]) -> dict[str, Any]:
    """Leakage measured the same way for every representation: a linear probe from each group of dims (a TSN's
    block, or an equal slice of a trunk's code) to each factor, held-out accuracy minus chance. Each group's own
    factor is the one the best one-to-one matching of groups to factors gives it (for TSNs, normally their
    task); leakage is the mean excess of the other cells. ``all_dims``: the whole code probed per factor."""
    sizes = list(FACTOR_SIZES)
    probe = leakage_matrix([codes[:, a:b] for a, b in bounds] + [codes], factors, sizes, train_fraction=0.5)
    excess = np.asarray(probe["excess"][:-1])
    rows, cols = linear_sum_assignment(-excess)
    own = np.zeros_like(excess, dtype=bool)
    own[rows, cols] = True
    return {"accuracy": probe["accuracy"][:-1], "chance": probe["chance"], "own_factor": cols.tolist(),
            "own_excess": float(excess[own].mean()), "leakage_excess": float(excess[~own].mean()),
            "all_dims_accuracy": probe["accuracy"][-1], "num_train": probe["num_train"],
            "num_test": probe["num_test"]}


@torch.no_grad()
def score_representation(kind: str, folder: Path, budget: Budget, probe_samples: int = 2_000) -> dict[str, Any]:
    """disentanglement_lib's metrics of one representation, its DCI importance summed per group of dims, and
    its leakage measured per group (``group_leakage``)."""
    features, groups = features_of(kind, folder)
    truth = dsprites_truth(features)
    scores = all_metrics(truth, seed=0, budget=budget)
    importance = scores["dci_importance"]
    bounds = group_bounds(len(importance), len(groups))
    scores["groups"] = groups
    scores["importance_by_group"] = grouped_importance(importance, bounds)
    codes, factors = truth.sample(probe_samples, np.random.default_rng(1))
    scores["leakage"] = group_leakage(codes, factors, bounds)
    return scores


def disentanglement_runs(scale: Scale, work: Path) -> list[Run]:
    """Claim b's runs, ordered so that the comparison the claim is about (TSNs vs the teacher) comes first."""
    setting, budget = SETTINGS["dsprites"], claim_budget(scale)
    banks = [factorization(seed=seed) for seed in scale.seeds]
    latent = factorization(seed=scale.seeds[0], tsn_widths=latent_widths(scale))

    def score(name: str, kind: str, stage: StageSpec) -> Run:
        folder = stage_folder(work, stage.name)
        return Run(f"score-{name}", "score", lambda: score_representation(kind, folder, budget))

    first = scale.seeds[0]
    runs = [stage_run(TEACHER, scale, setting, work), stage_run(banks[0], scale, setting, work),
            score(f"tsn-s{first}", "tsn", banks[0]), score("teacher", "teacher", TEACHER),
            score(f"ckn-s{first}", "ckn", banks[0]), stage_run(KD_STUDENT, scale, setting, work),
            score("kd_student", "kd_student", KD_STUDENT), stage_run(latent, scale, setting, work),
            score("tsn_latent_10d", "tsn", latent)]
    for seed, bank in zip(scale.seeds[1:], banks[1:]):
        runs += [stage_run(bank, scale, setting, work), score(f"ckn-s{seed}", "ckn", bank),
                 score(f"tsn-s{seed}", "tsn", bank)]
    return runs


REPRESENTATION_FAMILIES = {"teacher": "teacher", "kd_student": "kd_student", "ckn": "ckn", "tsn": "tsn_concat",
                           "tsn_latent_10d": "tsn_latent_10d"}
SCALAR_METRICS = ("dci_disentanglement", "dci_completeness", "dci_informativeness_test", "mig", "sap", "modularity",
                  "explicitness_test", "beta_vae", "factor_vae")


def _family(run_name: str) -> str:
    key = run_name.removeprefix("score-")
    return REPRESENTATION_FAMILIES.get(key, REPRESENTATION_FAMILIES.get(key.rsplit("-s", 1)[0], key))


def summarise_scores(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Several seeds' scores of one representation -> mean ± std per metric, mean importance matrix."""
    out: dict[str, Any] = {m: _spread([r[m] for r in records]) for m in SCALAR_METRICS if m in records[0]}
    out["code_dims"] = records[0]["code_dims"]
    out["groups"] = records[0]["groups"]
    out["importance_by_group"] = np.mean([r["importance_by_group"] for r in records], axis=0).round(4).tolist()
    leaks = [r["leakage"] for r in records if "leakage" in r]
    if leaks:
        mean = lambda key: np.mean([x[key] for x in leaks], axis=0).round(4).tolist()  # noqa: E731
        out["leakage"] = {"own_excess": _spread([x["own_excess"] for x in leaks]),
                          "leakage_excess": _spread([x["leakage_excess"] for x in leaks]),
                          "accuracy": mean("accuracy"), "all_dims_accuracy": mean("all_dims_accuracy"),
                          "chance": leaks[0]["chance"]}
    return out


def stage_validation(finished: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Validation accuracy (%) per task of every finished training stage (the carve-out, never trained on)."""
    out = {}
    for name, record in finished.items():
        if record["kind"] == "train" and record["result"].get("validation"):
            report = record["result"]["validation"]
            out[name.removeprefix("train-")] = {"mean_accuracy": report["mean_accuracy"],
                                                "per_task": report.get("accuracy")}
    return out


def assemble_disentanglement(scale: Scale, book: RunBook, runs: list[Run]) -> dict[str, Any]:
    finished, missing = book.collect(r.name for r in runs)
    families: dict[str, list[dict[str, Any]]] = {}
    for name, record in finished.items():
        if record["kind"] == "score":
            families.setdefault(_family(name), []).append(record["result"])
    return {"experiment": "disentanglement", "dataset": "dsprites", "factors": list(FACTOR_NAMES),
            "scale": asdict(scale), "budget": asdict(claim_budget(scale)), "stages": stage_validation(finished),
            "representations": {k: summarise_scores(v) for k, v in families.items()},
            "cost_minutes": cost_table(finished), **provenance(finished, missing, len(runs))}


# ============================================================================= the sweep

def sweep_stages(scale: Scale) -> list[StageSpec]:
    """Several seeds at the reference β and β = 0 (batch) first, then one seed of every other point."""
    seeded = [factorization(seed=s, beta=b) for b in (REFERENCE_BETA, 0.0) for s in scale.seeds]
    single = [factorization(seed=scale.seeds[0], beta=b, infomin=v) for v in SWEEP_INFOMINS for b in SWEEP_BETAS]
    return seeded + [s for s in single if s not in seeded]


def sweep_runs(scale: Scale, work: Path) -> list[Run]:
    setting, budget = SETTINGS["dsprites"], sweep_budget(scale)
    cells = lambda: validation_cells(scale, VAL_SIZE)  # noqa: E731 (computed when a scoring runs)

    def score_bank(stage: StageSpec) -> dict[str, Any]:
        bank = FactorBank.from_pretrained(stage_folder(work, stage.name))
        return score_point(bank, cells(), scale, budget)

    def score_reference() -> dict[str, Any]:
        teacher = load_module(Teacher, stage_folder(work, TEACHER.name), "teacher")
        return score_teacher(teacher, cells(), scale, budget)

    runs = [stage_run(TEACHER, scale, setting, work), Run("sweep-score-teacher", "score", score_reference)]
    for stage in sweep_stages(scale):
        runs += [stage_run(stage, scale, setting, work),
                 Run(f"sweep-score-{stage.name}", "score", lambda stage=stage: score_bank(stage))]
    return runs


def _point_key(stage_name: str) -> tuple[float, str, int]:
    _, beta, infomin, seed = stage_name.split("-")
    return float(beta.removeprefix("beta")), infomin, int(seed.removeprefix("s"))


def sweep_filter(betas: list[float] | None, infomins: list[str] | None) -> Callable[[str], bool]:
    """run name -> whether a sweep restricted to ``betas`` x ``infomins`` runs it (None: every value)."""

    def keep(name: str) -> bool:
        stage = name.removeprefix("train-").removeprefix("sweep-score-")
        if not stage.startswith("bank-"):
            return True
        beta, infomin, _ = _point_key(stage)
        return (betas is None or beta in betas) and (infomins is None or infomin in infomins)

    return keep


def assemble_sweep(scale: Scale, book: RunBook, runs: list[Run]) -> dict[str, Any]:
    finished, missing = book.collect(r.name for r in runs)
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for name, record in finished.items():
        if name.startswith("sweep-score-bank-"):
            beta, infomin, _ = _point_key(name.removeprefix("sweep-score-"))
            groups.setdefault((beta, infomin), []).append(record["result"])
    points = []
    for (beta, infomin), results in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row: dict[str, Any] = {"beta": beta, "infomin": infomin, "seeds": len(results),
                               "mean_accuracy": _spread([r["mean_accuracy"] for r in results]),
                               "accuracy": {t: _spread([r["accuracy"][t] for r in results])
                                            for t in results[0]["accuracy"]}}
        for rep in ("pooled", "z"):
            row[rep] = {m: _spread([r[rep][m] for r in results]) for m in SCALAR_METRICS if m in results[0][rep]}
        points.append(row)
    teacher = finished.get("sweep-score-teacher", {}).get("result")
    return {"experiment": "sweep", "dataset": "dsprites", "split": f"validation carve-out of the train split "
            f"({VAL_SIZE:,} cells, never trained on)", "scale": asdict(scale), "budget": asdict(sweep_budget(scale)),
            "teacher": teacher, "points": points, "stages": stage_validation(finished),
            "cost_minutes": cost_table(finished), **provenance(finished, missing, len(runs))}


# ============================================================================= claim c: transfer

def pool_size(setting: Setting, scale: Scale) -> int:
    """Images of the transfer pool: the stages' ``train_limit``, at most the train split minus the carve-out."""
    return min(scale.train_limit, len(load_dataset(setting.dataset, "train")) - VAL_SIZE)


def transfer_stages(setting: Setting, scale: Scale) -> tuple[StageSpec, StageSpec, StageSpec]:
    """(base teacher, base bank: without the held-out tasks; the factorization of all tasks: the ceiling)."""
    base_teacher = StageSpec("teacher-base", "teacher", tasks=setting.base_tasks)
    base_bank = StageSpec("bank-base", "factorize", tasks=setting.base_tasks, teacher=base_teacher.name,
                          seed=scale.seeds[0])
    return base_teacher, base_bank, factorization(seed=scale.seeds[0])


def ceiling_accuracy(bank_folder: Path, task: str, setting: Setting, scale: Scale) -> dict[str, Any]:
    """The held-out task's factor in the factorization that saw it, on the test images; and chance."""
    test = load_dataset(setting.dataset, "test", limit=scale.test_limit, seed=0)
    images, targets = test.get_batch(torch.arange(len(test)))
    column = [t.name for t in test.tasks].index(task)
    factor = FactorBank.from_pretrained(bank_folder).factor(task)
    with torch.no_grad():
        correct = sum(int((factor(images[i:i + 500]).argmax(-1) == targets[i:i + 500, column]).sum())
                      for i in range(0, len(images), 500))
    truth = targets[:, column]
    return {"ceiling": correct / len(images), "chance": float(torch.bincount(truth).max()) / len(truth),
            "classes": test.tasks[column].num_classes, "test_images": len(images)}


def transfer_runs(setting: Setting, scale: Scale, work: Path, argv: tuple[str, ...] = ()) -> list[Run]:
    """Stages, ceilings, then every (seed, fraction, task, method): seed by seed, so each seed is a full table."""
    base_teacher, base_bank, ceiling_bank = transfer_stages(setting, scale)
    runs = [stage_run(s, scale, setting, work) for s in (base_teacher, base_bank, TEACHER, ceiling_bank)]
    for task in setting.held_out:
        runs.append(Run(f"ceiling-{task}", "score", lambda task=task: ceiling_accuracy(
            stage_folder(work, ceiling_bank.name), task, setting, scale)))
    pool = pool_size(setting, scale)
    bank_dir, teacher_dir = stage_folder(work, base_bank.name), stage_folder(work, base_teacher.name)
    for seed in scale.seeds:
        for fraction in FRACTIONS:
            labels = max(2, math.ceil(fraction * pool))
            for task in setting.held_out:
                for method in (*TRANSFER_METHODS, WIDE):
                    spec = TransferRun(setting.dataset, method, task, labels, seed, transfer_steps(scale, labels),
                                       scale.transfer_lr, min(scale.batch_size, labels), VAL_SIZE, scale.test_limit)
                    name = f"transfer-{task}-{fraction:g}-{method}-s{seed}"
                    runs.append(Run(name, "transfer", lambda spec=spec, name=name: train_transfer_run(
                        spec, bank_dir, teacher_dir, work / "transfer" / name, checkpoint_every=CHECKPOINT_EVERY,
                        argv=argv) | {"fraction": fraction_of(name), "labels": spec.labels}))
    return runs


def fraction_of(run_name: str) -> float:
    return float(run_name.split("-")[2])


def assemble_transfer(setting: Setting, scale: Scale, book: RunBook, runs: list[Run]) -> dict[str, Any]:
    finished, missing = book.collect(r.name for r in runs)
    tasks: dict[str, Any] = {}
    for task in setting.held_out:
        ceiling = finished.get(f"ceiling-{task}", {}).get("result")
        fractions: dict[str, Any] = {}
        for fraction in FRACTIONS:
            row: dict[str, Any] = {}
            for method in (*TRANSFER_METHODS, WIDE):
                found = [finished[n]["result"] for n in finished
                         if n.startswith(f"transfer-{task}-{fraction:g}-{method}-s")]
                if found:
                    row[method] = _spread([r["test_accuracy"] for r in found])
                    row["labels"] = found[0]["labels"]
            fractions[f"{fraction:g}"] = row
        tasks[task] = {**(ceiling or {}), "fractions": fractions}
    return {"experiment": "transfer", "dataset": setting.dataset, "scale": asdict(scale), "setting": asdict(setting),
            "methods": [*TRANSFER_METHODS, WIDE], "fractions": list(FRACTIONS),
            "pool_images": pool_size(setting, scale),
            "tasks": tasks, "stages": stage_validation(finished), "cost_minutes": cost_table(finished),
            **provenance(finished, missing, len(runs))}


# ============================================================================= the init_ckn_from_teacher choice

def init_ckn_runs(setting: Setting, scale: Scale, work: Path) -> list[Run]:
    """The recipe's factorization with and without ``--init-ckn-from-teacher``, judged on the carve-out."""
    stages = (TEACHER, factorization(seed=scale.seeds[0]), factorization(seed=scale.seeds[0], init_ckn=False))
    return [stage_run(s, scale, setting, work) for s in stages]


def assemble_init_ckn(setting: Setting, scale: Scale, book: RunBook, runs: list[Run]) -> dict[str, Any]:
    finished, missing = book.collect(r.name for r in runs)
    stages = stage_validation(finished)
    with_init, without = (stages.get(r.name.removeprefix("train-")) for r in runs[1:])
    difference = None
    if with_init and without:
        difference = {t: round(with_init["per_task"][t] - without["per_task"][t], 2) for t in with_init["per_task"]}
        difference["mean"] = round(with_init["mean_accuracy"] - without["mean_accuracy"], 2)
    return {"experiment": "init_ckn", "dataset": setting.dataset, "split": f"validation carve-out of the train split "
            f"({VAL_SIZE:,} images, never trained on)", "scale": asdict(scale), "stages": stages,
            "with_minus_without_points": difference, "cost_minutes": cost_table(finished),
            **provenance(finished, missing, len(runs))}


# ============================================================================= one command an experiment

EXPERIMENTS = ("disentanglement", "sweep", "transfer", "init_ckn")


def run_resumable(experiment: str, scale: Scale, output: Path, command: str, *, dataset: str = "dsprites",
                  assemble_only: bool = False, select: Callable[[str], bool] | None = None,
                  log: Any = print) -> Path:
    """Run what is missing of ``experiment`` at ``scale`` under ``output`` (skipping finished runs, resuming an
    interrupted one), rewriting ``<output>/<experiment>-<dataset>-<scale>.json`` after every finished run.
    ``select(run name)``: run only those (the JSON still lists every planned run, the others as missing)."""
    setting = SETTINGS[dataset if experiment in ("transfer", "init_ckn") else "dsprites"]
    work = output / scale.name / setting.dataset
    book = RunBook(work, command)
    if experiment == "disentanglement":
        runs = disentanglement_runs(scale, work)
        assemble = lambda: assemble_disentanglement(scale, book, runs)  # noqa: E731
    elif experiment == "sweep":
        runs = sweep_runs(scale, work)
        assemble = lambda: assemble_sweep(scale, book, runs)  # noqa: E731
    elif experiment == "init_ckn":
        runs = init_ckn_runs(setting, scale, work)
        assemble = lambda: assemble_init_ckn(setting, scale, book, runs)  # noqa: E731
    else:
        runs = transfer_runs(setting, scale, work, argv=tuple(command.split()[2:]))
        assemble = lambda: assemble_transfer(setting, scale, book, runs)  # noqa: E731
    path = output / f"{experiment}-{setting.dataset}-{scale.name}.json"

    def write(_: str = "") -> None:
        write_atomic(path, json.dumps({**assemble(), "command": command}, indent=2) + "\n")

    if not assemble_only:
        book.execute([r for r in runs if select is None or select(r.name)], log=log, on_finish=write)
    write()
    return path


__all__ = ["CLAIM_BUDGET_FULL", "EXPERIMENTS", "SWEEP_BETAS", "SWEEP_BUDGET_FULL", "SWEEP_INFOMINS",
           "assemble_disentanglement", "assemble_init_ckn", "assemble_sweep", "assemble_transfer",
           "ceiling_accuracy", "claim_budget", "disentanglement_runs", "features_of", "init_ckn_runs", "pool_size",
           "run_resumable", "score_representation", "summarise_scores", "sweep_filter", "sweep_runs", "sweep_stages",
           "transfer_runs", "transfer_stages"]
