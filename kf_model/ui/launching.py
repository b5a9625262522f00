"""The one seam on Gradio's ``launch()``: its localhost check.

Before it serves, ``launch()`` asks ``gradio.networking.url_ok`` whether the app answers a HEAD request; that
check gives up on the first 3-second timeout, and ``launch()`` then refuses to start ("When localhost is not
accessible, a shareable link must be created"). On a loaded 2-core machine (tests, benches, long runs beside the
app) the first answer can take longer. :func:`launch` swaps in a check that retries for up to a minute, then
launches as usual. This module is the only place that touches ``gradio.networking``.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
from gradio import networking

PATIENT_SECONDS = 60.0
OK_STATUSES = (200, 301, 302, 303, 307, 308, 401)  # what Gradio's own check accepts (auth, redirects)


def patient_url_ok(url: str, patience: float = PATIENT_SECONDS) -> bool:
    """Whether ``url`` answers a HEAD request with an accepted status within ``patience`` seconds (retrying)."""
    import httpx  # Gradio's own dependency; imported here, where it is used

    deadline = time.monotonic() + patience
    while True:
        try:
            if httpx.head(url, timeout=10, verify=False).status_code in OK_STATUSES:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """``demo.launch(**kwargs)`` with the patient localhost check."""
    networking.url_ok = patient_url_ok
    return demo.launch(**kwargs)


__all__ = ["PATIENT_SECONDS", "launch", "patient_url_ok"]
