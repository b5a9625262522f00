"""The app's text: the assembled network's summary and drawing, the Explain tab (metrics, parameters, figures).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from kf_model.bank.growth import manifest_problems, parameters_problems
from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    RequestError,
)
from kf_model.serving.registry import BankEntry


def format_count(n: int | None) -> str:
    return "not recorded" if n is None else f"{n:,}"


def format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def summary_markdown(entry: BankEntry, tasks: Iterable[str] | str | None) -> str:
    """The live summary of the assembled network for the ticked tasks."""
    try:
        names = entry.canonical(tasks)
    except RequestError:
        return "**No task ticked.** Tick at least one task to assemble a network."
    counts = entry.parameter_counts(names)
    ckn = counts["ckn"]
    tsns = [counts[n] for n in names]
    k = len(names)
    assembled = ckn + sum(tsns)
    separate = k * ckn + sum(tsns)
    teacher = entry.teacher_parameters()
    loaded = entry.bytes_loaded(names)
    where = "read from disk" if entry.kind == "bundled" else "downloaded from the Hub"
    lines = [
        f"**Assembled network: {k} of {len(entry.tasks)} tasks** — the CKN runs once, each ticked TSN adds its task.",
        "",
        "| network | parameters |",
        "|---|---:|",
        f"| assembled: CKN (S) + {k} TSN{'s' if k > 1 else ''} | **{assembled:,}** |",
        f"| {k} separate factor network{'s' if k > 1 else ''}, k·(S+s) | {separate:,} |",
        f"| teacher (all {len(entry.tasks)} tasks) | {format_count(teacher)} |",
        f"| CKN S / mean TSN s | {ckn:,} / {sum(tsns) // k:,} |",
        "",
        f"Files {where}: **{format_bytes(loaded)}** (manifest, CKN and {k} TSN{'s' if k > 1 else ''}).",
    ]
    if k > 1:
        lines.append(f"Sharing the CKN saves {1 - assembled / separate:.0%} of the parameters of "
                     f"{k} separate factor networks.")
    return "\n".join(lines)


def assembly_svg(entry: BankEntry, tasks: Iterable[str] | str | None, max_boxes: int = 10) -> str:
    """A small drawing (inline SVG in HTML) of the assembled network: the CKN once, the ticked TSNs beside it,
    with parameter counts, and why this beats k separate networks even when it is larger than the teacher."""
    try:
        names = entry.canonical(tasks)
    except RequestError:
        return "<p>Tick a task to see the assembled network.</p>"
    counts = entry.parameter_counts(names)
    ckn, k = counts["ckn"], len(names)
    assembled = ckn + sum(counts[n] for n in names)
    separate = k * ckn + sum(counts[n] for n in names)
    teacher = entry.teacher_parameters()
    shown = names[:max_boxes]
    row, top = 26, 34
    height = max(top + row * (len(shown) + (1 if len(names) > len(shown) else 0)) + 10, 130)
    ckn_y = top + (row * len(shown)) / 2 - 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 520 {height:.0f}" width="100%" '
             f'style="max-width:520px;font-family:sans-serif;font-size:12px" role="img" '
             f'aria-label="CKN plus {k} TSNs">',
             '<text x="4" y="16" font-weight="bold">image</text>',
             f'<line x1="20" y1="24" x2="20" y2="{ckn_y + 30:.0f}" stroke="#6b7280"/>',
             f'<line x1="20" y1="{ckn_y + 30:.0f}" x2="60" y2="{ckn_y + 30:.0f}" stroke="#6b7280"/>',
             f'<rect x="60" y="{ckn_y:.0f}" width="150" height="60" rx="8" fill="#e0e7ff" stroke="#4f46e5"/>',
             f'<text x="135" y="{ckn_y + 24:.0f}" text-anchor="middle" font-weight="bold">CKN (runs once)</text>',
             f'<text x="135" y="{ckn_y + 44:.0f}" text-anchor="middle">S = {ckn:,}</text>']
    for i, name in enumerate(shown):
        y = top + i * row
        parts += [f'<line x1="210" y1="{ckn_y + 30:.0f}" x2="260" y2="{y + 10}" stroke="#9ca3af"/>',
                  f'<rect x="260" y="{y}" width="250" height="20" rx="5" fill="#fef3c7" stroke="#d97706"/>',
                  f'<text x="268" y="{y + 14}">TSN {html.escape(name[:22])}: s = {counts[name]:,}</text>']
    if len(names) > len(shown):
        parts.append(f'<text x="268" y="{top + len(shown) * row + 14}">… and {len(names) - len(shown)} more '
                     'TSNs</text>')
    parts.append("</svg>")
    why = (f"<p><b>Assembled: {assembled:,} parameters</b>, one CKN pass per image. {k} separate factor "
           f"network{'s' if k > 1 else ''} would hold {separate:,} and run the CKN {k} time{'s' if k > 1 else ''}")
    if k > 1:
        why += f" ({separate / assembled:.1f}× the parameters)"
    why += "."
    if teacher is not None and assembled > teacher:
        why += (f" It is larger than the teacher ({teacher:,}), but the teacher serves only its fixed set of "
                f"{len(entry.tasks)} tasks: any other subset would need a new distilled student (2^n of them), "
                "while here any subset is assembled from the same factors, with no training.")
    elif teacher is not None:
        why += f" The teacher has {teacher:,}."
    return "\n".join(parts) + why + "</p>"


METRIC_LABELS = {  # manifest keys -> words (Explain tab); (label, kind): kind "pct" = a share shown in %
    "accuracy": ("factor (CKN + TSN)", "pct"), "teacher_accuracy": ("teacher", "pct"),
    "kd_accuracy": ("KD baseline", "pct"),
    "mean_factor_accuracy": ("mean factor accuracy", "pct"), "mean_teacher_accuracy": ("mean teacher accuracy", "pct"),
    "mean_kd_accuracy": ("mean KD-baseline accuracy", "pct"),
    "teacher_kway_accuracy": ("teacher, 10-way accuracy", "pct"),
    "kd_kway_accuracy": ("KD baseline, 10-way accuracy", "pct"),
    "assembled_argmax_kway_accuracy": ("assembled factors, argmax of P(class), 10-way accuracy", "pct"),
    "assembly_max_abs_diff": ("assembled vs separate factors, largest logit difference", "num"),
    "leakage_tsn_off_diagonal_excess": ("leakage from TSN features (probe accuracy above chance, other tasks)", "pts"),
    "leakage_teacher_excess": ("leakage from the teacher's features (same probe)", "pts"),
    "dci_disentanglement_tsn": ("DCI disentanglement of the TSN features (0-1)", "num"),
    "dci_disentanglement_teacher": ("DCI disentanglement of the teacher's features (0-1)", "num"),
    "targets_passed": ("targets met", "text"), "samples": ("test images", "int"), "split": ("split", "text"),
}
_HIDDEN_SUMMARY = ("dataset", "details")


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, (key.replace("_", " "), ""))[0]


def format_metric(key: str, value: Any) -> str:
    """A metric for a person: shares as percentages, leakage in points, counts with separators."""
    kind = METRIC_LABELS.get(key, ("", ""))[1]
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind == "pct":
            return f"{100 * value:.2f} %"
        if kind == "pts":
            return f"{100 * value:.1f} pts"
        if kind == "int" or isinstance(value, int):
            return f"{int(value):,}"
        return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def metrics_markdown(tasks: Sequence[TaskSpec], metrics: dict[str, Any]) -> str | None:
    """Per-task accuracies of the given tasks and the bank's summary, in words and percentages."""
    per_task = metrics.get("tasks", {})
    if not per_task or manifest_problems({"metrics": metrics}):  # malformed summaries are shown as absent
        return None
    columns = [key for key in METRIC_LABELS if any(key in v for v in per_task.values())]
    columns += sorted({k for v in per_task.values() for k in v} - set(columns))
    lines = ["| task | " + " | ".join(metric_label(c) for c in columns) + " |",
             "|---" + "|---:" * len(columns) + "|"]
    for task in tasks:
        values = per_task.get(task.name, {})
        lines.append(f"| {task.name} | " + " | ".join(format_metric(c, values.get(c)) for c in columns) + " |")
    summary = {k: v for k, v in metrics.get("summary", {}).items() if k not in _HIDDEN_SUMMARY}
    if summary:
        lines += ["", "| whole bank | |", "|---|---:|"]
        lines += [f"| {metric_label(k)} | {format_metric(k, v)} |" for k, v in summary.items()]
    return "\n".join(lines)


