"""The answers to the app's example images, kept: a click on an example (or the page's first screen, which answers
one) answers at once, without running the network again.

An image is an example when its bytes are an example file's (Gradio hands the app a copy of the file, under its
own cache path): the size is compared first, so a visitor's own upload is hashed only when its size is an
example's. An answer is kept per bank (its key, Hub commit and CKN fingerprint), ticked tasks, invert setting and
example; the first request computes it through the gate like any other (no lock held meanwhile, so no visitor
ever waits for another's example), and the cache is bounded by a count and by bytes (least recently used first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from kf_model.errors import KFError
from kf_model.serving.examples import Example
from kf_model.serving.gate import PredictionGate
from kf_model.serving.memory import BoundedCache
from kf_model.serving.predict import Prediction

MAX_EXAMPLE_ANSWERS = 256  # answers kept: every example of the bundled banks, with a few tick sets each
MAX_EXAMPLE_ANSWER_BYTES = 64 * 2**20  # ... and their bytes (mostly the network's input preview, 0.6 MB at 224 px)
ANSWER_OVERHEAD_BYTES = 16 * 2**10  # the probabilities, notes and timings of one answer, roughly


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def answer_bytes(prediction: Prediction) -> int:
    processed = prediction.processed
    return processed.element_size() * processed.nelement() + ANSWER_OVERHEAD_BYTES


class ExampleAnswers:
    """A bounded cache of the example images' answers, in front of :meth:`PredictionGate.predict`."""

    def __init__(self, examples: Sequence[Example], *, max_answers: int = MAX_EXAMPLE_ANSWERS,
                 max_bytes: int = MAX_EXAMPLE_ANSWER_BYTES) -> None:
        self._digests: dict[int, set[str]] = {}  # file size -> the sha256 of the examples of that size
        for example in examples:
            try:
                size = example.path.stat().st_size
                self._digests.setdefault(size, set()).add(file_digest(example.path))
            except OSError:
                continue
        self._answers: BoundedCache[tuple[Any, ...], Prediction] = BoundedCache(max_answers, max_bytes, answer_bytes)

    def __len__(self) -> int:
        return len(self._answers)

    def example_digest(self, image: object) -> str | None:
        """The digest of ``image`` when it is a file with an example's bytes, else None (PIL images, drawings)."""
        if isinstance(image, Image.Image) or not isinstance(image, (str, os.PathLike)) or not str(image):
            return None
        try:
            candidates = self._digests.get(os.stat(image).st_size)
            if not candidates:
                return None
            digest = file_digest(image)
        except OSError:
            return None
        return digest if digest in candidates else None

    def predict(self, gate: PredictionGate, image: str | os.PathLike | Image.Image | None, bank: str | None,
                tasks: Iterable[str] | str | None, *, invert: bool | None = None) -> Prediction:
        """``gate.predict``, answered from the cache when the image is an example already answered this way."""
        digest = self.example_digest(image)
        if digest is None:
            return gate.predict(image, bank, tasks, invert=invert)
        key = self._key(gate, bank, tasks, invert, digest)
        kept = None if key is None else self._answers.get(key)
        if kept is not None:
            return dataclasses.replace(kept, cached=True)
        prediction = gate.predict(image, bank, tasks, invert=invert)
        key = self._key(gate, bank, prediction.tasks, invert, digest)  # the bank is loaded now
        if key is not None:
            self._answers.setdefault(key, prediction)
        return prediction

    @staticmethod
    def _key(gate: PredictionGate, bank: str | None, tasks: Iterable[str] | str | None, invert: bool | None,
             digest: str) -> tuple[Any, ...] | None:
        """(bank, its commit and CKN, the ticked tasks in the bank's order, invert, example); None while the bank
        is not loaded, or when the request is refused (the gate then says why)."""
        try:
            entry = gate.registry.cached(bank)
            names = None if entry is None else tuple(entry.canonical(tasks))
        except KFError:
            return None
        if entry is None:
            return None
        return entry.key, entry.commit, entry.manifest.ckn_fingerprint, names, invert, digest
