"""Which runtime answers the app's predictions: torch, or onnxruntime on the assembled network of the tick set,
exported once per (bank, revision, tick set) and cached (bounded).

``KF_RUNTIME`` / ``python app.py --runtime``: ``torch`` (the app's default); ``auto``: once a tick set has been
asked for ``EXPORT_AFTER`` times, its network is exported, then both runtimes answer the same image alternately a few
times and the faster median serves that tick set from then on; ``onnxruntime`` (every tick set exported at its first
request). Counting first keeps the exports (seconds of CPU each) for the tick sets visitors ask for most:
exporting every new one took the CPU from the predictions under many distinct tick sets. A first-use
measurement rather than a recorded benchmark: the figure that matters is this machine's, with this network and
this thread setting (the bench measured onnxruntime at 0.35x torch's time at batch 1 on a 2-core CPU, and 1.0x at
batch 256: the answer depends on the machine).

A visitor never waits for an export (~5-20 s with torch's exporter): the first request of a tick set is answered
by torch, and the request that makes it popular starts the export in one background thread (exports are serialized in
:func:`kf_model.export.onnx.export_onnx` anyway); later requests use onnxruntime once it is ready. Torch also
serves every GPU (onnxruntime runs here on the CPU only), training, and any bank whose export or run failed:
that failure is logged once per bank, and the visitor still gets torch's answer.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import statistics
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kf_model.bank import FactorBank
from kf_model.errors import InvalidArgumentError
from kf_model.export.onnx import FEATURES_OUTPUT, export_onnx
from kf_model.models.factor import AssembledNetwork
from kf_model.serving.export import ScratchDir
from kf_model.serving.memory import BoundedCache
from kf_model.serving.predict import forward_pass

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
MAX_SESSIONS = 32  # tick sets served by onnxruntime, over all banks ...
MAX_SESSION_BYTES = 512 * 2**20  # ... and their weight (a session holds about twice its file)
MAX_PENDING = 4  # exports queued at once; a tick set not queued is queued by its next request
MAX_FAILED_BANKS = 256
MEASURE_REPEATS = 15  # per runtime, after a warm-up call each (auto)
EXPORT_AFTER = 8  # auto: requests of a tick set before it is exported (counted anew once it is queued)
MAX_COUNTED = 4096  # tick sets whose requests are counted (the least recently asked forgotten first)
WORKER_IDLE_S = 30.0  # the export thread ends after this long without work

Probabilities = dict[str, torch.Tensor]
BankId = tuple[str, str | None]  # (bank key, Hub commit or None)


def check_runtime(value: object) -> str:
    """The runtime setting, checked: one of RUNTIMES (any case, spaces stripped)."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in RUNTIMES:
        raise InvalidArgumentError(f"runtime must be one of {', '.join(RUNTIMES)} (KF_RUNTIME / --runtime), "
                                   f"got {value!r}")
    return text


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def faster_runtime(torch_seconds: Sequence[float], onnx_seconds: Sequence[float]) -> str:
    """"onnxruntime" when its median time is below torch's, else "torch" (a tie keeps torch)."""
    return "onnxruntime" if statistics.median(onnx_seconds) < statistics.median(torch_seconds) else "torch"


@dataclass
class OnnxNetwork:
    """An onnxruntime session of an assembled network exported with ``features=True``: answers as
    :func:`kf_model.serving.predict.forward_pass` does (probabilities of one image, pooled CKN features)."""

    session: Any  # onnxruntime.InferenceSession (thread-safe: one session serves concurrent requests)
    tasks: list[str]
    nbytes: int

    @classmethod
    def load(cls, path: Path, threads: int) -> OnnxNetwork:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy wait on shared cores
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        if not names or names[-1] != FEATURES_OUTPUT:
            raise ValueError(f"{path.name} has no {FEATURES_OUTPUT!r} output")
        return cls(session, names[:-1], 2 * path.stat().st_size)

    def __call__(self, x: torch.Tensor) -> tuple[Probabilities, torch.Tensor]:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        *logits, features = self.session.run(None, {"image": image})
        probabilities = {name: torch.from_numpy(value[0]).float().softmax(dim=-1) for name, value in
                         zip(self.tasks, logits, strict=True)}
        return probabilities, torch.from_numpy(features).float()


