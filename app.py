"""kf demo: tick tasks, assemble a factorized network, run it on an image — no fine-tuning.

    python app.py [--host 127.0.0.1] [--port 7860] [--runtime auto|torch|onnxruntime]

Environment: KF_HOST / KF_PORT (else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Spaces); KF_REPO / KF_REVISION
(default bank from the Hub); KF_FACTORS_DIR (bundled banks, default assets/factors); KF_ALLOW_HUB=0 (serve the bundled
banks only); KF_DEVICE (cpu / cuda); KF_CONCURRENCY (parallel predictions, default 4); KF_PREDICT_WORKERS (processes
that answer the bundled banks' predictions, so that a second core serves visitors; default auto: one on a CPU with two
cores or more, else none; 0: the app's own process);
KF_LOADS (bank loads at once, default 2: a load never takes a prediction's slot); KF_QUEUE_SIZE (waiting requests,
default 64); KF_TORCH_THREADS (CPU threads per prediction, default 1); KF_RUNTIME / --runtime (auto, torch or
onnxruntime; default torch; auto: a tick set asked for often is exported to onnxruntime in the background and served by
whichever runtime answered it faster, torch meanwhile and whenever onnxruntime is missing or fails;
kf_model/serving/runtime.py).

All the logic is in ``kf_model.serving``; the panels are in ``kf_model.ui``, laid out and launched by
``kf_model.ui.app``. This file only starts it, and imports it on first use (``app.build_demo``, ``app.demo``, ...): a
prediction worker process starts by importing this file again, and so pays for none of Gradio.

One public API endpoint, ``/predict`` (image file, bank, tasks) -> ``{task: {label: probability}}``;
every other event is private.
"""

from __future__ import annotations

try:  # ZeroGPU Spaces: import `spaces` before anything initialises CUDA
    import spaces  # type: ignore[import-not-found]  # noqa: F401
except ImportError:
    pass

from typing import Any


def __getattr__(name: str) -> Any:
    """``build_demo``, ``launch_kwargs``, ``main``, ``NewestWins``, ``demo`` (built on first access, as Gradio's
    reload mode looks for it) ...: kf_model.ui.app's, imported on first use."""
    from kf_model.ui import app as demo_app

    return getattr(demo_app, name)


if __name__ == "__main__":
    from kf_model.errors import KFError

    try:  # a setting refused in words (KF_PORT=abc), not a traceback
        from kf_model.ui.app import main

        main()
    except KFError as error:
        raise SystemExit(f"error: {error}") from None
