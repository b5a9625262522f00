"""The public API: the one /predict endpoint (hidden components, so its signature is exactly (image, bank, tasks)
-> JSON) and the API tab that shows how to call it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from kf_model import serving
from kf_model.ui.context import AppContext
from kf_model.ui.style import PAGE_URL_JS
from kf_model.ui.widgets import PRIVATE, checked_image, task_names, user_errors
from kf_model.utils import REPO_ROOT

DEFAULT_URL = "http://127.0.0.1:7860/"


def page_root(url: str | None) -> str:
    """The page's address as the browser reports it, checked (a plain http(s) URL ending in "/"), else the default."""
    url = (url or "").split("#")[0].split("?")[0].strip()
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d+)?(/[A-Za-z0-9._~\-/]*)?", url):
        return DEFAULT_URL
    return url if url.endswith("/") else url + "/"


def snippet_image(examples: Sequence[serving.Example], dataset: str | None) -> str:
    """A file a reader of the snippet has: an example of the bank, as a path relative to the repository (the app's
    own files, not a server path), else a placeholder."""
    example = next((e for e in examples if e.dataset == dataset and not e.inverted), None)
    if example is None or not Path(example.path).resolve().is_relative_to(REPO_ROOT):
        return "path/to/image.png"
    return Path(example.path).resolve().relative_to(REPO_ROOT).as_posix()


def api_markdown(url: str | None, ctx: AppContext) -> str:
    """The API tab: this page's own URL, and two calls that run as shown: to this app with a local file (an
    example of the repository; gradio_client refuses a URL of a local server), and to the Space by its id."""
    root = page_root(url)
    registry = ctx.registry
    bank = ctx.first_bank or "dsprites"
    entry = registry.cached(bank) if bank in registry.bundled else None
    image = snippet_image(ctx.examples, entry.dataset if entry is not None else None)
    tasks = entry.task_names[:2] if entry is not None else ["shape", "scale"]
    space = os.environ.get("SPACE_ID") or "OWNER/SPACE"
    return f"""### One endpoint: `/predict`
This app answers at **`{root}`**. Inputs, in order:
- **image**: a file (PNG, JPEG, GIF, WebP, BMP, TIFF; at most 25 MB and 40 megapixels, a JPEG 80);
- **bank**: a bundled bank ({", ".join(f"`{k}`" for k in ctx.ordered_bundled()) or "none"}) or a Hub repo id
  `owner/name[@revision]` (only its manifest, CKN and the requested TSNs are downloaded);
- **tasks**: a list of task names; **an empty list means every task of the bank**.

Output: JSON `{{task: {{label: probability}}}}` with every class of every task, plus one key **`_input`** about the
image:
- `expects`: what a good input for this bank looks like, in words;
- `familiarity`: the share of the bank's own held-out test images that look less typical than this image (0-1;
  `null` for a bank without familiarity statistics);
- `unfamiliar`: `true` when the image is unlike the bank's training data: treat the answers as guesses;
- `inverted`: whether a light background was inverted to the datasets' light-on-dark look;
- `reason`: what the familiarity check saw, in words;
- `untested_tasks`: `{{task: why}}` for the asked tasks whose "yes" the bank was never checked on (e.g. no photo of
  one among its distillation images): a "no" from them is weak evidence; `{{}}` for most banks.

From Python (`pip install gradio_client`), with a file on your machine (`{image}` is in the kf repository: run it
from a checkout, or give any image's path):
```python
from gradio_client import Client, handle_file

client = Client("{root}")
image = handle_file("{image}")
result = client.predict(image, "{bank}", {json.dumps(tasks)}, api_name="/predict")
print(result["{tasks[0]}"])   # {{label: probability}} for every class of {tasks[0]}
print(result["_input"])    # {{"expects": ..., "familiarity": ..., "unfamiliar": ..., "inverted": ..., "reason": ...,
                           #   "untested_tasks": {{...}}}}
every_task = client.predict(image, "{bank}", [], api_name="/predict")  # [] = every task
```
The same on the Hugging Face Space, by its id, with an image by its public URL:
```python
client = Client("{space}")
image = handle_file("https://huggingface.co/spaces/{space}/resolve/main/{image}")
result = client.predict(image, "{bank}", {json.dumps(tasks)}, api_name="/predict")
```
Bad input (no image, an unknown task or bank, a file that is not an image, truncated, or too large) is refused with
a message in words (`gradio_client.exceptions.AppError`). Agents: the same endpoint is an MCP tool, served at
`{root}gradio_api/mcp/`."""


def build_api_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """The API tab's text (call inside the tab); the page tells it its own address when it loads."""
    api_help = gr.Markdown(api_markdown(None, ctx), elem_id="api-help")
    page_url = gr.Textbox(visible=False)
    demo.load(lambda url: api_markdown(url, ctx), page_url, api_help, js=PAGE_URL_JS, **PRIVATE)


def build_api_endpoint(ctx: AppContext, predicting: dict[str, Any], *, floor_endpoint: bool = False) -> None:
    """/predict (and /noop for ``make bench`` when ``floor_endpoint``): hidden components, one public event."""
    with gr.Row(visible=False):
        image = checked_image(label="image")
        bank = gr.Textbox(label="bank", value=ctx.first_bank or "")  # the page's first bank, the API's default
        tasks = task_names(label="tasks")
        output = gr.JSON(label="prediction")
        button = gr.Button("predict")

    @user_errors
    def predict(image: str | None, bank: str | None, tasks: list[str] | None) -> dict[str, Any]:
        """Recognise an image with a factor bank: the probability of every class of each task asked for, and whether
        the image looks like the bank's training data (if not, treat the answers as guesses).

        Args:
            image: the image file (PNG, JPEG, GIF, WebP, BMP, TIFF; at most 25 MB and 40 megapixels, a JPEG 80)
            bank: a bundled bank name (e.g. "photo-everyday", "dsprites", "fashion-mnist") or a Hub repo id
                "owner/name[@revision]"; empty: the bank the app's page opens with
            tasks: the task names to predict, e.g. ["shape", "scale"]; an empty list means every task of the bank
        Returns:
            {task: {label: probability}} for every class of every task, plus "_input" (see the API tab)
        """
        return ctx.gate.api_predict(image, bank, tasks)

    button.click(predict, [image, bank, tasks], output, api_name="predict", **predicting)
    if floor_endpoint:  # what /predict itself costs above Gradio's floor is visible next to it in `make bench`
        noop = gr.Button("noop", visible=False)
        noop.click(lambda image, bank, tasks: {}, [image, bank, tasks], output, api_name="noop", **predicting)