@dataclass
class RuntimeChoice:
    """What serves one tick set: ``network`` (onnxruntime) or None (torch, measured faster), and why."""

    network: OnnxNetwork | None
    reason: str

    @property
    def nbytes(self) -> int:
        return self.network.nbytes if self.network is not None else 0


def measure(torch_call: Callable[[], Any], onnx_call: Callable[[], Any], repeats: int = MEASURE_REPEATS
            ) -> tuple[list[float], list[float]]:
    """Seconds per call of each side, timed alternately (one warm-up call each)."""
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    sides = {"torch": torch_call, "onnx": onnx_call}
    for side in sides.values():
        side()
    for i in range(repeats):
        for name in ("torch", "onnx") if i % 2 == 0 else ("onnx", "torch"):
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return times["torch"], times["onnx"]


class ServingRuntime:
    """The runtime of a registry's predictions (see the module docstring). Thread-safe."""

    def __init__(self, setting: str = "torch", device: torch.device | str = "cpu", *,
                 max_sessions: int = MAX_SESSIONS, max_bytes: int = MAX_SESSION_BYTES,
                 export_after: int | None = None) -> None:
        self.setting = check_runtime(setting)
        self.export_after = (EXPORT_AFTER if self.setting == "auto" else 1) if export_after is None else export_after
        self.problem: str | None = None  # why onnxruntime serves nothing, when it was asked for
        if self.setting != "torch" and torch.device(device).type != "cpu":
            self.problem = f"onnxruntime runs on the CPU here; the predictions run on {torch.device(device)}: torch"
        elif self.setting != "torch" and not onnxruntime_installed():
            self.problem = "onnxruntime is not installed (pip install onnxruntime): serving with torch"
        if self.problem is not None:
            (log.warning if self.setting == "onnxruntime" else log.info)("runtime %s: %s", self.setting, self.problem)
        self.uses_onnx = self.setting != "torch" and self.problem is None
        self._choices: BoundedCache = BoundedCache(max_sessions, max_bytes, lambda choice: choice.nbytes)
        self._failed: OrderedDict[BankId, str] = OrderedDict()
        self._pending: dict[tuple, Future] = {}
        self._asked: OrderedDict[tuple, int] = OrderedDict()  # requests of each tick set not exported yet
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._scratch = ScratchDir("kf-runtime-")  # removed at exit, even when an export is cut short

    def forward(self, bank_id: BankId, bank: FactorBank, tasks: Sequence[str], network: AssembledNetwork,
                x: torch.Tensor) -> tuple[Probabilities, torch.Tensor, str]:
        """One prediction -> (probabilities, pooled features, the runtime that answered)."""
        onnx_network = self.onnx_network(bank_id, bank, tasks)
        if onnx_network is not None:
            try:
                return (*onnx_network(x), "onnxruntime")
            except Exception as error:  # any failure of the runtime: this bank falls back to torch for good
                self._fail(bank_id, f"onnxruntime failed to run it ({type(error).__name__}: {error})")
        return (*forward_pass(network, x), "torch")

    def onnx_network(self, bank_id: BankId, bank: FactorBank, tasks: Sequence[str]) -> OnnxNetwork | None:
        """The tick set's onnxruntime network when it is ready and chosen; else None (and its export queued)."""
        if not self.uses_onnx:
            return None
        key = (*bank_id, tuple(tasks))
        if self.failure(bank_id) is not None:
            return None
        choice = self._choices.get(key)
        if choice is not None:
            return choice.network
        with self._lock:
            if key in self._pending or not self._popular(key) or len(self._pending) >= MAX_PENDING:
                return None
            self._asked.pop(key, None)
            if self._worker is None:  # a daemon: stopping the app never waits for an export
                self._worker = threading.Thread(target=self._work, name="kf-onnx-export", daemon=True)
                self._worker.start()
            self._pending[key] = Future()
            self._jobs.put((key, bank, list(tasks)))
        return None

    def _popular(self, key: tuple) -> bool:
        """Count one more request of the tick set (lock held): has it been asked for often enough to export?"""
        self._asked[key] = self._asked.pop(key, 0) + 1
        while len(self._asked) > MAX_COUNTED:
            self._asked.popitem(last=False)
        return self._asked[key] >= self.export_after

    def choice(self, bank_id: BankId, tasks: Sequence[str]) -> RuntimeChoice | None:
        """What serves this tick set, once decided (None: not yet, or torch by setting or failure)."""
        return self._choices.get((*bank_id, tuple(tasks)))

    def failure(self, bank_id: BankId) -> str | None:
        with self._lock:
            return self._failed.get(bank_id)

    def wait(self, timeout: float | None = None) -> None:
        """Until the exports queued now are done (tests, the benchmark, a warm-up)."""
        with self._lock:
            futures = list(self._pending.values())
        wait_futures(futures, timeout=timeout)

    # ------------------------------------------------------------------ the background work
    def _work(self) -> None:
        """The export thread: one tick set at a time, in the order asked; it ends once idle for a while."""
        while True:
            try:
                key, bank, tasks = self._jobs.get(timeout=WORKER_IDLE_S)
            except queue.Empty:
                with self._lock:  # a job queued meanwhile finds no worker and starts one
                    if self._jobs.empty():
                        self._worker = None
                        return
                continue
            try:
                self._prepare(key, bank, tasks)
            finally:
                with self._lock:
                    future = self._pending.pop(key, None)
                if future is not None:
                    future.set_result(None)

    def _prepare(self, key: tuple, bank: FactorBank, tasks: list[str]) -> None:
        """Export the tick set (a fresh assembly: the served network's caches stay untouched), load it and, for
        ``auto``, time both runtimes on one image."""
        bank_id = key[:2]
        try:
            network = bank.assemble(tasks).to("cpu").eval()
            path = self._scratch.path / f"{uuid.uuid4().hex}.onnx"
            try:
                export_onnx(network, path, bank.input_spec, features=True)
                onnx_network = OnnxNetwork.load(path, torch.get_num_threads())
            finally:
                path.unlink(missing_ok=True)  # the session holds the graph: the file is not needed
            choice = RuntimeChoice(onnx_network, "KF_RUNTIME=onnxruntime")
            if self.setting == "auto":
                choice = self._measured(onnx_network, network, bank)
            log.info("%s %s: %s (%s)", bank_id[0], ", ".join(tasks),
                     "onnxruntime" if choice.network else "torch", choice.reason)
            self._choices.setdefault(key, choice)
        except Exception as error:  # an exporter or a runtime that cannot take this network: torch serves it
            self._fail(bank_id, f"its export to onnxruntime failed ({type(error).__name__}: {error})")

    @staticmethod
    def _measured(onnx_network: OnnxNetwork, network: AssembledNetwork, bank: FactorBank) -> RuntimeChoice:
        spec = bank.input_spec
        x = torch.rand(1, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
        torch_times, onnx_times = measure(lambda: forward_pass(network, x), lambda: onnx_network(x))
        winner = faster_runtime(torch_times, onnx_times)
        reason = (f"auto: onnxruntime {1000 * statistics.median(onnx_times):.2f} ms vs torch "
                  f"{1000 * statistics.median(torch_times):.2f} ms per image, medians of {len(onnx_times)}")
        return RuntimeChoice(onnx_network if winner == "onnxruntime" else None, reason)

    def _fail(self, bank_id: BankId, reason: str) -> None:
        with self._lock:
            if bank_id in self._failed:
                return
            self._failed[bank_id] = reason
            while len(self._failed) > MAX_FAILED_BANKS:
                self._failed.popitem(last=False)
        log.warning("bank %s: %s; it is served with torch from now on", bank_id[0], reason)
