"""The export panel: the assembled network of the ticked tasks as a factor-bank zip or an ONNX file."""

from __future__ import annotations

import gradio as gr

from kf_model.ui.context import AppContext
from kf_model.ui.widgets import PRIVATE, user_errors

EXPORT_HELP = ("The ticked tasks only. A **zip** of a factor-bank folder: unzip it and load it with "
               "`FactorBank.from_pretrained(folder)`. An **ONNX** file of the assembled network: input `image` "
               "`[batch, C, H, W]` in [0, 1], one output of logits per task; class names and input size in its "
               "metadata. **ONNX int8**: the same network with static int8 quantization (onnxruntime's QDQ format, "
               "calibrated on held-out training images of the bank's dataset): about 4x smaller, faster on CPUs "
               "with int8 instructions, answers within a small change of the float32 file's.")


def build_export(ctx: AppContext, bank: gr.Dropdown, tasks: gr.CheckboxGroup) -> None:
    with gr.Accordion("Export the assembled network", open=False, elem_id="export"):
        gr.Markdown(EXPORT_HELP)
        kind = gr.Radio([("Factor bank (.zip)", "zip"), ("ONNX (.onnx)", "onnx"), ("ONNX int8 (.onnx)", "onnx-int8")],
                        value="zip", label="Format", elem_id="export-kind")
        button = gr.Button("Build the file", size="sm", elem_id="export-button")
        file = gr.File(label="Export", interactive=False, elem_id="export-file")

    @user_errors
    def on_export(key: str, ticked: list[str] | None, kind: str) -> str:
        entry = ctx.entry_of(key)
        out = ctx.exports.fresh_folder(max_age_s=3600)  # Gradio serves a copy from its own cache
        if kind in ("onnx", "onnx-int8"):
            quantize = "int8" if kind == "onnx-int8" else None
            return str(ctx.registry.export_onnx(entry.key, ticked or [], out, quantize=quantize))
        return str(ctx.registry.export_zip(entry.key, ticked or [], out))

    button.click(on_export, [bank, tasks, kind], file, **PRIVATE)
