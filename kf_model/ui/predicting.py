"""The predictions of the page: every event that answers the image on screen (upload, drawing, tasks, invert,
"Predict again", the page load), newest first per session."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.errors import KFError
from kf_model.ui.answer import START_INFO, Answer, empty_outputs, prediction_outputs
from kf_model.ui.context import AppContext
from kf_model.ui.image_input import ExampleGallery, ImageInput
from kf_model.ui.style import FRESH_JS, SHOW_ANSWER_JS
from kf_model.ui.tasks import Tasks
from kf_model.ui.widgets import PRIVATE, message, user_errors

log = logging.getLogger("kf.app")

INVERT = {"auto": None, "no": False, "yes": True}


def sketch_image(value: Any) -> Any:
    composite = value.get("composite") if isinstance(value, dict) else value
    return None if serving.is_blank(composite) else composite


def predict_outputs(ctx: AppContext, image: Any, bank: str, tasks: list[str] | None, invert: str) -> list[Any]:
    """The answer panel's values and the message beside the image: a refused image (not an image, too large...)
    or a failed prediction clears the old answers and says why there, in words; the page stays usable."""
    if image is None:
        return [*empty_outputs(message("Upload, paste or draw an image to see the predictions.")), ""]
    if not tasks:
        return [*empty_outputs(message("Tick at least one task.", "error")), ""]
    try:
        prediction = ctx.answers.predict(ctx.gate, image, bank, tasks, invert=INVERT.get(invert))
        return [*prediction_outputs(prediction, ctx.entry_of(prediction.bank)), ""]
    except KFError as error:
        reason = serving.plain_message(error)
    except Exception as error:  # a bug: logged, and said in words
        log.exception("prediction failed")
        reason = f"something went wrong ({type(error).__name__}); the details are in the server log"
    return [*empty_outputs(message("No answer for this image (see the message beside it).", "error")),
            message(f"Not answered: {reason}.", "error")]


def wire_predictions(ctx: AppContext, demo: gr.Blocks, active: gr.State, bank: gr.Dropdown, image: ImageInput,
                     gallery: ExampleGallery, tasks: Tasks, answer: Answer, example_loads: list[Any]) -> dict[str, Any]:
    """Connects every trigger to the answer panel (``example_loads``: the events that put an example in the image
    box); returns the concurrency settings /predict shares with them."""
    # every prediction event shares one group: its loads (PredictionGate) can never take all of its slots
    predicting = {"concurrency_id": "predict", "concurrency_limit": ctx.gate.capacity}
    shown = {"show_progress": "full", "show_progress_on": [answer.familiarity, answer.table, answer.info],
             **PRIVATE, **predicting}
    outputs = [active, *answer.outputs, image.message]
    run_inputs = [bank, tasks.tasks, gallery.invert]
    every_input = [active, image.upload, image.sketch, *run_inputs]

    def predict_newest(request: gr.Request | None, mode: str, picture: Any, key: str, ticked: list[str] | None,
                       invert: str) -> list[Any]:
        session = getattr(request, "session_hash", None)  # None outside a browser session: nothing to order
        ticket = ctx.newest.start(session) if session else None
        values = [mode, *predict_outputs(ctx, picture, key, ticked, invert)]
        if ticket is None or ctx.newest.is_newest(session, ticket):
            return values
        return [gr.skip()] * len(values)

    @user_errors
    def run_upload(path: str | None, key: str, ticked: list[str] | None, invert: str,
                   request: gr.Request) -> list[Any]:
        return predict_newest(request, "upload", path or None, key, ticked, invert)

    @user_errors
    def run_own_upload(path: str | None, key: str, ticked: list[str] | None, invert: str,
                       request: gr.Request) -> list[Any]:
        """An image of one's own: answered, and no example's true labels beside it."""
        return [*run_upload(path, key, ticked, invert, request), ""]

    @user_errors
    def run_sketch(value: Any, key: str, ticked: list[str] | None, invert: str, request: gr.Request) -> list[Any]:
        return predict_newest(request, "draw", sketch_image(value), key, ticked, invert)

    @user_errors
    def run_active(mode: str, path: str | None, sketch: Any, key: str, ticked: list[str] | None, invert: str,
                   request: gr.Request) -> list[Any]:
        picture = sketch_image(sketch) if mode == "draw" else (path or None)
        return predict_newest(request, mode, picture, key, ticked, invert)

    def run_tab(mode: str) -> Any:
        @user_errors
        def run(path: str | None, sketch: Any, key: str, ticked: list[str] | None, invert: str,
                request: gr.Request) -> list[Any]:
            return run_active(mode, path, sketch, key, ticked, invert, request)
        return run

    # the tab a visitor opens is what the answer is about: its image answered (an empty canvas clears the panel),
    # not the other tab's answer left beside it
    for tab, mode in ((image.upload_tab, "upload"), (image.draw_tab, "draw")):
        tab.select(run_tab(mode), [image.upload, image.sketch, *run_inputs], outputs, **shown)
    tasks.tasks.input(run_active, every_input, outputs, trigger_mode="always_last", **shown)
    for event in tasks.picked:
        event.success(run_active, every_input, outputs, **shown)
    # One prediction per new image: Gradio's Image fires "change" twice for one upload (two identical requests), so
    # an upload or paste answers on "upload", and an example (clicked, or a new bank's) right after it is loaded.
    image.upload.upload(run_own_upload, [image.upload, *run_inputs], [*outputs, image.truth],
                        trigger_mode="always_last", **shown).then(None, js=FRESH_JS, **PRIVATE)
    for loaded in example_loads:
        answered = loaded.then(run_upload, [image.upload, *run_inputs], outputs, **shown)
        answered.then(None, js=FRESH_JS, **PRIVATE)
        if loaded is gallery.picked:  # tapped far down on a phone: the example and its answer brought into view
            answered.then(None, js=SHOW_ANSWER_JS, **PRIVATE)
    image.sketch.change(run_sketch, [image.sketch, *run_inputs], outputs, trigger_mode="always_last", **shown)
    image.sketch.change(lambda: "", None, image.truth, **PRIVATE)
    image.upload.clear(lambda: ["upload", *empty_outputs(START_INFO), "", ""], None, [*outputs, image.truth],
                       **PRIVATE)  # the example's labels go with its image
    gallery.invert.input(run_active, every_input, outputs, **shown)
    gallery.run.click(run_active, every_input, outputs, **shown)
    # On load, the example already in the image box is answered: the first screen shows what the app does.
    demo.load(run_active, every_input, outputs, **shown)
    return predicting
