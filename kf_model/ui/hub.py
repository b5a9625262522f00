"""The Hub loader: a bank from the Hugging Face Hub by repo id, revision or huggingface.co address."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.errors import KFError
from kf_model.ui.bank_picker import BankPicker, bank_note
from kf_model.ui.context import AppContext
from kf_model.ui.widgets import PRIVATE, message

log = logging.getLogger("kf.app")


def build_hub_loader(ctx: AppContext, picker: BankPicker) -> None:
    """The accordion (hidden when the app serves its bundled banks only); a loaded bank joins the picker."""
    with gr.Accordion("Load a bank from the Hugging Face Hub", open=False, elem_id="hub",
                      visible=ctx.registry.allow_hub):
        repo = gr.Textbox(label="Hub repo", elem_id="hub-repo",
                          placeholder="owner/name, owner/name@revision or a huggingface.co link")
        revision = gr.Textbox(label="Revision (optional)", placeholder="branch, tag or commit", elem_id="hub-revision")
        load = gr.Button("Load from the Hub", size="sm", elem_id="hub-load")

    def on_hub_load(text: str, rev: str, hub_keys: list[str], current: str) -> list[Any]:
        keep = f" The current bank ({current}) keeps working." if current else ""
        try:
            key = serving.parse_hub_reference(text, rev)
            entry = ctx.registry.get(key, refresh=True)
        except Exception as error:  # KFError: unknown repo, unreachable Hub, not a bank...; anything else is logged
            if not isinstance(error, KFError):
                log.exception("loading %s from the Hub failed", text)
                reason = "something went wrong; the details are in the server log"
            else:
                log.info("Hub bank %r not loaded: %s", text, error)
                reason = serving.plain_message(error)
            return [gr.update(), message(f"Could not load **{(text or '').strip()}**: {reason}.{keep}", "error"),
                    hub_keys]
        keys = [*[k for k in hub_keys if k != entry.key], entry.key]
        return [gr.update(choices=ctx.bank_choices(keys), value=entry.key), bank_note(entry), keys]

    inputs = [repo, revision, picker.hub_keys, picker.bank]
    for trigger in (load.click, repo.submit):
        trigger(on_hub_load, inputs, [picker.bank, picker.message, picker.hub_keys], **PRIVATE)
