"""The image input: upload / paste / draw tabs, the example's true labels, and the gallery of held-out examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.errors import KFError
from kf_model.ui.context import AppContext
from kf_model.ui.style import SELECT_BRUSH_JS
from kf_model.ui.widgets import PRIVATE, checked_image


@dataclass
class ImageInput:
    tabs: gr.Tabs
    upload: gr.Image
    sketch: gr.Sketchpad
    upload_tab: gr.Tab
    draw_tab: gr.Tab
    message: gr.Markdown  # why the image was not answered, next to it
    truth: gr.Markdown


@dataclass
class ExampleGallery:
    invert: gr.Radio
    run: gr.Button
    gallery: gr.Gallery
    picked: Any  # the click on an example (it loads the image; the prediction follows, see predicting.py)


SKETCH_LABELS = {"dsprites": "Draw a shape: a square, an ellipse or a heart",
                 "fashion-mnist": "Draw a garment, a shoe or a bag"}


def sketch_label(entry: serving.BankEntry | None) -> str:
    """What to draw for this bank: its kind of image, or, for a bank of photographs, that a drawing is not one."""
    if entry is None:
        return "Draw"
    if entry.manifest.dataset in SKETCH_LABELS:
        return SKETCH_LABELS[entry.manifest.dataset]
    if entry.manifest.input_spec.channels == 3:
        return "Draw (this bank reads photographs: a drawing is not one, its answer is a guess)"
    return "Draw something like this bank's images"


def build_image_input(start_image: str | None, start_truth: str, entry: serving.BankEntry | None) -> ImageInput:
    """The image column (call inside it): the image a prediction reads, and what the example really is."""
    with gr.Tabs(elem_id="input-tabs") as tabs:
        with gr.Tab("Upload / paste", id="upload") as upload_tab:
            upload = checked_image(value=start_image, sources=["upload", "clipboard"], label="Image", height=260,
                                   elem_id="upload")
        with gr.Tab("Draw", id="draw") as draw_tab:
            sketch = gr.Sketchpad(type="pil", canvas_size=(280, 280), height=340, label=sketch_label(entry),
                                  elem_id="sketch", brush=gr.Brush(default_size=16, colors=["#000000", "#ffffff"],
                                                                   default_color="#000000"))
    note = gr.Markdown(elem_id="image-message", elem_classes=["kf-message"])
    truth = gr.Markdown(start_truth, elem_id="truth")
    # Gradio's Sketchpad starts with no tool ("select the draw tool to start"): opening the tab picks the brush
    draw_tab.select(None, js=SELECT_BRUSH_JS, **PRIVATE)
    return ImageInput(tabs, upload, sketch, upload_tab, draw_tab, note, truth)


def build_example_gallery(ctx: AppContext, bank: gr.Dropdown, image: ImageInput) -> ExampleGallery:
    """The invert choice, "Predict again" and the held-out examples of the bank; a click loads one."""
    with gr.Row():
        invert = gr.Radio(["auto", "no", "yes"], value="auto", label="Invert to light-on-dark",
                          info="auto: when the border is light (grey banks only)", elem_id="invert", scale=3)
        run = gr.Button("Predict again", elem_id="predict", scale=1)
    gallery = gr.Gallery(ctx.gallery_items(ctx.first_entry()), label="Held-out test images: click one", buttons=[],
                         columns=5, height=250, allow_preview=False, object_fit="contain", elem_id="examples",
                         interactive=False)

    def on_example(key: str, evt: gr.SelectData) -> list[Any]:
        try:
            entry = ctx.entry_of(key)
        except KFError:
            return [gr.update(), "", gr.update()]
        examples = ctx.examples_of(entry)
        if evt.index is None or not 0 <= int(evt.index) < len(examples):
            return [gr.update(), "", gr.update()]
        example = examples[int(evt.index)]
        return [str(example.path), ctx.truth_text(entry, example), gr.Tabs(selected="upload")]

    picked = gallery.select(on_example, bank, [image.upload, image.truth, image.tabs], **PRIVATE)
    return ExampleGallery(invert, run, gallery, picked)
