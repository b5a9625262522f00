"""The answer panel: the familiarity check, the headline answer, the table per task, timings and the details."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from kf_model import serving
from kf_model.ui.widgets import message

TABLE_HEADERS = ["task", "answer", "%", "details"]
START_INFO = message("Upload, paste or draw an image to see the predictions.")


@dataclass
class Answer:
    familiarity: gr.Markdown
    answer: gr.Markdown
    table: gr.Dataframe
    info: gr.Markdown
    bars: gr.BarPlot
    processed: gr.Image

    @property
    def outputs(self) -> list[gr.components.Component]:
        """What a prediction writes, in the order of :func:`prediction_outputs`."""
        return [self.familiarity, self.answer, self.table, self.info, self.bars, self.processed]


def build_answer() -> Answer:
    """The results column (call inside it)."""
    familiarity = gr.Markdown(elem_id="familiarity")
    answer = gr.Markdown(visible=False, elem_id="answer", label="Which of the ticked classes is it?")
    table = gr.Dataframe(empty_table(), headers=TABLE_HEADERS, interactive=False, wrap=True,
                         elem_id="task-table", max_height=360, show_label=False)
    info = gr.Markdown(START_INFO, elem_id="latency")
    with gr.Accordion("Detail: confidence per task and the network's input", open=False, elem_id="detail"):
        bars = gr.BarPlot(x="bar", y="confidence", y_lim=[0, 1], label="Confidence per task",
                          x_title="prediction (one-vs-rest banks: P(class))",
                          y_title="probability", height=220, elem_id="bars", x_label_angle=-30)
        processed = gr.Image(label="Network input", type="pil", format="png", buttons=["download"],
                             interactive=False, height=200, elem_id="processed")
    return Answer(familiarity, answer, table, info, bars, processed)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=TABLE_HEADERS)


def empty_outputs(info: str) -> list[Any]:
    """No answer: every result cleared, ``info`` in the line below the table."""
    return [gr.update(value="", elem_classes=[]), gr.update(value="", visible=False),
            gr.update(value=empty_table(), elem_classes=[], label=None, show_label=False), info,
            gr.update(value=None), None]


def familiarity_text(prediction: serving.Prediction, entry: serving.BankEntry) -> tuple[str, list[str]]:
    """The familiarity line: a warning in words when the image is unlike the bank's data, neutral words when not."""
    if prediction.familiarity is None:
        return (message("This bank has no familiarity statistics: it cannot tell whether the image looks like "
                        "its training data."), [])
    share = prediction.familiarity["familiarity"]
    if not prediction.unfamiliar:
        return message(f"Familiarity check passed: the image resembles the bank's training data "
                       f"(familiarity {share:.0%})."), []
    reason = prediction.familiarity.get("reason") or (
        "it is less typical than every one of the bank's own test images" if share == 0
        else f"only {share:.0%} of the bank's own test images look less typical")
    return (f"⚠ **This image does not look like what the bank was trained on** (familiarity {share:.0%}: "
            f"{reason}). The bank recognises {entry.input_description}. **No answer is given: the table below "
            "shows the network's guesses only.**", ["kf-warn"])


def untested_text(untested: dict[str, str]) -> str:
    """Plain words for the ticked tasks whose "yes" the bank was never checked on."""
    names = ", ".join(sorted(untested))
    return (f"**Untested:** {names}. The bank never saw one of these among its distillation images, so a "
            "\"no\" from them is weak evidence and a \"yes\" was never checked.")


def prediction_outputs(prediction: serving.Prediction, entry: serving.BankEntry) -> list[Any]:
    """An answered image; a flagged one gets no headline and its table greyed, labelled as guesses."""
    warning, classes = familiarity_text(prediction, entry)
    answer = None if prediction.unfamiliar else prediction.answer()
    answer_md = "" if answer is None else f"**{answer[0]}**"
    rows = pd.DataFrame(prediction.table(), columns=TABLE_HEADERS)
    if prediction.unfamiliar:
        table = gr.update(value=rows, elem_classes=["kf-guesses"], show_label=True,
                          label="Guesses only: the image is unlike the bank's training data")
    else:
        table = gr.update(value=rows, elem_classes=[], label=None, show_label=False)
    frame = pd.DataFrame(prediction.confidences())
    t = prediction.timings
    lines = [f"**{t['total_ms']:.1f} ms** on **{prediction.device}** (preprocessing {t['preprocess_ms']:.1f} ms, "
             f"network {t['network_ms']:.1f} ms with {prediction.runtime}; {len(prediction.tasks)} task(s), one CKN "
             "pass)."]
    if prediction.cached:
        lines[0] = "Answered at once: this example's answer was kept. When first computed: " + lines[0]
    if prediction.notes:
        lines.append("Input: " + "; ".join(prediction.notes) + ".")
    if prediction.untested:
        lines.append(untested_text(prediction.untested))
    return [gr.update(value=warning, elem_classes=classes), gr.update(value=answer_md, visible=bool(answer_md)),
            table, "\n\n".join(lines), frame, prediction.preview()]
