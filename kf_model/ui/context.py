"""What every panel shares: the banks, the prediction gate, the example images and the app's scratch folders."""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from kf_model import serving
from kf_model.serving.workers import PredictionWorkers

# Which bundled bank a visitor sees first (and the API answers with when no bank is given): serving's BANK_ORDER.
BANK_ORDER = serving.BANK_ORDER


def allowed_paths(registry: serving.BankRegistry | None) -> list[str]:
    """Folders Gradio may serve files from: the examples and the bundled banks' evaluation figures."""
    allowed = [str(serving.EXAMPLES_DIR)]
    if registry is not None:
        allowed += [str(e.evaluation_dir) for e in registry.bundled.values() if e.evaluation_dir is not None]
    return allowed


class NewestWins:
    """Per browser session, only the newest prediction writes the outputs.

    Predictions run up to KF_CONCURRENCY at a time, so a slow older one (say, the bank switch's) may finish after a
    newer one (the example clicked next) and would overwrite its answer. Each prediction takes a ticket when it
    starts; one that is no longer the session's newest when it ends leaves the outputs alone.
    """

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._newest: OrderedDict[str, int] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()
        self._max_sessions = max_sessions

    def start(self, session: str) -> int:
        with self._lock:
            self._next += 1
            self._newest[session] = self._next
            self._newest.move_to_end(session)
            while len(self._newest) > self._max_sessions:
                self._newest.popitem(last=False)
            return self._next

    def is_newest(self, session: str, ticket: int) -> bool:
        with self._lock:
            return self._newest.get(session, ticket) == ticket


@dataclass
class AppContext:
    """The app's state shared by its panels (one per built demo)."""

    registry: serving.BankRegistry
    gate: serving.PredictionGate
    examples: list[serving.Example]
    exports: serving.ScratchDir  # made by the first export, removed with the demo or at exit
    figures: serving.ScratchDir  # a Hub bank's figures, copied out of the HF cache
    # the examples' answers, kept: a click on one answers at once (create() gives it the examples)
    answers: serving.ExampleAnswers = field(default_factory=lambda: serving.ExampleAnswers([]))
    newest: NewestWins = field(default_factory=NewestWins)
    _static: set[Path] = field(default_factory=set)  # folders registered with gr.set_static_paths

    @classmethod
    def create(cls, registry: serving.BankRegistry, examples_dir: str | os.PathLike, *, predictions: int,
               loads: int, workers: int = 0) -> AppContext:
        """``workers`` > 0: the bundled banks' predictions in that many processes (``serving.workers``)."""
        examples = serving.load_examples(examples_dir)
        pool = None
        if workers and registry.factors_dir is not None and registry.bundled:
            pool = PredictionWorkers(workers, registry.factors_dir, registry.device, registry.runtime.setting)
        gate = serving.PredictionGate(registry, predictions=predictions, loads=loads, workers=pool)
        return cls(registry, gate, examples,
                   serving.ScratchDir("kf-exports-"), serving.ScratchDir("kf-figures-"),
                   serving.ExampleAnswers(examples))

    # ------------------------------------------------------------------ banks
    def entry_of(self, key: str | None) -> serving.BankEntry:
        return self.registry.get(key)

    def ordered_bundled(self) -> list[str]:
        """The bundled banks in the order a visitor sees them (BANK_ORDER first)."""
        return serving.in_bank_order(self.registry.bundled)

    @property
    def first_bank(self) -> str | None:
        """The bank the page opens with, the API's default too: $KF_REPO's, else the first of BANK_ORDER the app
        has (what the registry's default is)."""
        default = self.registry.default
        if default is not None and default not in self.registry.bundled:
            return default
        return next(iter(self.ordered_bundled()), default)

    def first_entry(self) -> serving.BankEntry | None:
        return self.registry.get(self.first_bank) if self.first_bank else None

    def bank_choices(self, hub_keys: Sequence[str]) -> list[tuple[str, str]]:
        choices = [(self.registry.bundled[key].label, key) for key in self.ordered_bundled()]
        return choices + [(f"{key} (Hub)", key) for key in hub_keys if key not in self.registry.bundled]

    @staticmethod
    def task_choices(entry: serving.BankEntry) -> list[tuple[str, str]]:
        return [(f"{t.name}: {t.description}" if t.description else t.name, t.name) for t in entry.tasks]

    @staticmethod
    def default_tasks(entry: serving.BankEntry) -> list[str]:
        return entry.task_names if entry.kind == "bundled" else entry.task_names[:1]

    # ------------------------------------------------------------------ examples
    def examples_of(self, entry: serving.BankEntry | None) -> list[serving.Example]:
        return [] if entry is None else [e for e in self.examples if e.dataset == entry.dataset]

    def gallery_items(self, entry: serving.BankEntry | None) -> list[tuple[str, str]]:
        return [(str(e.path), e.caption) for e in self.examples_of(entry)]

    @staticmethod
    def truth_text(entry: serving.BankEntry, example: serving.Example) -> str:
        if example.reference:  # a photograph: no true label, the teacher's answers are the reference
            return example.reference_text()
        if entry.one_vs_rest:
            truth = next((label for label in example.labels.values() if not label.startswith("not ")), "?")
            text = f"**True class** of this held-out image: **{truth}**"
        else:
            text = "**True labels** of this held-out image: " + ", ".join(
                f"{task} = **{label}**" for task, label in example.labels.items())
        return text + (" (shown dark on white: the app inverts it back)" if example.inverted else "")

    def first_example(self, entry: serving.BankEntry | None) -> tuple[str | None, str]:
        example = next((e for e in self.examples_of(entry) if not e.inverted), None)
        return (None, "") if example is None or entry is None else (str(example.path), self.truth_text(entry, example))

    # ------------------------------------------------------------------ files the app serves
    def servable(self, path: Path | None) -> str | None:
        """A figure Gradio may serve: bundled ones are in allowed_paths, a Hub bank's are copied out of the cache."""
        if path is None:
            return None
        if any(Path(allowed) in path.parents for allowed in allowed_paths(self.registry)):
            return str(path)
        folder = self.figures.path  # made on first use: a server that never shows a Hub bank's figure makes none
        if folder not in self._static:
            gr.set_static_paths([folder])
            self._static.add(folder)
        copy = folder / f"{abs(hash(str(path))):x}" / path.name
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        return str(copy)
