"""Small pieces every panel uses: messages in words, kf's refusals as gr.Error, and two adjusted components.

gr.Image / gr.Dropdown are adjusted per instance, not subclassed: Gradio writes a .pyi stub next to the module of
every component subclass it sees, and these two only need one method each.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.errors import KFError

log = logging.getLogger("kf.app")

PRIVATE = {"api_visibility": "private"}  # every event but /predict


def message(text: str, kind: str = "info") -> str:
    """A one-line message with a text symbol (every font has them, not every emoji)."""
    icon = {"info": "ℹ", "ok": "✔", "error": "⚠"}[kind]
    return f"{icon} {text}" if text else ""


def user_errors(fn: Callable) -> Callable:
    """kf's refusals become gr.Error messages; anything else is logged and reported without a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except KFError as error:
            raise gr.Error(serving.plain_message(error), print_exception=False) from None
        except Exception as error:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"something went wrong ({type(error).__name__}); the details are in the server log",
                           print_exception=False) from None

    return wrapper


def checked_image(**kwargs: Any) -> gr.Image:
    """gr.Image(type="filepath") whose preprocessing does not open the file: ``kf_model.serving`` checks it.

    gr.Image opens every upload with PIL before the event function runs, so a text file, a truncated file or a
    decompression bomb would fail inside Gradio with an unhelpful message. Gradio has already checked that the path
    is an upload of this app (its upload-folder check runs before ``preprocess``).
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    original = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is not None and payload.path and not str(payload.url or "").startswith("data:"):
            return str(payload.path)
        try:
            return original(payload)
        except Exception:  # a data: URL that is not an image (PIL's message names a BytesIO object: no use to anyone)
            raise gr.Error("cannot read the image: its data: URL does not hold a PNG, JPEG, GIF, WebP, BMP or TIFF "
                           "image this app can decode", print_exception=False) from None

    image.preprocess = preprocess
    return image


def task_names(**kwargs: Any) -> gr.Dropdown:
    """A multiselect gr.Dropdown documented as a plain list of strings: any bank's task names are accepted (a Hub
    bank's are not known in advance) and checked by the app, with a message naming the known ones."""
    dropdown = gr.Dropdown(multiselect=True, allow_custom_value=True, choices=[], value=[], **kwargs)
    dropdown.api_info = lambda: {"type": "array", "items": {"type": "string"}}
    dropdown.example_payload = dropdown.example_value = lambda: ["shape", "scale"]
    return dropdown
