"""The demo: the panels of :mod:`kf_model.ui` laid out in one ``gr.Blocks``, and its launch (``python app.py``).

``app.py`` at the repository root is the launcher Spaces and ``make run`` start, and its docstring lists the
settings; it imports this module only when used, so that a prediction worker, which starts by importing that file
again (multiprocessing's spawn), pays for none of Gradio.
"""


from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

import gradio as gr
import torch

from kf_model import serving
from kf_model.devices import pick_device
from kf_model.limits import env_int
from kf_model.serving.memory import MAX_SESSIONS
from kf_model.serving.workers import check_workers, resolve_workers
from kf_model.ui.answer import build_answer
from kf_model.ui.api import build_api_endpoint, build_api_tab
from kf_model.ui.bank_picker import build_bank_picker, follow_bank
from kf_model.ui.context import AppContext, NewestWins, allowed_paths
from kf_model.ui.explain import build_explain
from kf_model.ui.export import build_export
from kf_model.ui.gradio_sessions import (
    bound_queue_analytics,
    build_session_configs_lazily,
    memoise_component_signatures,
)
from kf_model.ui.hub import build_hub_loader
from kf_model.ui.image_input import build_example_gallery, build_image_input
from kf_model.ui.launching import launch
from kf_model.ui.predicting import wire_predictions
from kf_model.ui.style import CSS, page_js, theme
from kf_model.ui.tasks import build_tasks, follow_tasks

__all__ = ["NewestWins", "build_demo", "launch_kwargs", "main"]

log = logging.getLogger("kf.app")

CONCURRENCY = env_int("KF_CONCURRENCY", 4, 1, 64)
QUEUE_SIZE = env_int("KF_QUEUE_SIZE", 64, 1, 10_000)
LOADS = env_int("KF_LOADS", serving.LOADS, 1, 16)
PREDICT_WORKERS = check_workers(os.environ.get("KF_PREDICT_WORKERS", "auto"))

INTRO = """# kf — Knowledge Factorization you can assemble
A teacher network was factorized (Yang, Ye, Wang, ECCV 2022) into one shared *Common Knowledge Network* (CKN) and one
small *Task-Specific Network* (TSN) per task: **tick tasks**, and the CKN + the ticked TSNs become one network, with no
fine-tuning."""


def build_demo(registry: serving.BankRegistry | None = None, *,
               examples_dir: str | os.PathLike = serving.EXAMPLES_DIR, floor_endpoint: bool = False,
               workers: int | str | None = None) -> gr.Blocks:
    """The Gradio app on ``registry`` (default: the bundled banks and $KF_REPO). ``floor_endpoint`` adds ``/noop``
    for ``make bench`` (``KF_BENCH_FLOOR=1``): /predict's inputs and HTTP path, doing nothing. ``workers``:
    prediction worker processes (default $KF_PREDICT_WORKERS, else auto)."""
    memoise_component_signatures()  # each API call is a new session: its component configs were most of its cost
    build_session_configs_lazily()  # ... and an API call's session never reads them
    registry = registry if registry is not None else serving.BankRegistry.from_env()
    setting = PREDICT_WORKERS if workers is None else check_workers(workers)
    workers = resolve_workers(setting, registry.device)
    log.info("prediction workers: %d (KF_PREDICT_WORKERS=%s)", workers, setting)
    ctx = AppContext.create(registry, examples_dir, predictions=CONCURRENCY, loads=LOADS, workers=workers)
    entry = ctx.first_entry()
    start_tasks = ctx.default_tasks(entry) if entry else []
    start_image, start_truth = ctx.first_example(entry)

    with gr.Blocks(title="kf — Knowledge Factorization", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        active = gr.State("upload")  # which input the answer is for: "upload" or "draw"
        with gr.Tabs():
            with gr.Tab("Assemble & predict", id="predict"):
                picker = build_bank_picker(ctx)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320, elem_id="image-column"):
                        image = build_image_input(start_image, start_truth, entry)
                    with gr.Column(scale=6, min_width=320, elem_id="results"):
                        answer = build_answer()
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320):
                        gallery = build_example_gallery(ctx, picker.bank, image)
                    with gr.Column(scale=6, min_width=320):
                        tasks = build_tasks(ctx, picker.bank, entry, start_tasks)
                        build_hub_loader(ctx, picker)
                        build_export(ctx, picker.bank, tasks.tasks)
            with gr.Tab("Explain", id="explain"):
                explain = build_explain(ctx, entry, start_tasks)
            with gr.Tab("API", id="api"):
                build_api_tab(ctx, demo)
        bank_example = follow_bank(ctx, picker, tasks, image, gallery, answer, explain, active)
        follow_tasks(ctx, picker.bank, tasks, explain)
        predicting = wire_predictions(ctx, demo, active, picker.bank, image, gallery, tasks, answer,
                                      [gallery.picked, bank_example])
        build_api_endpoint(ctx, predicting, floor_endpoint=floor_endpoint)

    bound_queue_analytics()  # Gradio's per-event summary of every event kept was 18 % of the app's CPU
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.kf_registry, demo.kf_gate, demo.kf_context = registry, ctx.gate, ctx  # for tests and scripts
    return demo


def launch_kwargs(registry: serving.BankRegistry | None = None) -> dict[str, Any]:
    """The launch() settings every start uses (the tests too): upload cap, files the app may serve, styling,
    /predict as an MCP tool for agents (at /gradio_api/mcp/; every other event is private, so no tool), and the
    sessions kept in memory (every API call is one: see ``serving.memory.MAX_SESSIONS``)."""
    return {"max_file_size": serving.UPLOAD_MAX_BYTES, "allowed_paths": allowed_paths(registry), "css": CSS,
            "js": page_js(serving.UPLOAD_MAX_BYTES), "theme": theme(), "show_error": False, "mcp_server": True,
            "state_session_capacity": MAX_SESSIONS}


_demo: gr.Blocks | None = None


def __getattr__(name: str) -> Any:  # `demo` is built on first access (gradio's reload mode looks for it)
    global _demo
    if name == "demo":
        if _demo is None:
            _demo = build_demo()
        return _demo
    raise AttributeError(name)


def port_number(text: str) -> int:
    """--port: a TCP port, refused by the parser (not by the server after every bank has loaded)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65_535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The kf demo (Gradio).")
    parser.add_argument("--host", default=None, help="default: $KF_HOST, $GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=port_number, default=None,
                        help="default: $KF_PORT, $GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--runtime", choices=serving.RUNTIMES, default=None,
                        help="what runs the networks (default: $KF_RUNTIME or torch; auto: the faster of the two, "
                             "measured on the tick sets asked for most)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = args.host or os.environ.get("KF_HOST") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or env_int("KF_PORT", 0, 1, 65_535) or env_int("GRADIO_SERVER_PORT", 7860, 1, 65_535)
    if pick_device().type == "cpu":  # tiny networks, several requests at once: one thread each, no oversubscription
        torch.set_num_threads(env_int("KF_TORCH_THREADS", 1, 1, 1024))  # before the banks' warm-up passes
    registry = serving.BankRegistry.from_env(runtime=args.runtime)
    log.info("banks: %s (default %s) on %s, runtime %s", registry.keys, registry.default, registry.device,
             registry.runtime.setting if registry.runtime.uses_onnx else "torch")
    floor = os.environ.get("KF_BENCH_FLOOR") == "1"
    launch(build_demo(registry, floor_endpoint=floor), server_name=host, server_port=port, **launch_kwargs(registry))


if __name__ == "__main__":
    main()
