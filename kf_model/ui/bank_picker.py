"""The bank picker: which factor bank answers, what it recognises, and the bank's messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.ui.answer import Answer, empty_outputs
from kf_model.ui.context import AppContext
from kf_model.ui.explain import Explain, explain_outputs
from kf_model.ui.image_input import ExampleGallery, ImageInput, sketch_label
from kf_model.ui.style import STALE_JS
from kf_model.ui.tasks import Tasks
from kf_model.ui.widgets import PRIVATE, message, user_errors


@dataclass
class BankPicker:
    bank: gr.Dropdown
    recognises: gr.Markdown
    message: gr.Markdown
    hub_keys: gr.State  # the Hub banks loaded in this session, in the order loaded


def recognises(entry: serving.BankEntry | None) -> str:
    return "" if entry is None else f"**What it recognises:** {entry.input_description}."


def bank_note(entry: serving.BankEntry) -> str:
    if entry.kind == "hub":
        return message(f"Hub bank **{entry.key}** (commit `{entry.commit[:10]}`): ticking a task downloads "
                       "only its TSN.", "ok")
    return ""


def build_bank_picker(ctx: AppContext) -> BankPicker:
    """The dropdown beside what its bank recognises, and the line for the banks' problems below. The dropdown takes
    its choices only (typed text that names none is dropped); the Hub loader adds a Hub bank to them."""
    entry = ctx.first_entry()
    hub_keys = gr.State([] if entry is None or entry.kind == "bundled" else [entry.key])
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            bank = gr.Dropdown(choices=ctx.bank_choices(hub_keys.value), value=ctx.first_bank, label="Factor bank",
                               allow_custom_value=False, elem_id="bank",
                               info="Bundled banks, and the Hub banks you load")
        with gr.Column(scale=6, min_width=300, elem_id="recognises-column"):
            recognises_md = gr.Markdown(recognises(entry), elem_id="recognises")
    problems = "\n".join(message(p, "error") for p in ctx.registry.problems)
    if entry is None:
        problems = (problems + "\n" if problems else "") + message(
            "No bundled factor bank found (assets/factors/): load one from the Hub.", "error")
    bank_msg = gr.Markdown(problems, elem_id="bank-message", elem_classes=["kf-message"])
    return BankPicker(bank, recognises_md, bank_msg, hub_keys)


def follow_bank(ctx: AppContext, picker: BankPicker, tasks: Tasks, image: ImageInput, gallery: ExampleGallery,
                answer: Answer, explain: Explain, active: gr.State) -> Any:
    """A new bank: new tasks, examples and explanations; the old image and answers are cleared, then one of the new
    bank's own examples is loaded, visibly, instead of re-running the old image; returns that last event (the
    prediction follows it)."""

    @user_errors
    def on_bank(key: str) -> list[Any]:
        entry = ctx.entry_of(key)
        ticked = ctx.default_tasks(entry)
        return [gr.update(choices=ctx.task_choices(entry), value=ticked), bank_note(entry), recognises(entry),
                serving.summary_markdown(entry, ticked), ctx.gallery_items(entry), "", gr.Tabs(selected="upload"),
                "upload", *empty_outputs(message("Loading an example of this bank…")), "",
                *explain_outputs(ctx, entry, ticked), gr.update(label=sketch_label(entry))]

    @user_errors
    def on_bank_example(key: str) -> list[Any]:
        return list(ctx.first_example(ctx.entry_of(key)))

    # One step at a time: the image changes only once the new tasks are in place, so that no prediction sends the old
    # bank's task names to the new bank (Gradio would refuse them as unknown choices).
    outputs = [tasks.tasks, picker.message, picker.recognises, tasks.summary, gallery.gallery, image.truth, image.tabs,
               active, *answer.outputs, image.message, *explain.outputs, image.sketch]
    return picker.bank.change(on_bank, picker.bank, outputs, js=STALE_JS, **PRIVATE).then(
        lambda: None, None, image.upload, **PRIVATE).then(
        on_bank_example, picker.bank, [image.upload, image.truth], **PRIVATE)
