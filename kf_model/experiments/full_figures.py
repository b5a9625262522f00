"""The figures of the resumable (full-scale) experiments, drawn from their assembled JSON only: claim b's DCI
importance matrices, claim c's transfer curves and the β / InfoMin sweep. A cell that has not finished yet is left
out of the figure, never drawn as zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kf_model.evaluation.plots import _figure, _save

REPRESENTATION_ORDER = ("teacher", "kd_student", "ckn", "tsn_concat", "tsn_latent_10d")
TRANSFER_METHOD_LABELS = {"kf_tsn": "new TSN on frozen CKN", "kf_tsn_wide": "new TSN, twice the width",
                          "teacher_tsn": "same TSN on frozen teacher trunk", "ckn_probe": "linear probe on CKN",
                          "scratch": "same size, from scratch"}


def plot_importance(results: dict[str, Any], path: str | Path) -> Path:
    """DCI importance per group of dims (rows: TSNs, or equal slices of a trunk's code) and factor (columns)."""
    reps = [r for r in REPRESENTATION_ORDER if r in results["representations"]]
    fig = _figure(2.6 * max(len(reps), 1), 2.8)
    axes = fig.subplots(1, max(len(reps), 1), squeeze=False)[0]
    for ax, name in zip(axes, reps):
        row = results["representations"][name]
        matrix = np.asarray(row["importance_by_group"])
        ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(results["factors"])), results["factors"], rotation=60, fontsize=6)
        ax.set_yticks(range(len(row["groups"])), row["groups"], fontsize=6)
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5,
                    color="white" if value < 0.5 else "black")
        ax.set_title(f"{name} ({row['dci_disentanglement']['n']} seed(s))", fontsize=8)
    return _save(fig, Path(path))


def transfer_panels(runs: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """(dataset, held-out task, its entry, methods) of every task with at least one finished cell."""
    panels = []
    for results in runs:
        for task, entry in results["tasks"].items():
            if any(m in row for row in entry["fractions"].values() for m in results["methods"]):
                panels.append((results["dataset"], task, entry, results["methods"]))
    return panels


def plot_transfer_full(runs: list[dict[str, Any]], path: str | Path) -> Path | None:
    """One panel per held-out task: test accuracy against the % of labels, mean ± std over the finished seeds of
    each method; the ceiling (a factorization that saw the task) dashed, chance dotted. None: nothing finished."""
    panels = transfer_panels(runs)
    if not panels:
        return None
    fig = _figure(3.0 * len(panels), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, task, entry, methods) in zip(axes, panels):
        for method in methods:
            cells = [(float(f) * 100, row[method]) for f, row in entry["fractions"].items() if method in row]
            if cells:
                ax.errorbar([x for x, _ in cells], [100 * c["mean"] for _, c in cells],
                            yerr=[100 * c["std"] for _, c in cells], marker="o", capsize=3,
                            label=TRANSFER_METHOD_LABELS.get(method, method))
        ax.axhline(100 * entry["ceiling"], color="black", linestyle="--", label="ceiling")
        ax.axhline(100 * entry["chance"], color="grey", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("% of labels")
        ax.set_title(f"{dataset}: {task}", fontsize=9)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=6, loc="best")
    return _save(fig, Path(path))


def plot_sweep_full(results: dict[str, Any], path: str | Path) -> Path | None:
    """Validation accuracy and the TSN codes' DCI disentanglement (pooled features and z) against β, one line per
    InfoMin variant, mean ± std over the finished seeds (β = 0 drawn at the left edge of a symlog axis). None:
    no point scored yet."""
    points = results["points"]
    if not points:
        return None
    panels = [("mean_accuracy", None, "validation accuracy (%)", 100),
              ("pooled", "dci_disentanglement", "DCI D, pooled TSN features", 1),
              ("z", "dci_disentanglement", "DCI D, TSN codes z", 1)]
    fig = _figure(9.0, 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, metric, title, scale) in zip(axes, panels):
        for infomin in sorted({p["infomin"] for p in points}):
            line = sorted((p for p in points if p["infomin"] == infomin), key=lambda p: p["beta"])
            spreads = [p[key] if metric is None else p[key][metric] for p in line]
            ax.errorbar([p["beta"] for p in line], [scale * s["mean"] for s in spreads],
                        yerr=[scale * s["std"] for s in spreads], marker="o", capsize=3, label=f"InfoMin {infomin}")
        teacher = results.get("teacher")
        if teacher and metric is None:
            ax.axhline(100 * teacher["mean_accuracy"], color="black", linestyle="--", label="teacher")
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlabel("β")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=6, loc="best")
    return _save(fig, Path(path))


__all__ = ["REPRESENTATION_ORDER", "TRANSFER_METHOD_LABELS", "plot_importance", "plot_sweep_full",
           "plot_transfer_full", "transfer_panels"]
