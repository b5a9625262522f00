"""The evaluation as files: ``results.json``, ``results.md`` and the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kf_model.bank.card import format_value
from kf_model.bank.manifest import RESULTS_JSON, RESULTS_MD
from kf_model.evaluation.collect import MODEL_LABELS
from kf_model.evaluation.scores import jsonable


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.2f}"


def _header(results: dict[str, Any]) -> list[str]:
    """Title and sample count."""
    lines: list[str] = []
    ds = results["dataset"]
    samples = results["samples"]
    lines += [f"# Evaluation: {ds.get('name') or 'dataset'} ({ds.get('split') or 'held-out split'})", "",
             f"{samples['evaluated']:,} samples (each counted once: {format_value(samples['each_counted_once'])}, "
             f"{samples['num_processes']} process(es)); accuracies in %, deltas in points.", ""]
    return lines


def _per_task_section(results: dict[str, Any], names: list[str]) -> list[str]:
    """Per-task accuracy of every network, and whether the assembly is exact."""
    lines: list[str] = []
    acc, ovr = results["accuracy"], results.get("one_vs_rest")
    teacher_note = (" Teacher and KD student are K-way classifiers: task i is scored as \"K-way argmax == i\" "
                    "(their own one-vs-rest accuracy).") if ovr else ""
    lines += ["## Per-task accuracy", "",
              "Factor = CKN + that task's TSN run alone; assembled = CKN once + all TSNs, no fine-tuning."
              + teacher_note, "",
              "| task | teacher | KD student | factor | assembled | factor − teacher | factor − KD "
              "| max abs logit diff |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    kd = acc.get("kd_student")
    diffs = results["exactness"]["max_abs_diff"]
    for n in names:
        t, f = acc["teacher"][n], acc["factor"][n]
        k = kd[n] if kd else None
        lines.append(f"| {n} | {_pct(t)} | {_pct(k)} | {_pct(f)} | {_pct(acc['assembled'][n])} | {_pts(f - t)} | "
                     f"{_pts(None if k is None else f - k)} | {diffs[n]:.2e} |")
    mean = acc["mean"]
    mk = mean.get("kd_student")
    lines.append(f"| **mean** | {_pct(mean['teacher'])} | {_pct(mk)} | {_pct(mean['factor'])} | "
                 f"{_pct(mean['assembled'])} | {_pts(mean['factor'] - mean['teacher'])} | "
                 f"{_pts(None if mk is None else mean['factor'] - mk)} | "
                 f"{results['exactness']['max_abs_diff_overall']:.2e} |")
    ex = results["exactness"]
    lines += ["", f"Assembly exact (max abs logit difference ≤ {ex['tolerance']:g}): "
                  f"**{format_value(ex['exact'])}**.", ""]
    return lines


def _kway_section(results: dict[str, Any], names: list[str]) -> list[str]:
    """K-way accuracy and the teacher's two readings (one-vs-rest tasks only)."""
    lines: list[str] = []
    acc, ovr = results["accuracy"], results.get("one_vs_rest")
    if ovr:
        lines += ["## K-way accuracy (one-vs-rest tasks)", "", "| network | K-way accuracy |", "|---|---:|",
                  f"| teacher | {_pct(ovr['teacher_kway_accuracy'])} |",
                  f"| KD student | {_pct(ovr.get('kd_student_kway_accuracy'))} |",
                  f"| assembled factors, argmax of positive-class probabilities | "
                  f"{_pct(ovr.get('assembled_argmax_kway_accuracy'))} |", ""]
        lines += ["Teacher per task, two readings: K-way argmax == i (reference above) vs binary logits "
                  "(p_i > 0.5).", "", "| task | argmax reading | binary-logit reading |", "|---|---:|---:|"]
        lines += [f"| {n} | {_pct(acc['teacher'][n])} | {_pct(ovr['teacher_binary_logits'][n])} |" for n in names]
        lines.append("")
    return lines


