"""PNG figures of an evaluation (``kf_model.evaluation`` results dicts).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot: no global
backend switch, no open-figure bookkeeping, safe to call from any thread (the app, tests, scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kf_model.evaluation.collect import MODEL_LABELS

COLORS = {"teacher": "#4c72b0", "kd_student": "#dd8452", "factor": "#55a868", "assembled": "#8172b3",
          "tsn": "#55a868"}
LABELS = {**MODEL_LABELS, "factor": "factor (CKN + TSN)", "tsn": "TSN features"}  # the legends name more
DPI = 130


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _task_ticks(ax: Any, names: list[str], axis: str = "x") -> None:
    rotate = len(names) > 5 or max((len(n) for n in names), default=0) > 10
    if axis == "x":
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40 if rotate else 0, ha="right" if rotate else "center",
                           rotation_mode="anchor")
    else:
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)


def _title(results: dict[str, Any]) -> str:
    ds = results.get("dataset", {})
    count = results["samples"]["evaluated"]
    return f"{ds.get('name') or 'dataset'} ({ds.get('split') or 'held-out'}, {count:,} images)"


def plot_leakage(results: dict[str, Any], path: str | Path) -> Path | None:
    """Heat map: held-out probe accuracy decoding task j (column) from TSN i's features (row), then the same
    probes on teacher / KD-student features and a chance row. Colour = excess over chance, normalised."""
    leak = results["leakage"]
    if "skipped" in leak:
        return None
    names = leak["tasks"]
    rows = [f"TSN {n}" for n in names]
    acc = [list(r) for r in leak["tsn"]["accuracy"]]
    for source in ("teacher", "kd_student"):
        if source in leak:
            rows.append(f"{LABELS[source]} features")
            acc.append(list(leak[source]["accuracy"][0]))
    chance = np.array(leak["tsn"]["chance"], dtype=float)
    acc_a = np.array(acc, dtype=float)
    norm = np.clip((acc_a - chance) / np.maximum(1.0 - chance, 1e-9), 0.0, 1.0)
    values = np.vstack([norm, np.full((1, len(names)), np.nan)])
    rows.append("chance")

    k = len(names)
    fig = _figure(max(6.0, 1.0 + 0.75 * k), max(4.0, 1.6 + 0.5 * len(rows)))
    ax = fig.add_subplot()
    cmap = LinearSegmentedColormap.from_list("leak", ["#f7fbff", "#6baed6", "#08306b"]).with_extremes(bad="#e6e6e6")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    size = 8 if k <= 6 else 7
    for i in range(len(rows)):
        for j in range(k):
            if i == len(rows) - 1:
                text, color = f"{100 * chance[j]:.0f}", "#333333"
            else:
                text, color = f"{100 * acc_a[i, j]:.0f}", "white" if values[i, j] > 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
    for i in range(k):  # the diagonal: a TSN decoding its own task
        ax.add_patch(Rectangle((i - 0.44, i - 0.44), 0.88, 0.88, fill=False, edgecolor="#d62728", linewidth=1.4))
    ax.axhline(k - 0.5, color="black", linewidth=1.5)
    ax.axhline(len(rows) - 1.5, color="black", linewidth=0.8)
    _task_ticks(ax, names, "x")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_xlabel("task decoded by a linear probe")
    ax.set_ylabel("features of")
    s = leak.get("summary", {})
    subtitle = ""
    if s.get("tsn_off_diagonal_excess") is not None and s.get("teacher_excess") is not None:
        subtitle = (f"\noff-diagonal excess over chance: TSNs {100 * s['tsn_off_diagonal_excess']:.1f} pts, "
                    f"teacher {100 * s['teacher_excess']:.1f} pts (lower = less leakage)")
    fig.suptitle(f"Leakage: held-out linear-probe accuracy (%)\n{_title(results)}; red: own task{subtitle}",
                 fontsize=9)
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("(accuracy − chance) / (1 − chance)", fontsize=8)
    return _save(fig, Path(path))


def plot_accuracy(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per task: teacher, KD student and factor accuracy, with factor − teacher on top."""
    acc = results["accuracy"]
    names = list(acc["factor"])
    models = [m for m in ("teacher", "kd_student", "factor") if acc.get(m)]
    k = len(names)
    fig = _figure(max(6.0, 1.5 + 0.85 * k), 4.6)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    x = np.arange(k)
    values = np.array([[acc[m][n] * 100 for n in names] for m in models])
    for i, m in enumerate(models):
        ax.bar(x + (i - (len(models) - 1) / 2) * width, values[i], width, label=LABELS[m], color=COLORS[m])
    low = max(0.0, np.floor((values.min() - 5) / 5) * 5)
    ax.set_ylim(low, 100 + (100 - low) * 0.12)
    top = values.max(axis=0)
    for j, n in enumerate(names):
        delta = 100 * (acc["factor"][n] - acc["teacher"][n])
        ax.text(j, top[j] + (100 - low) * 0.015, f"{delta:+.1f}", ha="center", va="bottom", fontsize=7,
                color="#2d6a3e" if delta >= -0.05 else "#b22222")
    _task_ticks(ax, names, "x")
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("task")
    note = " (K-way classifiers scored as 'argmax == i')" if results.get("one_vs_rest") else ""
    ax.set_title(f"Per-task accuracy, {_title(results)}\nnumbers: factor − teacher (points){note}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=len(models))
    return _save(fig, Path(path))


def plot_parameters(results: dict[str, Any], path: str | Path) -> Path:
    """Horizontal log-scale bars: factor bank vs one student per subset vs teacher / KD / one factor."""
    p = results["parameters"]
    n = p["num_tasks"]
    items = [(f"factor bank, n·s + S (any of {2 ** n - 1:,} subsets)", p["bank_params"], COLORS["factor"]),
             (f"one student per subset, 2^n·S (n = {n})", p["subset_students_params_paper"], "#c44e52"),
             ("one factor network, S + s (mean)", sum(p["assembled_params_single_task"]) / n, "#8fd19e"),
             ("teacher", p["teacher_params"], COLORS["teacher"])]
    if p.get("kd_student_params"):
        items.append(("KD student", p["kd_student_params"], COLORS["kd_student"]))
    fig = _figure(7.5, 0.6 + 0.55 * len(items))
    ax = fig.add_subplot()
    y = np.arange(len(items))[::-1]
    counts = [float(v) for _, v, _ in items]
    ax.barh(y, counts, color=[c for _, _, c in items])
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels([label for label, _, _ in items], fontsize=8)
    for yi, v in zip(y, counts):
        ax.text(v * 1.1, yi, f"{v:,.0f}" if v < 1e9 else f"{v:.2e}", va="center", fontsize=8)
    ax.set_xlim(min(counts) / 3, max(counts) * 8)
    ax.set_xlabel("parameters (log scale)")
    ax.set_title(f"Parameter accounting: S = CKN {p['ckn_params']:,}, s = TSN {sum(p['tsn_params']) / n:,.0f}",
                 fontsize=9)
    return _save(fig, Path(path))


def plot_disentanglement(results: dict[str, Any], path: str | Path) -> Path | None:
    """Grouped bars of DCI (D, C, I), MIG and SAP for TSN, teacher and KD-student features."""
    dis = results["disentanglement"]
    if "skipped" in dis:
        return None
    metrics = [("dci_disentanglement", "DCI\ndisentanglement"), ("dci_completeness", "DCI\ncompleteness"),
               ("dci_informativeness", "DCI\ninformativeness"), ("mig", "MIG"), ("sap", "SAP")]
    sources = [s for s in ("tsn", "teacher", "kd_student") if s in dis]
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(sources)
    x = np.arange(len(metrics))
    for i, s in enumerate(sources):
        vals = [dis[s][key] for key, _ in metrics]
        bars = ax.bar(x + (i - (len(sources) - 1) / 2) * width, vals, width, label=LABELS[s], color=COLORS[s])
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels([label for _, label in metrics], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score (higher = better)")
    ax.set_title(f"Disentanglement of task representations vs task labels, {_title(results)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, Path(path))


PLOTS = {"accuracy": ("accuracy.png", plot_accuracy), "leakage": ("leakage.png", plot_leakage),
         "parameters": ("parameters.png", plot_parameters),
         "disentanglement": ("disentanglement.png", plot_disentanglement)}


def plot_all(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Every figure that the results support, as ``{name: path}`` (files named ``<name>.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (filename, plot) in PLOTS.items():
        path = plot(results, out / filename)
        if path is not None:
            written[name] = path
    return written


__all__ = ["plot_accuracy", "plot_all", "plot_disentanglement", "plot_leakage", "plot_parameters"]
