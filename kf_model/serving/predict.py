"""One prediction: the forward pass (CUDA autocast on a GPU, ``spaces.GPU`` on ZeroGPU) and its answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from kf_model.devices import autocast_dtype
from kf_model.errors import (
    RequestError,
)
from kf_model.models.factor import AssembledNetwork
from kf_model.serving.familiarity import pooled_features

try:  # ZeroGPU Spaces: `spaces` must be imported before CUDA is initialised; elsewhere it is not needed
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

from kf_model.serving.images import PREVIEW_SIDE, tensor_to_preview

TOP_K = 3
INPUT_KEY = "_input"  # /predict's result: this key reports on the input (familiarity), every other is a task


def forward_pass(network: AssembledNetwork, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass -> ({task: probabilities [num_classes]}, pooled CKN features [1, D]), on the CPU, float32.

    The features come from the same pass (the CKN runs once): they feed the familiarity score.
    """
    device = x.device
    autocast = (torch.autocast("cuda", dtype=autocast_dtype()) if device.type == "cuda"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        output = network(x, return_features=True)
    probabilities = {name: value.float().softmax(dim=-1)[0] for name, value in output.tsn.logits.items()}
    features = pooled_features(output.ckn)
    if device.type == "cuda":  # one sync, after the pass
        probabilities = {name: value.cpu() for name, value in probabilities.items()}
        features = features.cpu()
    return probabilities, features


if spaces is not None:  # ZeroGPU: the GPU is attached only inside functions wrapped by spaces.GPU
    forward_pass = spaces.GPU(duration=20)(forward_pass)


def no_tasks(tasks: Iterable[str] | str | None) -> bool:
    """None, [] or "" (the API's "every task")."""
    return not tasks or (isinstance(tasks, str) and not tasks.strip())


def api_result(prediction: Prediction) -> dict[str, Any]:
    """What ``/predict`` returns: ``{task: {label: probability}}`` plus the report on the input (``_input``)."""
    return {**prediction.to_json(), INPUT_KEY: prediction.input_report()}


def require_image(image: object) -> None:
    if image is None or (isinstance(image, str) and not image):
        raise RequestError("no image: upload a picture, paste one from the clipboard or draw on the sketchpad")


@dataclass
class Prediction:
    """One answered request."""

    bank: str
    tasks: list[str]
    probabilities: dict[str, dict[str, float]]  # {task: {label: probability}}, every class
    processed: torch.Tensor  # [C, H, W] in [0,1]: what the network saw
    inverted: bool
    notes: list[str]
    one_vs_rest: bool
    timings: dict[str, float]
    device: str
    familiarity: dict[str, Any] | None = None  # FamiliarityModel.score() of this image, None: no statistics
    expects: str = ""  # what a good input looks like, in words
    untested: dict[str, str] = field(default_factory=dict)  # ticked tasks whose "yes" was never checked: why
    runtime: str = "torch"  # what ran the network: "torch" or "onnxruntime" (kf_model.serving.runtime)
    cached: bool = False  # an example's answer kept from an earlier request (serving.ExampleAnswers)

    @property
    def unfamiliar(self) -> bool:
        return bool(self.familiarity and self.familiarity["unfamiliar"])

    def input_report(self) -> dict[str, Any]:
        """The ``_input`` part of /predict's result: the familiarity check and what the bank expects."""
        report: dict[str, Any] = {"expects": self.expects, "inverted": self.inverted}
        if self.familiarity is None:
            report.update(familiarity=None, unfamiliar=None,
                          reason="this bank has no familiarity statistics: it cannot tell")
        else:
            report.update(familiarity=self.familiarity["familiarity"], unfamiliar=self.familiarity["unfamiliar"],
                          reason=self.familiarity.get("reason", ""))
        report["untested_tasks"] = dict(self.untested)
        return report

    def answer(self) -> tuple[str, dict[str, float]] | None:
        """One-vs-rest banks with 2+ ticked tasks: (the one answer in words, {class: P(class)}); else None.

        "None of the ticked classes" when no class is more likely than not: the argmax alone would name a
        class that its own factor says the image is not. An untested task's "no" is no evidence (the photograph
        bank's cat factor never saw a cat and says "no" to one): the headline then says which it cannot tell.
        """
        combined = self.combined()
        if combined is None or len(combined) < 2:
            return None
        untested = [self.positive(task)[0] for task in self.tasks if task in self.untested]
        checked = {label: q for label, q in combined.items() if label not in untested}
        best, p = max(checked.items(), key=lambda item: item[1]) if checked else (None, 0.0)
        if p > 0.5:
            return f"{best} ({p:.0%})", combined
        guess, q = max(((label, combined[label]) for label in untested), key=lambda item: item[1], default=(None, 0))
        if q > 0.5:  # an unchecked "yes" is no answer either: never the headline's claim
            return (f"Cannot tell: {guess} scores {q:.0%}, but this bank was never checked on {guess} (untested)",
                    combined)
        if not checked:
            return f"Cannot tell: the bank was never checked on {', '.join(untested)} (untested)", combined
        if not untested:
            return f"None of the {len(checked)} ticked classes (the likeliest, {best}, is at {p:.0%})", combined
        likeliest = f"the likeliest, {best}, is at" if len(checked) > 1 else f"{best} is at"
        return (f"None of the ticked classes the bank was checked on ({likeliest} {p:.0%}); it cannot tell "
                f"{', '.join(untested)} (untested)", combined)

    def table(self) -> list[list[Any]]:
        """One row per task: [task, answer, probability in %, runners-up]; compact and sortable."""
        rows = []
        for task in self.tasks:
            ranked = self.top(task, TOP_K)
            if self.one_vs_rest:
                label, p = self.positive(task)
                verdict = label if p > 0.5 else next(iter(self.probabilities[task]))  # labels: ["not X", "X"]
                share = max(p, 1 - p)
                if task in self.untested:  # a "no" from a factor never shown one is no evidence
                    verdict, share = (f"{label} (unchecked)", p) if p > 0.5 else ("cannot tell", p)
                rows.append([task, verdict, round(100 * share, 1), f"P({label}) = {p:.1%}"])
            else:
                label, p = ranked[0]
                rows.append([task, label, round(100 * p, 1), ", ".join(f"{lab} {q:.0%}" for lab, q in ranked[1:])])
            if task in self.untested:
                rows[-1][3] += f" · untested: {self.untested[task]}"
        return rows

    def to_json(self, digits: int = 6) -> dict[str, dict[str, float]]:
        return {task: {label: round(p, digits) for label, p in probs.items()}
                for task, probs in self.probabilities.items()}

    def top(self, task: str, k: int = TOP_K) -> list[tuple[str, float]]:
        return sorted(self.probabilities[task].items(), key=lambda item: -item[1])[:k]

    def positive(self, task: str) -> tuple[str, float]:
        """One-vs-rest banks: (class name, P(it is that class)); the positive class is index 1."""
        label = list(self.probabilities[task])[1]
        return label, self.probabilities[task][label]

    def combined(self) -> dict[str, float] | None:
        """One-vs-rest banks: {class name: P(positive)} over the ticked classes (argmax = the answer)."""
        if not self.one_vs_rest:
            return None
        return dict(self.positive(task) for task in self.tasks)

    def confidences(self) -> list[dict[str, Any]]:
        """Rows for a bar plot: per task, P(positive) for one-vs-rest banks, else the top class's probability."""
        rows = []
        for task in self.tasks:
            if self.one_vs_rest:
                label, p = self.positive(task)
                rows.append({"bar": label, "task": task, "class": label, "confidence": p})
            else:
                label, p = self.top(task, 1)[0]
                rows.append({"bar": f"{task}: {label}", "task": task, "class": label, "confidence": p})
        return rows

    def preview(self, side: int = PREVIEW_SIDE) -> Image.Image:
        return tensor_to_preview(self.processed, side)
