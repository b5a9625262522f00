"""Bank loads and predictions with separate limits, so that a slow or hostile load never holds a prediction slot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from PIL import Image

from kf_model.errors import (
    BusyError,
)
from kf_model.serving.predict import Prediction, api_result, no_tasks, require_image
from kf_model.serving.registry import BankEntry, BankRegistry, still_loading
from kf_model.serving.workers import PredictionWorkers

LOADS = 2  # bank loads at once (PredictionGate); MAX_WAITING_LOADS more may wait, further ones are refused
MAX_WAITING_LOADS = 8


class PredictionGate:
    """Predictions and bank loads with separate limits, so that a slow (or hostile) load never holds a
    prediction slot.

    At most ``predictions`` forward passes run at once; at most ``loads`` bank loads run at once and
    ``waiting_loads`` more wait for one of them; a request that needs a load beyond that is refused at once
    (:class:`~kf_model.errors.BusyError`), and so is one that needs a bank another request is loading
    (:class:`~kf_model.errors.BankLoadingError`: one load per bank, each file downloaded once). Requests on
    banks already loaded never wait for a load: the app gives its prediction events ``capacity`` slots, so
    ``predictions`` of them stay free whatever loads do.
    """

    def __init__(self, registry: BankRegistry, *, predictions: int = 4, loads: int = LOADS,
                 waiting_loads: int = MAX_WAITING_LOADS, workers: PredictionWorkers | None = None) -> None:
        if predictions < 1 or loads < 1 or waiting_loads < 0:
            raise ValueError(f"PredictionGate needs predictions >= 1, loads >= 1, waiting_loads >= 0; got "
                             f"{predictions}, {loads}, {waiting_loads}")
        self.registry = registry
        self.predictions, self.loads, self.waiting_loads = predictions, loads, waiting_loads
        self.capacity = predictions + loads + waiting_loads
        self._predictions = threading.BoundedSemaphore(predictions)
        self._loads = threading.BoundedSemaphore(loads)
        self._loads_in_flight = 0
        self._count_lock = threading.Lock()
        self.workers = workers  # bundled banks' predictions in other processes (serving.workers), when given

    @property
    def loads_in_flight(self) -> int:
        """Loads running or waiting to run."""
        with self._count_lock:
            return self._loads_in_flight

    def load(self, bank: str | None, tasks: Iterable[str] | str | None) -> BankEntry:
        """``registry.load`` under the load limit; refuses at once when the load slots and their queue are full."""
        return self._limited(lambda: self.registry.load(bank, tasks))

    def _limited(self, load: Callable[[], BankEntry]) -> BankEntry:
        with self._count_lock:
            if self._loads_in_flight >= self.loads + self.waiting_loads:
                raise BusyError(f"the app is busy loading {self._loads_in_flight} other banks; try again in a "
                                "moment (banks already loaded keep answering)")
            self._loads_in_flight += 1
        try:
            with self._loads:
                return load()
        finally:
            with self._count_lock:
                self._loads_in_flight -= 1

    def _refuse_while_loading(self, bank: str | None, entry: BankEntry | None) -> None:
        """A request that needs a bank another request is loading is answered at once ("loading"): it takes
        neither a load slot nor a prediction slot, and the bank's files are downloaded once."""
        if self.registry.loading(bank):
            raise still_loading(entry.key if entry is not None else str(bank))

    def api_predict(self, image: str | os.PathLike | None, bank: str | None,
                    tasks: Iterable[str] | str | None) -> dict[str, Any]:
        """``registry.api_predict`` through the gate: no task means every task (a Hub manifest fetched for that
        counts as a load)."""
        require_image(image)
        if no_tasks(tasks):
            entry = self.registry.cached(bank)
            if entry is None:
                self._refuse_while_loading(bank, None)
                entry = self._limited(lambda: self.registry.get(bank))
            tasks = entry.task_names
        return api_result(self.predict(image, bank, tasks))

    def predict(self, image: str | os.PathLike | Image.Image | None, bank: str | None,
                tasks: Iterable[str] | str | None, *, invert: bool | None = None) -> Prediction:
        """``registry.predict``, loading first (outside the prediction slots) what the request needs."""
        require_image(image)
        entry = self.registry.cached(bank)
        if entry is None or not entry.is_loaded(tasks):
            self._refuse_while_loading(bank, entry)
            entry = self.load(bank, tasks)
        with self._predictions:
            if self.workers is not None and entry.kind == "bundled":
                answer = self.workers.predict(image, entry.key, tasks, invert)
                if answer is not None:
                    return answer
            return self.registry.predict(image, entry, tasks, invert=invert)
