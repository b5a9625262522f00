"""The seam on Gradio's per-session configs (kf_model/ui/gradio_sessions.py): it still applies to this Gradio, and
component configs are the same with it, whether memoised signatures build them or a lazy session does."""

from __future__ import annotations

import inspect

import gradio as gr
import gradio.blocks
import gradio.state_holder
import pytest
from gradio.state_holder import StateHolder

from kf_model.ui.gradio_sessions import (
    QUEUE_ANALYTICS,
    LazyConfigs,
    LazySessionState,
    bound_queue_analytics,
    build_session_configs_lazily,
    memoise_component_signatures,
    signature,
)

SessionState = LazySessionState.__bases__[0]  # Gradio's own, even after the app replaced it in gradio.state_holder


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


def _app_blocks() -> gr.Blocks:
    with gr.Blocks() as demo:
        box = gr.Textbox(label="tasks", value="shape")
        image = gr.Image(type="filepath", label="image")
        with gr.Row():
            gr.Dropdown(["a", "b"], value="a", label="pick")
            gr.State(0)
        box.submit(lambda text: text, box, box)
        image.change(lambda path: path, image, image)
    return demo


def test_a_lazy_session_is_gradios_session_with_the_same_configs_when_read() -> None:
    demo = _app_blocks()
    eager, lazy = SessionState(demo), LazySessionState(demo)
    assert set(vars(lazy)) == set(vars(eager))  # every attribute Gradio's own __init__ sets
    assert isinstance(lazy.config_values, LazyConfigs) and not lazy.config_values._built  # nothing built yet
    assert list(lazy.config_values) == list(eager.config_values)
    assert dict(lazy.config_values.items()) == eager.config_values
    assert list(lazy.components) == list(eager.components)


def test_a_lazy_sessions_configs_follow_gradios_updates_of_them() -> None:
    demo = _app_blocks()
    eager, lazy = SessionState(demo), LazySessionState(demo)
    box = next(key for key, block in demo.blocks.items() if isinstance(block, gr.Textbox))
    for state in (eager, lazy):
        state._update_value_in_config(box, "scale")
        state[box] = gr.Textbox(label="tasks", value="orientation")  # an event's component update
        state._update_value_in_config(box, "position")
    assert lazy.config_values[box] == eager.config_values[box]
    assert lazy.config_values[box]["props"]["value"] == "position"
    assert dict(lazy.config_values.items()) == eager.config_values
    del lazy.config_values[box]
    assert box not in lazy.config_values and len(lazy.config_values) == len(eager.config_values) - 1


def test_the_state_holder_makes_lazy_sessions_once_the_seam_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradio.state_holder, "SessionState", SessionState)  # as Gradio ships it
    assert build_session_configs_lazily() is True and build_session_configs_lazily() is True
    demo = _app_blocks()
    holder = StateHolder()
    holder.set_blocks(demo)
    assert isinstance(holder["a visitor"], LazySessionState)
    monkeypatch.setattr(gradio.state_holder, "SessionState", object)  # a Gradio that changed its sessions
    assert build_session_configs_lazily() is False and gradio.state_holder.SessionState is object


def test_a_lazy_sessions_configs_are_built_once_when_threads_read_them_at_once() -> None:
    import threading

    demo = _app_blocks()
    lazy = LazySessionState(demo)
    keys = list(lazy.config_values)
    built: list[int] = []
    real = lazy.config_values._blocks_config.config_for_block

    def counting(key: int, rendered: list, block: object) -> dict:
        built.append(key)
        return real(key, rendered, block)

    lazy.config_values._blocks_config.config_for_block = counting
    start = threading.Barrier(8)
    seen: list[list[dict]] = []

    def reader() -> None:
        start.wait()
        seen.append([lazy.config_values[key] for key in keys])

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(built) == sorted(keys) and len(seen) == 8  # each config built once, every reader answered
    assert all(configs == seen[0] for configs in seen)