def _targets_section(results: dict[str, Any]) -> list[str]:
    """The suite's targets, each passed or failed."""
    lines: list[str] = []
    targets = results["targets"]
    lines += [f"## Targets ({targets['suite']}): {targets['num_passed']}/{targets['num_checked']} passed", "",
              "| target | value | threshold | result |", "|---|---:|---:|---|"]
    for c in targets["checks"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        value, threshold = format_value(c["value"]), format_value(c["threshold"])
        lines.append(f"| {c['description']} | {value} | {threshold} | {verdict} |")
    lines.append("")
    return lines


def _disentanglement_section(results: dict[str, Any]) -> list[str]:
    """The fast disentanglement proxies of the task representations."""
    lines: list[str] = []
    dis = results["disentanglement"]
    lines += ["## Disentanglement of task representations", ""]
    if "skipped" in dis:
        lines += [dis["skipped"], ""]
    else:
        lines += [f"{dis['num_samples']:,} samples, against the ground-truth task labels. Representations: "
                  f"{dis['representation']}. Fast proxies (DCI from L2 linear-probe weights, SAP from nearest class "
                  "means), not disentanglement_lib's estimators: see `train/experiments.py disentanglement`.", "",
                  "| representation | DCI disentanglement | DCI completeness | DCI informativeness | MIG | SAP |",
                  "|---|---:|---:|---:|---:|---:|"]
        for source in ("tsn", "teacher", "kd_student"):
            if source in dis:
                d = dis[source]
                lines.append(f"| {source} | {d['dci_disentanglement']:.3f} | {d['dci_completeness']:.3f} | "
                             f"{d['dci_informativeness']:.3f} | {d['mig']:.3f} | {d['sap']:.3f} |")
        lines.append("")
    return lines


def _leakage_section(results: dict[str, Any], names: list[str]) -> list[str]:
    """Linear-probe leakage: which features decode which task."""
    lines: list[str] = []
    leak = results["leakage"]
    lines += ["## Leakage (linear probes, held-out accuracy)", ""]
    if "skipped" in leak:
        lines += [leak["skipped"], ""]
    else:
        s = leak["summary"]
        m = leak["tsn"]
        lines += [f"Probe on {m['num_train']:,} samples, scored on {m['num_test']:,}. Row = features of, column = "
                  "task decoded; chance = majority class of the held-out part.", "",
                  "| features \\ task | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
        for i, n in enumerate(names):
            lines.append(f"| TSN {n} | " + " | ".join(_pct(a) for a in m["accuracy"][i]) + " |")
        for source in ("teacher", "kd_student"):
            if source in leak:
                lines.append(f"| {MODEL_LABELS[source]} | "
                             + " | ".join(_pct(a) for a in leak[source]["accuracy"][0]) + " |")
        lines.append("| *chance* | " + " | ".join(_pct(c) for c in m["chance"]) + " |")
        lines += ["", "| summary | value |", "|---|---:|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in s.items()]
        lines.append("")
    return lines


def _parameters_section(results: dict[str, Any]) -> list[str]:
    """Parameter accounting and timing."""
    lines: list[str] = []
    p = results["parameters"]
    lines += ["## Parameter accounting", "",
              f"n = {p['num_tasks']} tasks, S = CKN = {p['ckn_params']:,}, mean s = TSN = "
              f"{sum(p['tsn_params']) / p['num_tasks']:,.0f} parameters.", "",
              "| what | parameters |", "|---|---:|",
              f"| factor bank, n·s + S (any subset) | {p['bank_params']:,} |",
              f"| one student per subset, 2^n·S (paper) | {p['subset_students_params_paper']:,} |",
              f"| all assembled subsets stored separately | {p['materialised_subsets_params']:,} |",
              f"| teacher | {p['teacher_params']:,} |",
              f"| KD student | {format_value(p.get('kd_student_params'))} |",
              f"| one factor network (S + s, mean) | {sum(p['assembled_params_single_task']) // p['num_tasks']:,} |",
              "", f"Bank / subset students: {format_value(p['bank_fraction_of_subset_students'])}; "
              f"bank / teacher: {format_value(p['bank_vs_teacher'])}.", ""]
    t = results.get("timing", {})
    lines += [f"Timing: inference {t.get('inference_s', 0):.1f} s, metrics {t.get('metrics_s', 0):.1f} s.", ""]
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """``results.md``: the tables of an evaluation, in Markdown, one section a function."""
    names = [t["name"] for t in results["dataset"]["tasks"]]
    sections = [_header(results), _per_task_section(results, names), _kway_section(results, names),
                _targets_section(results), _disentanglement_section(results), _leakage_section(results, names),
                _parameters_section(results)]
    return "\n".join(line for section in sections for line in section)


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the PNG plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULTS_JSON, "markdown": out / RESULTS_MD}
    paths["json"].write_text(json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(render_markdown(results))
    if plots:
        from kf_model.evaluation import plots as P

        paths.update(P.plot_all(results, out))
    return paths
