"""The seam on Gradio's launch(): a localhost check that waits for a loaded machine."""

from __future__ import annotations

import http.server
import socket
import threading
import time

from gradio import networking

from kf_model.ui import launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_patient_check_accepts_a_live_server_and_refuses_a_dead_port_after_its_patience() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert launching.patient_url_ok(f"http://127.0.0.1:{server.server_port}/", patience=5)
    finally:
        server.shutdown()
        server.server_close()
    start = time.monotonic()
    assert not launching.patient_url_ok(f"http://127.0.0.1:{_free_port()}/", patience=1)
    assert time.monotonic() - start >= 1


def test_a_server_that_starts_late_passes_the_patient_check() -> None:
    port = _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler,
                                             bind_and_activate=False)

    def start_late() -> None:
        time.sleep(1.5)  # longer than nothing: Gradio's own check gives up on a refused connection at once
        server.server_bind()
        server.server_activate()
        server.serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        assert launching.patient_url_ok(f"http://127.0.0.1:{port}/", patience=20)
    finally:
        server.shutdown()
        server.server_close()


def test_launch_installs_the_patient_check(monkeypatch) -> None:
    calls = []

    class FakeDemo:
        def launch(self, **kwargs):
            calls.append((networking.url_ok, kwargs))
            return "launched"

    monkeypatch.setattr(networking, "url_ok", networking.url_ok)  # restored after the test
    assert launching.launch(FakeDemo(), server_port=1) == "launched"
    assert calls == [(launching.patient_url_ok, {"server_port": 1})]
