"""kf demo: tick tasks, assemble a factorized network, run it on an image — no fine-tuning.

    python app.py [--host 127.0.0.1] [--port 7860]

Environment: KF_HOST / KF_PORT (else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Spaces);
KF_REPO / KF_REVISION (default bank from the Hub); KF_FACTORS_DIR (bundled banks, default
assets/factors); KF_ALLOW_HUB=0 (serve the bundled banks only); KF_DEVICE (cpu / cuda);
KF_CONCURRENCY (parallel predictions, default 4); KF_LOADS (bank loads at once, default 2: a load never takes
a prediction's slot); KF_QUEUE_SIZE (waiting requests, default 64); KF_TORCH_THREADS (CPU threads per
prediction, default 1).

All the logic is in ``kf_model.serving``; this file builds the interface. One public API endpoint,
``/predict`` (image file, bank, tasks) -> ``{task: {label: probability}}``; every other event is private.
"""

from __future__ import annotations

try:  # ZeroGPU Spaces: import `spaces` before anything initialises CUDA
    import spaces  # type: ignore[import-not-found]  # noqa: F401
except ImportError:
    pass

import argparse
import functools
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch

from kf_model import serving
from kf_model.errors import KFError

log = logging.getLogger("kf.app")

MAX_TASK_SLOTS = 16  # one gr.Label per ticked task, up to this many (the JSON and the bar plot show all)
CONCURRENCY = int(os.environ.get("KF_CONCURRENCY", "4"))
QUEUE_SIZE = int(os.environ.get("KF_QUEUE_SIZE", "64"))
LOADS = int(os.environ.get("KF_LOADS", str(serving.LOADS)))
PRIVATE = {"api_visibility": "private"}
SELECT_BRUSH_JS = """() => {
    let tries = 0;  // the canvas mounts when the tab first opens: retry until the brush is the active tool
    const pick = () => {
        const brush = document.querySelector("#sketch button[aria-label='Brush']");
        if (brush && brush.classList.contains("highlight")) return;
        if (brush) brush.click();
        if (++tries < 30) setTimeout(pick, 150);
    };
    setTimeout(pick, 50);
}"""

CSS = """
#examples img, #processed img, #leakage img, #upload img { image-rendering: pixelated; }
#upload img { width: 100%; height: 100%; object-fit: contain; }
#examples .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(56px, 1fr));
                            grid-auto-rows: minmax(56px, 1fr); padding-top: 30px; }
#examples .caption-label { font-size: 11px; padding: 1px 4px; }
#summary table, #explain-metrics table, #explain-params table { font-size: 0.9em; }
#explain-metrics td, #explain-params td, #summary td { white-space: nowrap; }
#explain-metrics, #explain-params { overflow-x: auto; }
#explain-figures img { object-fit: contain !important; }
#answer, #answer .prose, #answer p { font-size: 1.3rem !important; line-height: 1.35; }
#answer p { margin: 0.2em 0; }
#familiarity.kf-warn { background: #fff4e5; border: 1px solid #f59e0b; border-radius: 8px; padding: 0.4em 0.7em; }
.kf-message { padding: 0.3em 0.6em; border-radius: 6px; }
#results { position: relative; transition: opacity 0.15s; }
#results.kf-stale > * { opacity: 0.3; }
#results.kf-stale::before { content: "Reading the new image…"; position: absolute; top: 3em; left: 50%; z-index: 5;
    transform: translateX(-50%); background: var(--background-fill-primary); padding: 0.4em 0.8em 0.4em 2.4em;
    border-radius: 6px; box-shadow: 0 1px 4px rgba(0,0,0,0.2); font-weight: 600; }
#results.kf-stale::after { content: ""; position: absolute; top: 3.35em; left: calc(50% - 6.2em); z-index: 6;
    width: 1em; height: 1em; border: 3px solid #c7d2fe; border-top-color: #4f46e5; border-radius: 50%;
    animation: kf-spin 0.8s linear infinite; }
@keyframes kf-spin { to { transform: rotate(360deg); } }
@media (max-width: 640px) {  /* a phone: the image and its answer come first */
    #intro p { display: none; }
    #intro h1 { font-size: 1.3em; margin: 0; }
}
"""

