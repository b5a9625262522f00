"""The Explain tab: the bank's metrics for the ticked tasks, leakage heat map, parameter accounting, figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.ui.context import AppContext


@dataclass
class Explain:
    metrics: gr.Markdown
    leakage: gr.Image
    leakage_note: gr.Markdown
    parameters: gr.Markdown
    figures: gr.HTML
    report: gr.Markdown

    @property
    def outputs(self) -> list[gr.components.Component]:
        """In the order of :func:`explain_outputs`."""
        return [self.metrics, self.leakage, self.leakage_note, self.parameters, self.figures, self.report]


def figures_html(paths: Sequence[str | None]) -> str:
    """Evaluation figures at full width and natural height: nothing cropped, titles included."""
    items = [f'<figure style="margin:0"><img src="gradio_api/file={html.escape(p)}" alt="{html.escape(Path(p).stem)}" '
             'style="width:100%;height:auto;display:block"></figure>' for p in paths if p]
    if not items:
        return ""
    return ('<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px">'
            + "".join(items) + "</div>")


def explain_values(ctx: AppContext, entry: serving.BankEntry | None, tasks: Sequence[str] | None) -> list[Any]:
    """Metrics, leakage image path (or None), note, parameter accounting, figures, report."""
    if entry is None:
        return ["No bank loaded.", None, "", "", "", ""]
    entry.fetch_evaluation()
    ex = serving.explain_markdown(entry, tasks)
    figures = figures_html([ctx.servable(p) for p in ex["figures"]])
    return [ex["metrics"], ctx.servable(ex["leakage"]), ex["leakage_note"], ex["parameters"],
            figures, ex["report"] or "No evaluation report (evaluation/results.md) in this bank."]


def explain_outputs(ctx: AppContext, entry: serving.BankEntry | None, tasks: Sequence[str] | None) -> list[Any]:
    metrics, leakage_path, note, params, figures, report = explain_values(ctx, entry, tasks)
    return [metrics, gr.update(value=leakage_path, visible=leakage_path is not None), note, params, figures, report]


def build_explain(ctx: AppContext, entry: serving.BankEntry | None, tasks: Sequence[str]) -> Explain:
    """The tab's content (call inside the tab), for the first bank and its ticked tasks."""
    metrics, leakage_path, note, params, figures, report = explain_values(ctx, entry, tasks)
    metrics_md = gr.Markdown(metrics, elem_id="explain-metrics")
    with gr.Row(equal_height=False):
        with gr.Column():
            leakage = gr.Image(leakage_path, label="Leakage heat map (evaluation/leakage.png)", interactive=False,
                               elem_id="leakage", height=440, show_label=False, buttons=["download", "fullscreen"],
                               visible=leakage_path is not None)
            leakage_note = gr.Markdown(note)
        with gr.Column():
            gr.Markdown("#### Parameter accounting")
            params_md = gr.Markdown(params, elem_id="explain-params")
    figures_box = gr.HTML(figures, elem_id="explain-figures")
    with gr.Accordion("Full evaluation report (evaluation/results.md)", open=False):
        report_md = gr.Markdown(report)
    return Explain(metrics_md, leakage, leakage_note, params_md, figures_box, report_md)
