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
    return [gr.update(value="", elem_classes=[]), gr.update(value="", visible=False), empty_table(),
            info, gr.update(value=None), None]


def familiarity_text(prediction: serving.Prediction, entry: serving.BankEntry) -> tuple[str, list[str]]:
    if prediction.familiarity is None:
        return (message("This bank has no familiarity statistics: it cannot tell whether the image looks like "
                        "its training data."), [])
    share = prediction.familiarity["familiarity"]
    if prediction.unfamiliar:
        fewer = "none" if share == 0 else f"only {share:.0%}"
        return (f"⚠ **This image does not look like what the bank was trained on** (familiarity {share:.0%}: "
                f"{fewer} of its own test images look less typical). The bank recognises "
                f"{entry.input_description}. **Treat the answers below as guesses.**", ["kf-warn"])
    return message(f"Looks like the bank's training data (familiarity {share:.0%}).", "ok"), []


def prediction_outputs(prediction: serving.Prediction, entry: serving.BankEntry) -> list[Any]:
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
