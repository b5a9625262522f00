"""Prediction workers (kf_model/serving/workers.py): a bundled bank's prediction answered in another process is the
app process's answer; errors come back the same; what a worker cannot take, and everything after a worker dies, is
answered in the app's process; concurrent requests each get their own answer."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kf_model.errors import KFError, UnknownTaskError
from kf_model.serving import BankRegistry, PredictionGate
from kf_model.serving.workers import PredictionWorkers, check_workers, resolve_workers
from kf_model.utils import ASSETS_DIR

EXAMPLES = ASSETS_DIR / "examples"


def _wait(workers: PredictionWorkers) -> None:
    deadline = time.monotonic() + 120
    while not workers.ready and workers.problem is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers.ready, workers.problem


@pytest.fixture(scope="module")
def factors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("factors")
    (folder / "dsprites").symlink_to((ASSETS_DIR / "factors" / "dsprites").resolve(), target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def started(factors: Path) -> Iterator[tuple[BankRegistry, PredictionWorkers]]:
    registry = BankRegistry(factors, allow_hub=False, device="cpu")
    workers = PredictionWorkers(1, factors, "cpu", "torch")
    _wait(workers)
    yield registry, workers
    workers.close()


@pytest.fixture(scope="module")
def image() -> str:
    listing = json.loads((EXAMPLES / "examples.json").read_text())["examples"]
    return str(EXAMPLES / next(e["file"] for e in listing if e["dataset"] == "dsprites" and not e.get("inverted")))


def test_a_workers_answer_is_the_app_processs_and_its_errors_come_back_the_same(
        started: tuple[BankRegistry, PredictionWorkers], image: str) -> None:
    registry, workers = started
    assert workers.banks == {"dsprites"}
    here = registry.predict(image, "dsprites", ["shape", "pos_x"])
    there = workers.predict(image, "dsprites", ["shape", "pos_x"], None)
    assert there is not None and there.probabilities == here.probabilities
    assert torch.equal(there.processed, here.processed) and there.familiarity == here.familiarity
    assert (there.tasks, there.inverted, there.notes) == (here.tasks, here.inverted, here.notes)
    with pytest.raises(UnknownTaskError) as in_process:
        registry.predict(image, "dsprites", ["colour"])
    with pytest.raises(UnknownTaskError) as in_worker:
        workers.predict(image, "dsprites", ["colour"], None)
    assert str(in_worker.value) == str(in_process.value)
    from PIL import Image

    assert workers.predict(Image.open(image), "dsprites", ["shape"], None) is None  # not a file: the app answers
    assert workers.predict(image, "someone/bank", ["shape"], None) is None  # not bundled: the app answers


def test_concurrent_requests_through_the_workers_each_get_their_own_answer(
        started: tuple[BankRegistry, PredictionWorkers], image: str) -> None:
    registry, workers = started
    gate = PredictionGate(registry, predictions=4, workers=workers)
    choices = [["shape"], ["scale", "pos_y"], ["orientation"], ["pos_x", "pos_y", "shape"]]
    expected = {tuple(c): registry.predict(image, "dsprites", c).probabilities for c in choices}
    lock = threading.Lock()

    def ask(tasks: list[str], answers: list[tuple[tuple[str, ...], dict]]) -> None:
        answer = gate.predict(image, "dsprites", tasks)
        with lock:
            answers.append((tuple(tasks), answer.probabilities))

    for _ in range(20):  # a flaky test is a failing test
        answers: list[tuple[tuple[str, ...], dict]] = []
        threads = [threading.Thread(target=ask, args=(choices[i % 4], answers)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 16 and all(probabilities == expected[tasks] for tasks, probabilities in answers)
    assert workers.problem is None


def test_until_ready_and_after_a_worker_dies_the_app_answers_itself(factors: Path, image: str) -> None:
    registry = BankRegistry(factors, allow_hub=False, device="cpu")
    workers = PredictionWorkers(1, factors, "cpu", "torch")
    try:
        gate = PredictionGate(registry, workers=workers)
        if not workers.ready:  # still starting: answered here
            assert workers.predict(image, "dsprites", ["shape"], None) is None
        _wait(workers)
        for pid in list(workers._pool._processes):  # the worker dies
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert workers.predict(image, "dsprites", ["shape"], None) is None and "failed" in workers.problem
        assert not workers.ready
        answer = gate.predict(image, "dsprites", ["shape"])  # every request answered, by the app's process now
        assert answer.probabilities == registry.predict(image, "dsprites", ["shape"]).probabilities
    finally:
        workers.close()


def test_the_worker_count_is_checked_and_auto_means_one_on_a_cpu_with_two_cores() -> None:
    assert check_workers("0") == 0 and check_workers(" 2 ") == 2 and check_workers("Auto") == "auto"
    assert resolve_workers("auto", "cpu", cores=2) == 1 and resolve_workers("auto", "cpu", cores=16) == 1
    assert resolve_workers("auto", "cpu", cores=1) == 0 and resolve_workers("auto", "cuda", cores=8) == 0
    assert resolve_workers(3, "cuda", cores=1) == 3  # a number is what the operator asked for
    for bad in ("-1", "two", "9", "1.5", ""):
        with pytest.raises(KFError, match="KF_PREDICT_WORKERS"):
            check_workers(bad)


def test_the_app_by_default_answers_its_bundled_banks_through_a_worker_on_two_cores(tmp_path: Path, image: str) -> None:
    from tests.app_fixtures import running_demo

    if resolve_workers("auto", "cpu") == 0:
        pytest.skip("one core: the default is no worker")
    with running_demo(tmp_path, workers="auto") as (url, demo):
        workers = demo.kf_gate.workers
        assert workers is not None and workers.workers == 1
        _wait(workers)
        from kf_model.bench.app_process import GradioHTTP

        http = GradioHTTP(url)
        try:
            bank = next(iter(demo.kf_registry.bundled))
            entry = demo.kf_registry.bundled[bank]
            tasks = entry.task_names[:2]
            sample = str(tmp_path / "sample.png")
            from PIL import Image

            spec = entry.manifest.input_spec
            Image.new("L" if spec.channels == 1 else "RGB", (spec.size, spec.size)).save(sample)
            answer = http.predict(sample, bank, tasks)
        finally:
            http.close()
        assert set(tasks) <= set(answer) and workers.problem is None
        assert workers.answered == 1  # answered by the worker process


def test_a_worker_leaves_when_the_app_process_is_killed(tmp_path: Path, factors: Path) -> None:
    import subprocess
    import sys

    script = (f"import sys, time; sys.path.insert(0, {str(Path.cwd())!r})\n"
              "from kf_model.serving.workers import PredictionWorkers\n"
              f"w = PredictionWorkers(1, {str(factors)!r}, 'cpu', 'torch')\n"
              "while not w.ready: time.sleep(0.05)\n"
              "print(*w._pool._processes, flush=True)\n"
              "time.sleep(120)\n")
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(app.stdout.readline().split()[0])
        app.kill()  # no atexit, no shutdown: only the worker's own watch can end it
        app.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        gone = not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
        assert gone, "the worker outlived the app"
    finally:
        app.kill()
        if worker is not None and Path(f"/proc/{worker}").exists():
            os.kill(worker, signal.SIGKILL)  # never leave one behind, even when the test fails
