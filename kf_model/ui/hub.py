"""The Hub loader: a bank from the Hugging Face Hub by repo id, revision or huggingface.co address."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.errors import KFError
from kf_model.serving.hub_names import check_hub_key
from kf_model.ui.bank_picker import BankPicker
from kf_model.ui.context import AppContext
from kf_model.ui.widgets import PRIVATE, message

log = logging.getLogger("kf.app")


def build_hub_loader(ctx: AppContext, picker: BankPicker) -> None:
    """The accordion (hidden when the app serves its bundled banks only); a loaded bank joins the picker. Its
    messages appear under its button, and the next edit or bank choice clears them."""
    with gr.Accordion("Load a bank from the Hugging Face Hub", open=False, elem_id="hub",
                      visible=ctx.registry.allow_hub):
        repo = gr.Textbox(label="Hub repo", elem_id="hub-repo",
                          placeholder="owner/name, owner/name@revision or a huggingface.co link")
        revision = gr.Textbox(label="Revision (optional)", placeholder="branch, tag or commit", elem_id="hub-revision")
        load = gr.Button("Load from the Hub", size="sm", elem_id="hub-load")
        note = gr.Markdown(elem_id="hub-message", elem_classes=["kf-message"])

    def on_hub_load(text: str, rev: str, hub_keys: list[str], current: str) -> list[Any]:
        text = (text or "").strip()
        if not text:
            return [gr.update(), message("Type a Hub repo id such as `owner/name` (or `owner/name@revision`), or "
                                         "paste its huggingface.co address.", "error"), hub_keys]
        keep = f" The current bank ({current}) keeps working." if current else ""
        try:
            key = check_hub_key(serving.parse_hub_reference(text, rev))
            entry = ctx.registry.get(key, refresh=True)
        except Exception as error:  # KFError: unknown repo, unreachable Hub, not a bank...; anything else is logged
            if not isinstance(error, KFError):
                log.exception("loading %s from the Hub failed", text)
                reason = "something went wrong; the details are in the server log"
            else:
                log.info("Hub bank %r not loaded: %s", text, error)
                reason = serving.plain_message(error)
            shown = text if len(text) <= 80 else text[:77] + "..."
            return [gr.update(), message(f"Could not load `{shown}`: {reason}.{keep}", "error"), hub_keys]
        keys = [*[k for k in hub_keys if k != entry.key], entry.key]
        loaded = message(f"Loaded **{entry.key}** (commit `{entry.commit[:10]}`): it is now the bank above.", "ok")
        return [gr.update(choices=ctx.bank_choices(keys), value=entry.key), loaded, keys]

    inputs = [repo, revision, picker.hub_keys, picker.bank]
    for trigger in (load.click, repo.submit):
        trigger(on_hub_load, inputs, [picker.bank, note, picker.hub_keys], **PRIVATE)
    for edited in (repo.change, revision.change, picker.bank.input):  # typed, pasted or picked
        edited(lambda: "", None, note, **PRIVATE)