# Runs once when the page loads: an image being uploaded or dropped greys the old answers at once (the prediction's own
# progress overlay only starts once the upload has finished); the prediction's end removes the mark.
PAGE_JS = """() => {
    const stale = (event) => {
        if (event.target && event.target.closest && event.target.closest('#upload')) {
            document.querySelector('#results')?.classList.add('kf-stale');
        }
    };
    document.addEventListener('change', stale, true);
    document.addEventListener('drop', stale, true);
    document.addEventListener('paste', stale, true);
}"""
FRESH_JS = "() => { document.querySelector('#results')?.classList.remove('kf-stale'); }"
STALE_JS = "(value) => { document.querySelector('#results')?.classList.add('kf-stale'); return value; }"
PAGE_URL_JS = "() => window.location.origin + window.location.pathname"

INTRO = """# kf — Knowledge Factorization you can assemble
A teacher network was factorized (Yang, Ye, Wang, ECCV 2022) into one shared *Common Knowledge Network* (CKN) and one
small *Task-Specific Network* (TSN) per task: **tick tasks**, and the CKN + the ticked TSNs become one network, with no
fine-tuning."""

TABLE_HEADERS = ["task", "answer", "%", "details"]


# gr.Image / gr.Dropdown are adjusted per instance, not subclassed: Gradio writes a .pyi stub next to the module of
# every component subclass it sees (app.pyi here), and these two only need one method each.

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
        except Exception as error:  # a data: URL that is not an image
            raise gr.Error(f"cannot read the image: {error}", print_exception=False) from None

    image.preprocess = preprocess
    return image


def task_names(**kwargs: Any) -> gr.Dropdown:
    """A multiselect gr.Dropdown documented as a plain list of strings: any bank's task names are accepted (a Hub
    bank's are not known in advance) and checked by the app, with a message naming the known ones."""
    dropdown = gr.Dropdown(multiselect=True, allow_custom_value=True, choices=[], value=[], **kwargs)
    dropdown.api_info = lambda: {"type": "array", "items": {"type": "string"}}
    dropdown.example_payload = dropdown.example_value = lambda: ["shape", "scale"]
    return dropdown


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


def figures_html(paths: Sequence[str | None]) -> str:
    """Evaluation figures at full width and natural height: nothing cropped, titles included."""
    items = [f'<figure style="margin:0"><img src="gradio_api/file={html.escape(p)}" alt="{html.escape(Path(p).stem)}" '
             'style="width:100%;height:auto;display:block"></figure>' for p in paths if p]
    if not items:
        return ""
    return ('<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px">'
            + "".join(items) + "</div>")


DEFAULT_URL = "http://127.0.0.1:7860/"


def page_root(url: str | None) -> str:
    """The page's address as the browser reports it, checked (a plain http(s) URL ending in "/"), else the default."""
    url = (url or "").split("#")[0].split("?")[0].strip()
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d+)?(/[A-Za-z0-9._~\-/]*)?", url):
        return DEFAULT_URL
    return url if url.endswith("/") else url + "/"


def api_markdown(url: str | None, registry: serving.BankRegistry, examples: Sequence[serving.Example]) -> str:
    """The API tab: this page's own URL, and a call that runs as shown (its image is one of the app's examples,
    fetched from this app by gradio_client)."""
    root = page_root(url)
    bank = registry.default or "dsprites"
    entry = registry.bundled.get(bank)
    dataset = entry.dataset if entry is not None else None
    example = next((e for e in examples if e.dataset == dataset and not e.inverted), None)
    image = f"{root}gradio_api/file={example.path}" if example is not None else "path/to/image.png"
    tasks = entry.task_names[:2] if entry is not None else ["shape", "scale"]
    first = tasks[0]
    return f"""### One endpoint: `/predict`
This app answers at **`{root}`**. Inputs, in order:
- **image**: a file (PNG, JPEG, GIF, WebP, BMP, TIFF; at most 10 MB and 40 megapixels);
- **bank**: a bundled bank ({", ".join(f"`{k}`" for k in registry.bundled) or "none"}) or a Hub repo id
  `owner/name[@revision]` (only its manifest, CKN and the requested TSNs are downloaded);
- **tasks**: a list of task names; **an empty list means every task of the bank**.

Output: JSON `{{task: {{label: probability}}}}` with every class of every task, plus one key **`_input`** about the
image:
- `expects`: what a good input for this bank looks like, in words;
- `familiarity`: the share of the bank's own held-out test images that look less typical than this image (0-1;
  `null` for a bank without familiarity statistics);
- `unfamiliar`: `true` when the image is unlike the bank's training data: treat the answers as guesses;
- `inverted`: whether a light background was inverted to the datasets' light-on-dark look.
```python
from gradio_client import Client, handle_file

client = Client("{root}")
image = handle_file("{image}")  # one of this app's example images
result = client.predict(image, "{bank}", {json.dumps(tasks)}, api_name="/predict")
print(result["{first}"])   # {{label: probability}} for every class of {first}
print(result["_input"])    # {{"expects": ..., "familiarity": ..., "unfamiliar": ..., "inverted": ...}}
every_task = client.predict(image, "{bank}", [], api_name="/predict")  # [] = every task
```
Bad input (no image, an unknown task or bank, a file that is not an image, truncated, or too large) is refused with
a message in words (`gradio_client.exceptions.AppError`)."""


