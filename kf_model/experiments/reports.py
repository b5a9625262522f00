"""The README's tables and figures of the experiments, made from their JSON files only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kf_model.errors import KFError
from kf_model.experiments.full_figures import (
    TRANSFER_METHOD_LABELS,
    plot_importance,
    plot_sweep_full,
    plot_transfer_full,
)
from kf_model.experiments.full_reports import full_scale_tables
from kf_model.experiments.sweep import plot_sweep, sweep_table

# ============================================================================= report: tables and figure

METRIC_LABELS = {"dci_disentanglement": "DCI D", "dci_completeness": "DCI C", "dci_informativeness_test": "DCI I",
                 "mig": "MIG", "sap": "SAP", "modularity": "modularity", "explicitness_test": "explicitness",
                 "beta_vae": "BetaVAE", "factor_vae": "FactorVAE"}


def _pm(spread: dict[str, Any]) -> str:
    return f"{100 * spread['mean']:.1f} ± {100 * spread['std']:.1f}"


def transfer_table(results: dict[str, Any]) -> str:
    """Markdown: one row per (held-out task, label fraction); test accuracy in %, mean ± std over seeds."""
    seeds = ", ".join(map(str, results["scale"]["seeds"]))
    labels = [TRANSFER_METHOD_LABELS[m] for m in results["methods"]]
    lines = [f"| {results['dataset']} task | labels | " + " | ".join(labels)
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


def report_tables(folder: Path) -> list[str]:
    """The README's tables (Markdown), one per JSON file of ``folder``."""
    parts = [transfer_table(json.loads(p.read_text())) for p in sorted(folder.glob("transfer-*-quick.json"))]
    parts += [disentanglement_table(json.loads(p.read_text()))
              for p in sorted(folder.glob("disentanglement-*-quick.json"))]
    parts += [sweep_table(json.loads(p.read_text())) for p in sorted(folder.glob("sweep-*-quick.json"))]
    return parts + full_scale_tables(folder)


FULL_SCALE_START = "<!-- full-scale tables:"
FULL_SCALE_END = "<!-- end of full-scale tables -->"


def with_full_scale_tables(readme: str, tables: list[str]) -> str:
    """``readme`` with the block between its full-scale markers replaced by ``tables``, so that the README is
    rewritten from the JSON by a command rather than by hand."""
    start, end = readme.find(FULL_SCALE_START), readme.find(FULL_SCALE_END)
    if start < 0 or end < start:
        raise KFError(f"the README has no '{FULL_SCALE_START} ...' ... '{FULL_SCALE_END}' block to rewrite")
    opening_end = readme.index("\n", start) + 1
    return readme[:opening_end] + "\n" + "\n\n".join(tables) + "\n\n" + readme[end:]


def report(folder: Path) -> str:
    """The README's tables from the JSON files in ``folder``; also writes its figures there: ``transfer.png``
    (quick), ``transfer-full.png``, ``sweep-<dataset>-<scale>.png`` and each full disentanglement run's importance
    matrices."""
    transfers = [json.loads(p.read_text()) for p in sorted(folder.glob("transfer-*-quick.json"))]
    if transfers:
        plot_transfer_full(transfers, folder / "transfer.png")  # the quick runs: every cell finished
    for path in sorted(folder.glob("disentanglement-*-full.json")):
        results = json.loads(path.read_text())
        if results["representations"]:  # nothing scored yet: no figure
            plot_importance(results, path.with_name(path.stem + "-importance.png"))
    for path in sorted(folder.glob("sweep-*-quick.json")):
        plot_sweep(json.loads(path.read_text()), path.with_suffix(".png"))
    plot_transfer_full([json.loads(p.read_text()) for p in sorted(folder.glob("transfer-*-full.json"))],
                       folder / "transfer-full.png")
    for path in sorted(folder.glob("sweep-*-full.json")):
        plot_sweep_full(json.loads(path.read_text()), path.with_suffix(".png"))
    return "\n\n".join(report_tables(folder)) + "\n"
