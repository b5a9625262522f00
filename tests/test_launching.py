"""The seam on Gradio's launch(): a localhost check that waits for a loaded machine."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
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


def test_the_apps_number_settings_are_refused_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """KF_PORT=abc, KF_TORCH_THREADS=0, --port 99999: refused at start in words, not by a ValueError, a torch
    RuntimeError or the server's OverflowError after every bank has loaded."""
    import argparse

    from kf_model.errors import KFError
    from kf_model.limits import env_int
    from kf_model.ui.app import port_number

    monkeypatch.setenv("KF_TEST_NUMBER", "abc")
    with pytest.raises(KFError, match="KF_TEST_NUMBER must be a whole number from 1 to 64, got 'abc'"):
        env_int("KF_TEST_NUMBER", 4, 1, 64)
    monkeypatch.setenv("KF_TEST_NUMBER", "0")
    with pytest.raises(KFError, match="must be between 1 and 64, got 0"):
        env_int("KF_TEST_NUMBER", 4, 1, 64)
    monkeypatch.setenv("KF_TEST_NUMBER", " 8 ")
    assert env_int("KF_TEST_NUMBER", 4, 1, 64) == 8
    monkeypatch.delenv("KF_TEST_NUMBER")
    assert env_int("KF_TEST_NUMBER", 4, 1, 64) == 4
    assert port_number("7860") == 7860
    for bad in ("99999", "0", "-1", "http"):
        with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 65535"):
            port_number(bad)