def _message(text: str, kind: str = "info") -> str:
    icon = {"info": "ℹ", "ok": "✔", "error": "⚠"}[kind]  # text symbols: every font has them, not every emoji
    return f"{icon} {text}" if text else ""


class NewestWins:
    """Per browser session, only the newest prediction writes the outputs.

    Predictions run up to KF_CONCURRENCY at a time, so a slow older one (say, the bank switch's) may finish after a
    newer one (the example clicked next) and would overwrite its answer. Each prediction takes a ticket when it
    starts; one that is no longer the session's newest when it ends leaves the outputs alone.
    """

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._newest: OrderedDict[str, int] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()
        self._max_sessions = max_sessions

    def start(self, session: str) -> int:
        with self._lock:
            self._next += 1
            self._newest[session] = self._next
            self._newest.move_to_end(session)
            while len(self._newest) > self._max_sessions:
                self._newest.popitem(last=False)
            return self._next

    def is_newest(self, session: str, ticket: int) -> bool:
        with self._lock:
            return self._newest.get(session, ticket) == ticket


def build_demo(registry: serving.BankRegistry | None = None, *,
               examples_dir: str | os.PathLike = serving.EXAMPLES_DIR, floor_endpoint: bool = False) -> gr.Blocks:
    """The Gradio app on ``registry`` (default: the bundled banks and $KF_REPO). ``floor_endpoint`` adds ``/noop``
    for ``make bench`` (``KF_BENCH_FLOOR=1``): /predict's inputs and HTTP path, doing nothing."""
    registry = registry if registry is not None else serving.BankRegistry.from_env()
    all_examples = serving.load_examples(examples_dir)
    gate = serving.PredictionGate(registry, predictions=CONCURRENCY, loads=LOADS)
    exports = serving.ScratchDir("kf-exports-")  # made by the first export, removed with the demo or at exit
    figures = serving.ScratchDir("kf-figures-")  # a Hub bank's figures, copied out of the HF cache
    gr.set_static_paths([figures.path])

    # ------------------------------------------------------------------ helpers (plain values -> UI updates)
    def entry_of(key: str | None) -> serving.BankEntry:
        return registry.get(key)

    def bank_choices(hub_keys: Sequence[str]) -> list[tuple[str, str]]:
        choices = [(entry.label, key) for key, entry in registry.bundled.items()]
        return choices + [(f"{key} (Hub)", key) for key in hub_keys if key not in registry.bundled]

    def task_choices(entry: serving.BankEntry) -> list[tuple[str, str]]:
        return [(f"{t.name}: {t.description}" if t.description else t.name, t.name) for t in entry.tasks]

    def default_tasks(entry: serving.BankEntry) -> list[str]:
        return entry.task_names if entry.kind == "bundled" else entry.task_names[:1]

    def examples_of(entry: serving.BankEntry | None) -> list[serving.Example]:
        return [] if entry is None else [e for e in all_examples if e.dataset == entry.dataset]

    def gallery_items(entry: serving.BankEntry | None) -> list[tuple[str, str]]:
        return [(str(e.path), e.caption) for e in examples_of(entry)]

    def truth_text(entry: serving.BankEntry, example: serving.Example) -> str:
        if example.reference:
            return example.reference_text()
        if entry.one_vs_rest:
            truth = next((label for label in example.labels.values() if not label.startswith("not ")), "?")
            text = f"**True class** of this held-out image: **{truth}**"
        else:
            text = "**True labels** of this held-out image: " + ", ".join(
                f"{task} = **{label}**" for task, label in example.labels.items())
        return text + (" (shown dark on white: the app inverts it back)" if example.inverted else "")

    def first_example(entry: serving.BankEntry | None) -> tuple[str | None, str]:
        example = next((e for e in examples_of(entry) if not e.inverted), None)
        return (None, "") if example is None or entry is None else (str(example.path), truth_text(entry, example))

    def recognises(entry: serving.BankEntry | None) -> str:
        if entry is None:
            return ""
        return f"**What it recognises:** {entry.input_description}."

    def bank_note(entry: serving.BankEntry) -> str:
        if entry.kind == "hub":
            return _message(f"Hub bank **{entry.key}** (commit `{entry.commit[:10]}`): ticking a task downloads "
                            "only its TSN.", "ok")
        return ""

    def servable(path: Path | None) -> str | None:
        """A figure Gradio may serve: bundled ones are in allowed_paths, a Hub bank's are copied out of the cache."""
        if path is None:
            return None
        if any(Path(allowed) in path.parents for allowed in launch_kwargs(registry)["allowed_paths"]):
            return str(path)
        copy = figures.path / f"{abs(hash(str(path))):x}" / path.name
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        return str(copy)

    def explain_values(entry: serving.BankEntry | None, tasks: Sequence[str] | None) -> list[Any]:
        """Metrics, leakage image path (or None), note, parameter accounting, figures, report."""
        if entry is None:
            return ["No bank loaded.", None, "", "", "", ""]
        entry.fetch_evaluation()
        ex = serving.explain_markdown(entry, tasks)
        figures = figures_html([servable(p) for p in ex["figures"]])
        return [ex["metrics"], servable(ex["leakage"]), ex["leakage_note"], ex["parameters"],
                figures, ex["report"] or "No evaluation report (evaluation/results.md) in this bank."]

    def explain_outputs(entry: serving.BankEntry | None, tasks: Sequence[str] | None) -> list[Any]:
        metrics, leakage_path, note, params, figures, report = explain_values(entry, tasks)
        return [metrics, gr.update(value=leakage_path, visible=leakage_path is not None), note, params, figures,
                report]

    def empty_table() -> pd.DataFrame:
        return pd.DataFrame(columns=TABLE_HEADERS)

    def empty_outputs(info: str) -> list[Any]:
        return [gr.update(value="", elem_classes=[]), gr.update(value="", visible=False), empty_table(),
                info, gr.update(value=None), None]

    def familiarity_text(prediction: serving.Prediction, entry: serving.BankEntry) -> tuple[str, list[str]]:
        if prediction.familiarity is None:
            return (_message("This bank has no familiarity statistics: it cannot tell whether the image looks like "
                             "its training data."), [])
        share = prediction.familiarity["familiarity"]
        if prediction.unfamiliar:
            fewer = "none" if share == 0 else f"only {share:.0%}"
            return (f"⚠ **This image does not look like what the bank was trained on** (familiarity {share:.0%}: "
                    f"{fewer} of its own test images look less typical). The bank recognises "
                    f"{entry.input_description}. **Treat the answers below as guesses.**", ["kf-warn"])
        return _message(f"Looks like the bank's training data (familiarity {share:.0%}).", "ok"), []

    def prediction_outputs(prediction: serving.Prediction) -> list[Any]:
        entry = entry_of(prediction.bank)
        warning, classes = familiarity_text(prediction, entry)
        answer = prediction.answer()
        answer_md = ""
        if answer is not None:
            headline, _ = answer
            answer_md = f"**{headline}**" + ("  \n<small>(unfamiliar image: a guess)</small>"
                                             if prediction.unfamiliar else "")
        table = pd.DataFrame(prediction.table(), columns=TABLE_HEADERS)
        frame = pd.DataFrame(prediction.confidences())
        t = prediction.timings
        lines = [f"**{t['total_ms']:.1f} ms** on **{prediction.device}** (preprocessing {t['preprocess_ms']:.1f} ms, "
                 f"network {t['network_ms']:.1f} ms; {len(prediction.tasks)} task(s), one CKN pass)."]
        if prediction.notes:
            lines.append("Input: " + "; ".join(prediction.notes) + ".")
        return [gr.update(value=warning, elem_classes=classes), gr.update(value=answer_md, visible=bool(answer_md)),
                table, "\n\n".join(lines), frame, prediction.preview()]

    def predict_outputs(image: Any, bank: str, tasks: list[str] | None, invert: str) -> list[Any]:
        if image is None:
            return empty_outputs(_message("Upload, paste or draw an image to see the predictions."))
        if not tasks:
            return empty_outputs(_message("Tick at least one task.", "error"))
        flag = {"auto": None, "no": False, "yes": True}.get(invert)
        return prediction_outputs(gate.predict(image, bank, tasks, invert=flag))

    def sketch_image(value: Any) -> Any:
        composite = value.get("composite") if isinstance(value, dict) else value
        return None if serving.is_blank(composite) else composite

    # ------------------------------------------------------------------ event functions
    @user_errors
    def on_bank(key: str) -> list[Any]:
        """A new bank: new tasks, examples and explanations; the old image and answers are cleared (the next step
        loads one of the new bank's own examples, visibly, instead of re-running the old image)."""
        entry = entry_of(key)
        tasks = default_tasks(entry)
        return [gr.update(choices=task_choices(entry), value=tasks), bank_note(entry), recognises(entry),
                serving.summary_markdown(entry, tasks), gallery_items(entry), "", gr.Tabs(selected="upload"),
                "upload", *empty_outputs(_message("Loading an example of this bank…")),
                *explain_outputs(entry, tasks)]

    @user_errors
    def on_bank_example(key: str) -> list[Any]:
        path, truth = first_example(entry_of(key))
        return [path, truth]

    def on_hub_load(repo: str, revision: str, hub_keys: list[str], current: str) -> list[Any]:
        keep = f" The current bank ({current}) keeps working." if current else ""
        try:
            key = serving.parse_hub_reference(repo, revision)
            entry = registry.get(key, refresh=True)
        except Exception as error:  # KFError: unknown repo, unreachable Hub, not a bank...; anything else is logged
            if not isinstance(error, KFError):
                log.exception("loading %s from the Hub failed", repo)
                text = "something went wrong; the details are in the server log"
            else:
                log.info("Hub bank %r not loaded: %s", repo, error)
                text = serving.plain_message(error)
            return [gr.update(), _message(f"Could not load **{(repo or '').strip()}**: {text}.{keep}", "error"),
                    hub_keys]
        keys = [*[k for k in hub_keys if k != entry.key], entry.key]
        return [gr.update(choices=bank_choices(keys), value=entry.key), bank_note(entry), keys]

    @user_errors
    def on_tasks(key: str, tasks: list[str] | None) -> list[Any]:
        entry = entry_of(key)
        return [gr.Accordion(label=f"Tasks ({len(tasks or [])} ticked)"), serving.summary_markdown(entry, tasks or []),
                serving.assembly_svg(entry, tasks or []),
                *explain_outputs(entry, tasks or [])]

    newest = NewestWins()

    def predict_newest(request: gr.Request | None, mode: str, image: Any, bank: str, tasks: list[str] | None,
                       invert: str) -> list[Any]:
        session = getattr(request, "session_hash", None)  # None outside a browser session: nothing to order
        ticket = newest.start(session) if session else None
        outputs = [mode, *predict_outputs(image, bank, tasks, invert)]
        if ticket is None or newest.is_newest(session, ticket):
            return outputs
        return [gr.skip()] * len(outputs)

    @user_errors
    def run_upload(path: str | None, bank: str, tasks: list[str] | None, invert: str,
                   request: gr.Request) -> list[Any]:
        return predict_newest(request, "upload", path or None, bank, tasks, invert)

    @user_errors
    def run_sketch(value: Any, bank: str, tasks: list[str] | None, invert: str, request: gr.Request) -> list[Any]:
        return predict_newest(request, "draw", sketch_image(value), bank, tasks, invert)

    @user_errors
    def run_active(active: str, path: str | None, sketch: Any, bank: str, tasks: list[str] | None,
                   invert: str, request: gr.Request) -> list[Any]:
        image = sketch_image(sketch) if active == "draw" else (path or None)
        return predict_newest(request, active, image, bank, tasks, invert)

    def on_example(bank: str, evt: gr.SelectData) -> list[Any]:
        try:
            entry = entry_of(bank)
        except KFError:
            return [gr.update(), "", gr.update()]
        examples = examples_of(entry)
        if evt.index is None or not 0 <= int(evt.index) < len(examples):
            return [gr.update(), "", gr.update()]
        example = examples[int(evt.index)]
        return [str(example.path), truth_text(entry, example), gr.Tabs(selected="upload")]

    @user_errors
    def on_export(bank: str, tasks: list[str] | None, kind: str) -> str:
        entry = entry_of(bank)
        for old in exports.path.iterdir():  # Gradio serves a copy from its own cache: ours can go after an hour
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        out = Path(tempfile.mkdtemp(dir=exports.path))
        export = registry.export_onnx if kind == "onnx" else registry.export_zip
        return str(export(entry.key, tasks or [], out))

    @user_errors
    def api_predict(image: str | None, bank: str | None, tasks: list[str] | None) -> dict[str, Any]:
        """Predict the given tasks of a factor bank for one image, and say whether the image looks familiar.

        Args:
            image: the image file (PNG, JPEG, GIF, WebP, BMP, TIFF; at most 40 megapixels)
            bank: a bundled bank name ("dsprites", "fashion-mnist") or a Hub repo id "owner/name[@revision]"
            tasks: the task names to predict, e.g. ["shape", "scale"]; an empty list means every task
        Returns:
            {task: {label: probability}} for every class of every task, plus "_input": {"expects",
            "familiarity", "unfamiliar", "inverted"}
        """
        return gate.api_predict(image, bank, tasks)

    # ------------------------------------------------------------------ layout
    default_entry = registry.get(registry.default) if registry.default else None
    start_tasks = default_tasks(default_entry) if default_entry else []
    start_image, start_truth = first_example(default_entry)
    problems = "\n".join(_message(p, "error") for p in registry.problems)
    if default_entry is None:
        problems = (problems + "\n" if problems else "") + _message(
            "No bundled factor bank found (assets/factors/): load one from the Hub.", "error")
    start_explain = explain_values(default_entry, start_tasks)

    with gr.Blocks(title="kf — Knowledge Factorization", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        active = gr.State("upload")
        hub_keys = gr.State([] if default_entry is None or default_entry.kind == "bundled" else [default_entry.key])
        with gr.Tabs():
            with gr.Tab("Assemble & predict", id="predict"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=300):
                        bank = gr.Dropdown(choices=bank_choices(hub_keys.value), value=registry.default,
                                           label="Factor bank", allow_custom_value=True, elem_id="bank",
                                           info="Bundled banks, and the Hub banks you load")
                    with gr.Column(scale=6, min_width=300):
                        recognises_md = gr.Markdown(recognises(default_entry), elem_id="recognises")
                bank_msg = gr.Markdown(problems, elem_id="bank-message", elem_classes=["kf-message"])
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320, elem_id="image-column"):
                        with gr.Tabs(elem_id="input-tabs") as input_tabs:
                            with gr.Tab("Upload / paste", id="upload"):
                                upload = checked_image(value=start_image, sources=["upload", "clipboard"],
                                                       label="Image", height=260, elem_id="upload")
                            with gr.Tab("Draw", id="draw") as draw_tab:
                                sketch = gr.Sketchpad(type="pil", canvas_size=(280, 280), height=340,
                                                      label="Draw a shape or a garment", elem_id="sketch",
                                                      brush=gr.Brush(default_size=16, colors=["#000000", "#ffffff"],
                                                                     default_color="#000000"))
                        truth = gr.Markdown(start_truth, elem_id="truth")
                    with gr.Column(scale=6, min_width=320, elem_id="results"):
                        familiarity = gr.Markdown(elem_id="familiarity")
                        answer = gr.Markdown(visible=False, elem_id="answer",
                                             label="Which of the ticked classes is it?")
                        table = gr.Dataframe(empty_table(), headers=TABLE_HEADERS, interactive=False, wrap=True,
                                             elem_id="task-table", max_height=360, show_label=False)
                        info = gr.Markdown(_message("Upload, paste or draw an image to see the predictions."),
                                           elem_id="latency")
                        with gr.Accordion("Detail: confidence per task and the network's input", open=False,
                                          elem_id="detail"):
                            bars = gr.BarPlot(x="bar", y="confidence", y_lim=[0, 1], label="Confidence per task",
                                              x_title="prediction (one-vs-rest banks: P(class))",
                                              y_title="probability", height=220, elem_id="bars", x_label_angle=-30)
                            processed = gr.Image(label="Network input", type="pil", format="png",
                                                 buttons=["download"], interactive=False, height=200,
                                                 elem_id="processed")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320):
                        with gr.Row():
                            invert = gr.Radio(["auto", "no", "yes"], value="auto", label="Invert to light-on-dark",
                                              info="auto: when the border is light", elem_id="invert", scale=3)
                            run = gr.Button("Predict again", elem_id="predict", scale=1)
                        gallery = gr.Gallery(gallery_items(default_entry),
                                             label="Held-out test images: click one", buttons=[], columns=5,
                                             height=250, allow_preview=False,
                                             object_fit="contain", elem_id="examples", interactive=False)
                    with gr.Column(scale=6, min_width=320):
                        with gr.Accordion(f"Tasks ({len(start_tasks)} ticked)", open=True,
                                          elem_id="tasks-box") as tasks_box:
                            tasks = gr.CheckboxGroup(
                                choices=task_choices(default_entry) if default_entry else [], value=start_tasks,
                                label="Tasks to assemble", elem_id="tasks",
                                info="Each ticked task adds its small TSN to the shared CKN")
                            with gr.Row():
                                select_all = gr.Button("Select all", size="sm", elem_id="select-all")
                                select_none = gr.Button("Select none", size="sm", elem_id="select-none")
                        with gr.Accordion("Parameter accounting: why assembling beats separate networks",
                                          open=False, elem_id="accounting"):
                            drawing = gr.HTML(serving.assembly_svg(default_entry, start_tasks)
                                              if default_entry else "", elem_id="drawing")
                            summary = gr.Markdown(
                                serving.summary_markdown(default_entry, start_tasks) if default_entry else "",
                                elem_id="summary")
                        with gr.Accordion("Load a bank from the Hugging Face Hub", open=False, elem_id="hub",
                                          visible=registry.allow_hub):
                            repo = gr.Textbox(label="Hub repo", elem_id="hub-repo",
                                              placeholder="owner/name, owner/name@revision or a huggingface.co link")
                            revision = gr.Textbox(label="Revision (optional)", placeholder="branch, tag or commit",
                                                  elem_id="hub-revision")
                            load = gr.Button("Load from the Hub", size="sm", elem_id="hub-load")
                        with gr.Accordion("Export the assembled network", open=False, elem_id="export"):
                            gr.Markdown("The ticked tasks only. A **zip** of a factor-bank folder: unzip it and load "
                                        "it with `FactorBank.from_pretrained(folder)`. An **ONNX** file of the "
                                        "assembled network: input `image` `[batch, C, H, W]` in [0, 1], one output "
                                        "of logits per task; class names and input size in its metadata.")
                            export_kind = gr.Radio([("Factor bank (.zip)", "zip"), ("ONNX (.onnx)", "onnx")],
                                                   value="zip", label="Format", elem_id="export-kind")
                            export = gr.Button("Build the file", size="sm", elem_id="export-button")
                            export_file = gr.File(label="Export", interactive=False, elem_id="export-file")
            with gr.Tab("Explain", id="explain"):
                explain_metrics = gr.Markdown(start_explain[0], elem_id="explain-metrics")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        leakage = gr.Image(start_explain[1], label="Leakage heat map (evaluation/leakage.png)",
                                           interactive=False, elem_id="leakage", height=440, show_label=False,
                                           buttons=["download", "fullscreen"], visible=start_explain[1] is not None)
                        leakage_note = gr.Markdown(start_explain[2])
                    with gr.Column():
                        gr.Markdown("#### Parameter accounting")
                        explain_params = gr.Markdown(start_explain[3], elem_id="explain-params")
                figures = gr.HTML(start_explain[4], elem_id="explain-figures")
                with gr.Accordion("Full evaluation report (evaluation/results.md)", open=False):
                    report = gr.Markdown(start_explain[5])
            with gr.Tab("API", id="api"):
                api_help = gr.Markdown(api_markdown(None, registry, all_examples), elem_id="api-help")
                page_url = gr.Textbox(visible=False)

        # Public API: hidden components, so that the endpoint's signature is exactly (image, bank, tasks) -> JSON.
        with gr.Row(visible=False):
            api_image = checked_image(label="image")
            api_bank = gr.Textbox(label="bank", value=registry.default or "")
            api_tasks = task_names(label="tasks")
            api_output = gr.JSON(label="prediction")
            api_button = gr.Button("predict")

        # ------------------------------------------------------------------ events
        explain_components = [explain_metrics, leakage, leakage_note, explain_params, figures, report]
        outputs = [active, familiarity, answer, table, info, bars, processed]
        result_outputs = outputs[1:]
        run_inputs = [bank, tasks, invert]
        # every prediction event shares one group: its loads (PredictionGate) can never take all of its slots
        predicting = {"concurrency_id": "predict", "concurrency_limit": gate.capacity}
        shown = {"show_progress": "full", "show_progress_on": [familiarity, table, info], **PRIVATE, **predicting}

        api_button.click(api_predict, [api_image, api_bank, api_tasks], api_output, api_name="predict",
                         api_description="Predict the given tasks (empty: all) of a factor bank for one image: "
                                         "{task: {label: probability}, \"_input\": {familiarity...}}.",
                         **predicting)
        if floor_endpoint:  # what /predict itself costs above Gradio's floor is visible next to it in `make bench`
            noop_button = gr.Button("noop", visible=False)
            noop_button.click(lambda image, bank, tasks: {}, [api_image, api_bank, api_tasks], api_output,
                              api_name="noop", **predicting)

        # One step at a time: the image changes only once the new tasks are in place, so that no prediction sends
        # the old bank's task names to the new bank (Gradio would refuse them as unknown choices).
        bank.change(on_bank, bank, [tasks, bank_msg, recognises_md, summary, gallery, truth, input_tabs, active,
                                    *result_outputs, *explain_components], js=STALE_JS, **PRIVATE).then(
            lambda: None, None, upload, **PRIVATE).then(
            on_bank_example, bank, [upload, truth], **PRIVATE).then(None, js=FRESH_JS, **PRIVATE)
        load.click(on_hub_load, [repo, revision, hub_keys, bank], [bank, bank_msg, hub_keys], **PRIVATE)
        repo.submit(on_hub_load, [repo, revision, hub_keys, bank], [bank, bank_msg, hub_keys], **PRIVATE)
        tasks.change(on_tasks, [bank, tasks], [tasks_box, summary, drawing, *explain_components], **PRIVATE)
        tasks.input(run_active, [active, upload, sketch, *run_inputs], outputs, trigger_mode="always_last", **shown)
        for button, pick in ((select_all, True), (select_none, False)):
            button.click(user_errors(lambda key, pick=pick: entry_of(key).task_names if pick else []), bank, tasks,
                         **PRIVATE).success(run_active, [active, upload, sketch, *run_inputs], outputs, **shown)
        upload.change(run_upload, [upload, *run_inputs], outputs, trigger_mode="always_last", **shown).then(
            None, js=FRESH_JS, **PRIVATE)
        upload.upload(lambda: "", None, truth, **PRIVATE)
        sketch.change(run_sketch, [sketch, *run_inputs], outputs, trigger_mode="always_last", **shown)
        sketch.change(lambda: "", None, truth, **PRIVATE)
        invert.input(run_active, [active, upload, sketch, *run_inputs], outputs, **shown)
        run.click(run_active, [active, upload, sketch, *run_inputs], outputs, **shown)
        # Gradio's Sketchpad starts with no tool ("select the draw tool to start"): opening the tab picks the brush
        draw_tab.select(None, js=SELECT_BRUSH_JS, **PRIVATE)
        gallery.select(on_example, bank, [upload, truth, input_tabs], **PRIVATE)
        export.click(on_export, [bank, tasks, export_kind], export_file, **PRIVATE)
        # On load: the example already in the image box is answered (the first screen shows what the app does), and
        # the API tab learns the address the page was served from.
        demo.load(run_active, [active, upload, sketch, *run_inputs], outputs, **shown)
        demo.load(lambda url: api_markdown(url, registry, all_examples), page_url, api_help, js=PAGE_URL_JS,
                  **PRIVATE)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.kf_registry, demo.kf_gate = registry, gate  # for tests and scripts
    return demo


