"""Predictions on the app's bundled banks in worker processes, so that a second core serves visitors.

The app's own process runs Gradio and holds Python's GIL for most of a request: in ``make bench`` one client
already kept it about one core busy (about 14 ms of its CPU a request, half of it Gradio's own path), so 16
clients got no more predictions a second than one. A prediction (image checks, preprocessing, the network,
familiarity: the other half) runs here in a process of its own, which has its own GIL. ``KF_PREDICT_WORKERS``:
``auto`` (the default: one worker on a CPU machine with two cores or more, none otherwise), or ``n`` (0: everything in
the app's process). Only bundled banks and image files go to a worker (a Hub bank, a drawing or anything a worker
cannot take is answered in the app's process, as before); until the workers have loaded their banks, and after one
fails, the app's process answers. A worker's kf error comes back as the same error, with the same message.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kf_model.errors as errors
from kf_model.errors import KFError
from kf_model.serving.predict import Prediction

log = logging.getLogger(__name__)

MAX_WORKERS = 8
_registry: Any = None  # the worker process's own BankRegistry (bundled banks only)


def check_workers(value: object) -> int | str:
    """``KF_PREDICT_WORKERS``: "auto" or a whole number from 0 to MAX_WORKERS."""
    text = str(value).strip().lower()
    if text == "auto":
        return text
    if not text.isdigit() or int(text) > MAX_WORKERS:
        raise KFError(f"KF_PREDICT_WORKERS must be 'auto' or a whole number from 0 to {MAX_WORKERS}, got {value!r}")
    return int(text)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(setting: int | str, device: torch.device | str, cores: int | None = None) -> int:
    """How many workers a setting means. "auto": one on a CPU with two cores or more (the second core serves
    visitors while the first runs Gradio; one, not more, because each costs ~450 MB of its own memory), none on a
    GPU (each process would hold a CUDA context of its own) or on one core (nothing to gain)."""
    if setting != "auto":
        return int(setting)
    if torch.device(device).type != "cpu":
        return 0
    return 1 if (usable_cores() if cores is None else cores) >= 2 else 0


def _exit_with_the_app() -> None:
    """Leave when the app's process is gone, however it ended (a worker shares the pool's queues, so it would wait
    on them forever after a SIGTERM or SIGKILL of the app)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _start(factors_dir: str, device: str, runtime: str) -> None:
    global _registry
    threading.Thread(target=_exit_with_the_app, name="kf-exit-with-the-app", daemon=True).start()
    torch.set_num_threads(1)
    from kf_model.serving.registry import BankRegistry

    _registry = BankRegistry(factors_dir, allow_hub=False, device=device, runtime=runtime)


def _ready() -> list[str]:
    return list(_registry.bundled)


def _predict(image: str, bank: str, tasks: Any, invert: bool | None) -> tuple[str, Any]:
    """("ok", the prediction with its image as an array), ("error", (kf error class name, message)) or
    ("unexpected", what went wrong)."""
    try:
        prediction = _registry.predict(image, bank, tasks, invert=invert)
    except KFError as error:
        return "error", (type(error).__name__, str(error))
    except Exception as error:
        return "unexpected", repr(error)
    return "ok", replace(prediction, processed=prediction.processed.numpy())


def _error(name: str, message: str) -> KFError:
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, KFError):
        try:
            return kind(message)
        except TypeError:  # an error whose constructor wants more than a message
            pass
    return KFError(message)


class PredictionWorkers:
    """``workers`` processes, each with the bundled banks of ``factors_dir`` loaded; :meth:`predict` answers
    through one of them, or says (None) that the caller should answer itself."""

    def __init__(self, workers: int, factors_dir: str | os.PathLike, device: torch.device | str,
                 runtime: str) -> None:
        self.workers = workers
        self.banks: set[str] = set()
        self.problem: str | None = None
        self.answered = 0  # requests a worker answered (what a test or an operator can check)
        self._count = threading.Lock()
        context = multiprocessing.get_context("spawn")  # never fork a process that runs torch threads
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                         initargs=(str(Path(factors_dir)), str(device), runtime))
        self._warm: list[Future] = [self._pool.submit(_ready) for _ in range(workers)]
        self._shutdown = weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)  # or at exit

    @property
    def ready(self) -> bool:
        if self.problem is not None or not all(future.done() for future in self._warm):
            return False
        if not self.banks:
            try:
                self.banks = set(self._warm[0].result())
            except Exception as error:  # the worker could not start: the app answers itself
                self._give_up(f"the prediction workers did not start: {error!r}")
                return False
        return True

    def predict(self, image: object, bank: str, tasks: Any, invert: bool | None) -> Prediction | None:
        """The worker's answer, or None when a worker cannot take this request (then the caller answers)."""
        if not isinstance(image, str | os.PathLike) or not self.ready or bank not in self.banks:
            return None
        tasks = tasks if tasks is None or isinstance(tasks, str) else list(tasks)
        try:
            status, value = self._pool.submit(_predict, os.fspath(image), bank, tasks, invert).result()
        except Exception as error:  # a worker died: the app answers this request and every later one itself
            self._give_up(f"a prediction worker failed: {error!r}")
            return None
        if status == "error":
            raise _error(*value)
        if status == "unexpected":
            log.warning("a prediction worker raised %s; answered in the app's process", value)
            return None
        with self._count:
            self.answered += 1
        return replace(value, processed=torch.from_numpy(np.asarray(value.processed)))

    def _give_up(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
            log.warning("%s; predictions run in the app's process", problem)

    def close(self) -> None:
        self._shutdown()