def explain_markdown(entry: BankEntry, tasks: Iterable[str] | None = None) -> dict[str, Any]:
    """The Explain tab for the ticked ``tasks`` (default: all): metrics, leakage heat map, parameter
    accounting, the other figures and the full report (a Hub bank's too, when its repo has ``evaluation/``)."""
    manifest = entry.manifest
    chosen = [t for t in (entry.task_names if tasks is None else tasks) if t in entry.task_names]
    specs = [t for t in entry.tasks if t.name in chosen]
    parts = [f"### {entry.label}", ""]
    if manifest.teacher.get("description"):
        parts += [f"Teacher: {manifest.teacher['description']}", ""]
    parts += [f"**Recognises:** {entry.input_description}.", ""]
    if len(specs) < len(entry.tasks):
        parts += [f"Showing the {len(specs)} ticked of {len(entry.tasks)} tasks (test split).", ""]
    parts.append(metrics_markdown(specs, manifest.metrics or {})
                 or "No evaluation is recorded in this bank's manifest yet.")
    metrics_md = "\n".join(parts)

    results = entry.evaluation_results
    params = (results or {}).get("parameters")
    if params is not None and parameters_problems(params):  # a hostile results.json (num_tasks 0, text...)
        params = None
    lines = []
    if chosen:
        counts = entry.parameter_counts(chosen)
        k, s_total = len(chosen), sum(counts[t] for t in chosen)
        lines += [f"The {k} ticked task{'s' if k > 1 else ''}:", "", "| what | parameters |", "|---|---:|",
                  f"| assembled: CKN S + {k} TSN{'s' if k > 1 else ''} | {counts['ckn'] + s_total:,} |",
                  f"| {k} separate factor network{'s' if k > 1 else ''}, k·S + Σs | {k * counts['ckn'] + s_total:,} |",
                  f"| one distilled student per subset of them, 2^k·S | {2 ** k * counts['ckn']:,} |",
                  f"| teacher (all {len(entry.tasks)} tasks) | {format_count(entry.teacher_parameters())} |", ""]
    else:
        lines += ["Tick tasks to see their parameter accounting.", ""]
    if params:
        n = params["num_tasks"]
        lines += [
            f"The whole bank: n = {n} tasks, S = CKN = {params['ckn_params']:,} parameters, mean s = TSN = "
            f"{sum(params['tsn_params']) / n:,.0f}.", "",
            "| what | parameters |", "|---|---:|",
            f"| factor bank, n·s + S (any subset of tasks) | {params['bank_params']:,} |",
            f"| one student per subset of tasks, 2^n·S (the paper's count) | "
            f"{params['subset_students_params_paper']:,} |",
            f"| teacher | {format_count(params.get('teacher_params'))} |",
            f"| KD student | {format_count(params.get('kd_student_params'))} |",
        ]
    params_md = "\n".join(lines).strip()

    folder = entry.evaluation_dir
    leakage = folder / "leakage.png" if folder is not None and (folder / "leakage.png").is_file() else None
    figures = sorted(p for p in folder.glob("*.png") if p.name != "leakage.png") if folder is not None else []
    report = None
    if folder is not None and (folder / "results.md").is_file():
        report = (folder / "results.md").read_text()
    if leakage is None:
        note = "No leakage heat map: this bank has no evaluation/leakage.png."
    else:
        note = ("Leakage: a linear probe decodes task *j* (columns) from TSN *i*'s features (rows). A factorized "
                "bank keeps the off-diagonal close to chance; the teacher's features leak everything.")
    return {"metrics": metrics_md, "parameters": params_md, "leakage": leakage, "leakage_note": note,
            "figures": figures, "report": report}
