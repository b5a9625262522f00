"""The tasks panel: which TSNs to assemble, select all / none, and the parameter accounting of the assembly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.ui.context import AppContext
from kf_model.ui.explain import Explain, explain_outputs
from kf_model.ui.widgets import PRIVATE, user_errors


@dataclass
class Tasks:
    box: gr.Accordion
    tasks: gr.CheckboxGroup
    drawing: gr.HTML
    summary: gr.Markdown
    picked: list[Any]  # the select all / none events: a prediction follows each (see predicting.py)


def build_tasks(ctx: AppContext, bank: gr.Dropdown, entry: serving.BankEntry | None, start: list[str]) -> Tasks:
    """The ticked tasks of the first bank, the two buttons, and the accounting accordion below them."""
    with gr.Accordion(f"Tasks ({len(start)} ticked)", open=True, elem_id="tasks-box") as box:
        tasks = gr.CheckboxGroup(choices=ctx.task_choices(entry) if entry else [], value=start,
                                 label="Tasks to assemble", elem_id="tasks",
                                 info="Each ticked task adds its small TSN to the shared CKN")
        with gr.Row():
            select_all = gr.Button("Select all", size="sm", elem_id="select-all")
            select_none = gr.Button("Select none", size="sm", elem_id="select-none")
    with gr.Accordion("Parameter accounting: why assembling beats separate networks", open=False,
                      elem_id="accounting"):
        drawing = gr.HTML(serving.assembly_svg(entry, start) if entry else "", elem_id="drawing")
        summary = gr.Markdown(serving.summary_markdown(entry, start) if entry else "", elem_id="summary")
    picked = [button.click(user_errors(lambda key, pick=pick: ctx.entry_of(key).task_names if pick else []),
                           bank, tasks, **PRIVATE)
              for button, pick in ((select_all, True), (select_none, False))]
    return Tasks(box, tasks, drawing, summary, picked)


def follow_tasks(ctx: AppContext, bank: gr.Dropdown, panel: Tasks, explain: Explain) -> None:
    """Ticking a task updates the count, the accounting and the Explain tab."""

    @user_errors
    def on_tasks(key: str, tasks: list[str] | None) -> list[Any]:
        entry = ctx.entry_of(key)
        return [gr.Accordion(label=f"Tasks ({len(tasks or [])} ticked)"), serving.summary_markdown(entry, tasks or []),
                serving.assembly_svg(entry, tasks or []), *explain_outputs(ctx, entry, tasks or [])]

    panel.tasks.change(on_tasks, [bank, panel.tasks], [panel.box, panel.summary, panel.drawing, *explain.outputs],
                       **PRIVATE)
