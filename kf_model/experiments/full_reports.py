"""Tables and figures of the resumable (full-scale) experiments, from their assembled JSON only: what finished
is reported with mean ± std over its seeds, what is still missing is said, and the cost table projects the
remaining runs from the minutes the finished runs of the same kind took."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kf_model.experiments.full_figures import REPRESENTATION_ORDER
from kf_model.experiments.probe import probe_table

METRICS = {"dci_disentanglement": "DCI D", "dci_completeness": "DCI C", "dci_informativeness_test": "DCI I",
           "mig": "MIG", "sap": "SAP", "modularity": "mod.", "explicitness_test": "expl.", "beta_vae": "BetaVAE",
           "factor_vae": "FactorVAE"}
SWEEP_METRICS = {"dci_disentanglement": "DCI D", "mig": "MIG", "modularity": "mod.", "factor_vae": "FactorVAE"}


def run_kind(name: str) -> str:
    """The kind of a run from its name (the runs' naming convention of ``kf_model.experiments``)."""
    if name.startswith("train-"):
        return "train"
    return "transfer" if name.startswith("transfer-") else "score"


def _value(spread: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    if spread["n"] == 1:
        return f"{scale * spread['mean']:.{digits}f}"
    return f"{scale * spread['mean']:.{digits}f} ± {scale * spread['std']:.{digits}f}"


def status_line(results: dict[str, Any]) -> str:
    """Complete, or partial with what is still to run."""
    if results["complete"]:
        return f"Complete: {results['finished_runs']} of {results['planned_runs']} runs."
    missing = results["missing_runs"]
    shown = ", ".join(f"`{m}`" for m in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return (f"**Partial**: {results['finished_runs']} of {results['planned_runs']} runs finished; still to run: "
            f"{shown}.")


def commits_line(results: dict[str, Any]) -> str:
    commits = ", ".join(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in results["commits"])
    return f"Commits of the finished runs: {commits or 'none yet'}. `{results['command']}`"


def disentanglement_full_table(results: dict[str, Any]) -> str:
    """One row per representation (mean ± std over the factorization seeds), one column per metric."""
    reps = results["representations"]
    if not reps:
        return "Claim b: no representation scored yet. " + status_line(results) + " " + commits_line(results)
    lines = ["| representation | dims | seeds | " + " | ".join(METRICS.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(METRICS)]
    for name in [r for r in REPRESENTATION_ORDER if r in reps]:
        row = reps[name]
        seeds = row["dci_disentanglement"]["n"]
        lines.append(f"| {name} | {row['code_dims']} | {seeds} | "
                     + " | ".join(_value(row[m]) if m in row else "–" for m in METRICS) + " |")
    budget = results["budget"]
    dci = budget.get("dci_samples") or budget["num_train"]
    lines.append(f"\n{results['scale']['name']} scale: metrics on {budget['num_train']:,} / {budget['num_test']:,} "
                 f"samples (DCI's trees: {dci:,} samples, {budget['gbt_estimators']} rounds), "
                 f"{budget['intervention_train']:,} / {budget['intervention_eval']:,} BetaVAE and FactorVAE points. "
                 + status_line(results) + " " + commits_line(results))
    return "\n".join(lines)


def leakage_full_table(results: dict[str, Any]) -> str:
    """Leakage measured the same way for every representation (``group_leakage``), in points over chance."""
    reps = results["representations"]
    if not any("leakage" in row for row in reps.values()):
        return "Leakage measured the same way: no representation scored yet."
    lines = ["| representation | groups | own factor: probe excess over chance | other factors: excess (leakage) "
             "| whole code: probe accuracy per factor |", "|---|---|---:|---:|---|"]
    for name in [r for r in REPRESENTATION_ORDER if r in reps and "leakage" in reps[r]]:
        leak = reps[name]["leakage"]
        whole = ", ".join(f"{100 * a:.1f}" for a in leak["all_dims_accuracy"])
        lines.append(f"| {name} | {len(reps[name]['groups'])} × {reps[name]['code_dims'] // len(reps[name]['groups'])}"
                     f" dims | {_value(leak['own_excess'], 100, 1)} | {_value(leak['leakage_excess'], 100, 1)} | "
                     f"{whole} |")
    return "\n".join(lines)


def sweep_full_table(results: dict[str, Any]) -> str:
    """One row per (β, InfoMin) point: validation accuracy and the TSN codes' metrics, mean ± std over seeds."""
    if not results["points"]:
        return "Sweep: no point scored yet. " + status_line(results) + " " + commits_line(results)
    header = " | ".join(f"{rep} {label}" for rep in ("pooled", "z") for label in SWEEP_METRICS.values())
    lines = ["| β | InfoMin | seeds | val. accuracy (%) | " + header + " |",
             "|---:|---|---:|---:|" + "---:|" * (2 * len(SWEEP_METRICS))]
    teacher = results.get("teacher")
    if teacher:
        lines.append(f"| teacher (reference) | | 1 | {100 * teacher['mean_accuracy']:.2f} | "
                     + " | ".join(f"{teacher['features'][m]:.3f}" for m in SWEEP_METRICS) + " |"
                     + " |" * len(SWEEP_METRICS))
    for row in results["points"]:
        cells = [_value(row[rep][m]) for rep in ("pooled", "z") for m in SWEEP_METRICS]
        lines.append(f"| {row['beta']:g} | {row['infomin']} | {row['seeds']} | {_value(row['mean_accuracy'], 100, 2)}"
                     " | " + " | ".join(cells) + " |")
    lines.append(f"\n{results['scale']['name']} scale, {results['split']}. " + status_line(results) + " "
                 + commits_line(results))
    return "\n".join(lines)


def transfer_full_table(results: dict[str, Any]) -> str:
    """One row per (held-out task, fraction of labels): test accuracy (%), mean ± std over the finished seeds."""
    methods = results["methods"]
    if not any(m in row for entry in results["tasks"].values() for row in entry["fractions"].values()
               for m in methods):
        return (f"Transfer, {results['dataset']}: no transfer run finished yet. " + status_line(results) + " "
                + commits_line(results))
    lines = [f"| {results['dataset']} task | labels | " + " | ".join(methods) + " | ceiling | chance |",
             "|---|---:|" + "---:|" * (len(methods) + 2)]
    for task, entry in results["tasks"].items():
        ceiling = f"{100 * entry['ceiling']:.1f}" if "ceiling" in entry else "–"
        chance = f"{100 * entry['chance']:.1f}" if "chance" in entry else "–"
        for fraction, row in entry["fractions"].items():
            if not any(m in row for m in methods):
                continue
            cells = [_value(row[m], 100, 1) if m in row else "–" for m in methods]
            lines.append(f"| {task} | {float(fraction) * 100:g} % ({row['labels']:,}) | " + " | ".join(cells)
                         + f" | {ceiling} | {chance} |")
    lines.append(f"\n{results['scale']['name']} scale, {results['pool_images']:,}-image pool. " + status_line(results)
                 + " " + commits_line(results))
    return "\n".join(lines)


def cost_rows(name: str, results: dict[str, Any]) -> list[str]:
    """Cost table rows of one experiment: per kind of run, finished / planned, minutes per run, minutes left."""
    missing: dict[str, int] = {}
    for run in results["missing_runs"]:
        missing[run_kind(run)] = missing.get(run_kind(run), 0) + 1
    rows = []
    for kind in sorted(set(results["cost_minutes"]) | set(missing)):
        done = results["cost_minutes"].get(kind, {"runs": 0, "minutes_per_run": None, "minutes_total": 0.0})
        per_run = done["minutes_per_run"]
        left = "–" if per_run is None else f"{per_run * missing.get(kind, 0):.0f}"
        rows.append(f"| {name} | {kind} | {done['runs']} / {done['runs'] + missing.get(kind, 0)} | "
                    f"{'–' if per_run is None else f'{per_run:.1f}'} | {done['minutes_total']:.0f} | {left} |")
    return rows


def cost_table(experiments: dict[str, dict[str, Any]]) -> str:
    lines = ["| experiment | run kind | finished / planned | minutes per run (measured) | minutes spent "
             "| minutes left (projected) |", "|---|---|---:|---:|---:|---:|"]
    for name, results in experiments.items():
        lines += cost_rows(name, results)
    return "\n".join(lines)


def stages_table(results: dict[str, Any]) -> str:
    """Validation accuracy (%) per task of every finished training stage of an experiment (the carve-out)."""
    stages = results["stages"]
    if not stages:
        return f"{results['experiment']} {results['dataset']}: no training stage finished yet."
    tasks = list(dict.fromkeys(t for report in stages.values() for t in report["per_task"]))
    lines = [f"| {results['dataset']} stage ({results['experiment']}) | " + " | ".join(tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    for name, report in stages.items():
        cells = [f"{report['per_task'][t]:.2f}" if t in report["per_task"] else "–" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {report['mean_accuracy']:.2f} |")
    return "\n".join(lines)


def init_ckn_table(results: dict[str, Any]) -> str:
    """Validation accuracy (%) of the recipe's factorization with and without ``--init-ckn-from-teacher``."""
    stages = results["stages"]
    rows = [(name, stages[name]) for name in stages if name.startswith("bank-")]
    if not rows:
        return f"{results['dataset']}, init_ckn: no factorization finished yet. " + status_line(results)
    tasks = list(rows[0][1]["per_task"])
    lines = [f"| {results['dataset']} factorization | " + " | ".join(tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    for name, report in rows:
        label = "without init (CKN from scratch)" if name.endswith("-noinit") else "with --init-ckn-from-teacher"
        lines.append(f"| {label} | " + " | ".join(f"{report['per_task'][t]:.2f}" for t in tasks)
                     + f" | {report['mean_accuracy']:.2f} |")
    lines.append(f"\n{results['split']}. " + status_line(results) + " " + commits_line(results))
    return "\n".join(lines)


def full_scale_tables(folder: Path) -> list[str]:
    """The README's tables of the resumable experiments (``*-full.json`` of ``folder``), then their cost table."""
    found = {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*-full.json"))}
    render = {"disentanglement": [stages_table, disentanglement_full_table, leakage_full_table],
              "sweep": [sweep_full_table], "transfer": [stages_table, transfer_full_table],
              "init_ckn": [init_ckn_table], "cost_probe": [probe_table]}
    parts = [table(results) for results in found.values() for table in render[results["experiment"]]]
    runs = {name: results for name, results in found.items() if "planned_runs" in results}
    return parts + ([cost_table(runs)] if runs else [])


__all__ = ["cost_table", "disentanglement_full_table", "full_scale_tables", "init_ckn_table", "leakage_full_table",
           "run_kind", "stages_table", "status_line", "sweep_full_table", "transfer_full_table"]