def launch_kwargs(registry: serving.BankRegistry | None = None) -> dict[str, Any]:
    """The launch() settings every start uses (the tests too): upload cap, files the app may serve, styling."""
    allowed = [str(serving.EXAMPLES_DIR)]
    if registry is not None:
        allowed += [str(e.evaluation_dir) for e in registry.bundled.values() if e.evaluation_dir is not None]
    return {"max_file_size": serving.MAX_FILE_BYTES, "allowed_paths": allowed, "css": CSS, "js": PAGE_JS,
            "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="amber"), "show_error": False}


_demo: gr.Blocks | None = None


def __getattr__(name: str) -> Any:  # `demo` is built on first access (gradio's reload mode looks for it)
    global _demo
    if name == "demo":
        if _demo is None:
            _demo = build_demo()
        return _demo
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The kf demo (Gradio).")
    parser.add_argument("--host", default=None, help="default: $KF_HOST, $GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $KF_PORT, $GRADIO_SERVER_PORT or 7860")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = args.host or os.environ.get("KF_HOST") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or int(os.environ.get("KF_PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    registry = serving.BankRegistry.from_env()
    if registry.device.type == "cpu":  # tiny networks, several requests at once: one thread each, no oversubscription
        torch.set_num_threads(int(os.environ.get("KF_TORCH_THREADS", "1")))
    log.info("banks: %s (default %s) on %s", registry.keys, registry.default, registry.device)
    floor = os.environ.get("KF_BENCH_FLOOR") == "1"
    build_demo(registry, floor_endpoint=floor).launch(server_name=host, server_port=port, **launch_kwargs(registry))


if __name__ == "__main__":
    main()
