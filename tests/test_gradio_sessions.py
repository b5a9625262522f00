"""The seam on Gradio's per-session configs (kf_model/ui/gradio_sessions.py): it still applies to this Gradio, and
component configs are the same with it."""

from __future__ import annotations

import inspect

import gradio as gr
import gradio.blocks
import pytest

from kf_model.ui.gradio_sessions import QUEUE_ANALYTICS, bound_queue_analytics, memoise_component_signatures, signature


def test_the_seam_applies_to_this_gradio_and_configs_do_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradio.blocks, "inspect", inspect)  # as Gradio ships it
    with gr.Blocks():
        box = gr.Textbox(label="tasks", value="shape", info="comma separated")
        image = gr.Image(type="filepath", label="image")
    plain = [box.get_config(), image.get_config()]
    assert memoise_component_signatures() is True
    assert gradio.blocks.inspect is not inspect and memoise_component_signatures() is True  # once
    assert [box.get_config(), image.get_config()] == plain
    assert gradio.blocks.inspect.isclass(gr.Textbox) and gradio.blocks.inspect.Parameter is inspect.Parameter


def test_signatures_are_memoised_and_unhashable_callables_still_answer() -> None:
    assert signature(gr.Textbox.__init__) is signature(gr.Textbox.__init__)
    assert signature(gr.Textbox.__init__) == inspect.signature(gr.Textbox.__init__)

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, a: int, b: int = 2) -> int:
            return a + b

    assert list(signature(Unhashable()).parameters) == ["a", "b"]
    assert signature(len, follow_wrapped=False) == inspect.signature(len, follow_wrapped=False)


def test_a_gradio_that_reads_inspect_no_more_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(gradio.blocks, "inspect")
    assert memoise_component_signatures() is False
    assert not hasattr(gradio.blocks, "inspect")


def test_the_queue_recomputes_its_analytics_summary_every_100_events_over_the_last_1000(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio reads these settings when a queue is made; a value the user set wins."""
    for name in QUEUE_ANALYTICS:
        monkeypatch.delenv(name, raising=False)
    assert bound_queue_analytics() == QUEUE_ANALYTICS
    with gr.Blocks() as demo:
        gr.Textbox()
    demo.queue()
    assert (demo._queue.ANAYLTICS_CACHE_FREQUENCY, demo._queue.ANALYTICS_MAX_EVENTS) == (100, 1000)
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "7")
    assert bound_queue_analytics()["GRADIO_ANALYTICS_CACHE_FREQUENCY"] == "7"
