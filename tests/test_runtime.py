"""The app's runtime (issue 22 item 2): onnxruntime on the tick set's network exported once, torch as the fallback.

Exports run in the background: a test that needs the onnxruntime answer waits for them (``runtime.wait``); none
times anything.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from kf_model.errors import InvalidArgumentError, KFError
from kf_model.serving import BankRegistry
from kf_model.serving import runtime as runtime_module
from kf_model.serving.predict import forward_pass
from kf_model.serving.runtime import EXPORT_AFTER, ServingRuntime, check_runtime, faster_runtime
from tests.app_fixtures import write_banks

pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency (requirements.txt)")

EXPORT_TIMEOUT_S = 300
TASKS = {"dsprites": ["shape", "pos_x"], "fashion-mnist": ["trouser", "sneaker", "bag"]}  # bank order


@pytest.fixture(scope="module")
def banks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_banks(tmp_path_factory.mktemp("banks"), evaluation=False)


@pytest.fixture(scope="module")
def onnx_registry(banks_dir: Path) -> BankRegistry:
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False, device="cpu", runtime="onnxruntime")
    for key, tasks in TASKS.items():
        entry = registry.get(key)
        registry.runtime.onnx_network(entry.runtime_id, entry.ensure(tasks), tasks)  # queues the export
    registry.runtime.wait(EXPORT_TIMEOUT_S)
    return registry


def _images(channels: int, size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("key", sorted(TASKS))
def test_onnxruntime_answers_within_1e4_of_torch(onnx_registry: BankRegistry, key: str) -> None:
    """Probabilities and the familiarity features: the same figures from both runtimes, on several images."""
    entry, tasks = onnx_registry.get(key), TASKS[key]
    network = entry.network(tasks)
    spec = entry.manifest.input_spec
    assert onnx_registry.runtime.choice(entry.runtime_id, tasks).network is not None
    for seed in range(4):
        x = _images(spec.channels, spec.size, seed=seed)
        probabilities, features, which = onnx_registry.runtime.forward(entry.runtime_id, entry.ensure(tasks), tasks,
                                                                       network, x)
        expected, expected_features = forward_pass(network, x)
        assert which == "onnxruntime"
        assert list(probabilities) == tasks
        for task in tasks:
            np.testing.assert_allclose(probabilities[task].numpy(), expected[task].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(features.numpy(), expected_features.numpy(), atol=1e-4, rtol=0)


def test_predict_reports_the_runtime_that_answered(onnx_registry: BankRegistry, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray((np.eye(28) * 255).astype(np.uint8)).save(image)
    prediction = onnx_registry.predict(image, "fashion-mnist", TASKS["fashion-mnist"])
    reference = BankRegistry(onnx_registry.factors_dir, allow_hub=False, warmup=False, device="cpu").predict(
        image, "fashion-mnist", TASKS["fashion-mnist"])
    assert (prediction.runtime, reference.runtime) == ("onnxruntime", "torch")
    for task in TASKS["fashion-mnist"]:
        for label, p in prediction.probabilities[task].items():
            assert abs(p - reference.probabilities[task][label]) <= 1e-4


def test_the_first_request_of_a_tick_set_is_answered_by_torch_while_it_exports(banks_dir: Path,
                                                                                 monkeypatch) -> None:
    """An export in progress blocks nobody: requests of that tick set and of others are answered meanwhile."""
    started, release = threading.Event(), threading.Event()
    real_export = runtime_module.export_onnx

    def slow_export(*args, **kwargs):
        started.set()
        assert release.wait(EXPORT_TIMEOUT_S)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "export_onnx", slow_export)
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False, device="cpu", runtime="onnxruntime")
    entry = registry.get("dsprites")
    x = _images(1, 64)
    try:
        for tasks in (["shape"], ["shape"], ["scale", "pos_y"]):  # the same tick set again, then another one
            *_, which = registry.runtime.forward(entry.runtime_id, entry.ensure(tasks), tasks, entry.network(tasks), x)
            assert which == "torch"
        assert started.wait(EXPORT_TIMEOUT_S)
    finally:
        release.set()
    registry.runtime.wait(EXPORT_TIMEOUT_S)
    *_, which = registry.runtime.forward(entry.runtime_id, entry.ensure(["shape"]), ["shape"],
                                         entry.network(["shape"]), x)
    assert which == "onnxruntime"


def test_a_failed_export_falls_back_to_torch_and_is_logged_once(banks_dir: Path, monkeypatch, caplog) -> None:
    def broken_export(*args, **kwargs):
        raise RuntimeError("the exporter cannot take this network")

    monkeypatch.setattr(runtime_module, "export_onnx", broken_export)
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False, device="cpu", runtime="onnxruntime")
    entry = registry.get("dsprites")
    x = _images(1, 64)
    with caplog.at_level(logging.WARNING, logger=runtime_module.__name__):
        for tasks in (["shape"], ["scale"], ["shape"]):
            probabilities, _, which = registry.runtime.forward(entry.runtime_id, entry.ensure(tasks), tasks,
                                                               entry.network(tasks), x)
            registry.runtime.wait(EXPORT_TIMEOUT_S)
            assert which == "torch" and list(probabilities) == tasks
    warnings = [r for r in caplog.records if "cannot take this network" in r.getMessage()]
    assert len(warnings) == 1  # once for the bank: no second export was tried
    assert "cannot take this network" in registry.runtime.failure(entry.runtime_id)


def test_a_failing_session_falls_back_to_torch_for_good(onnx_registry: BankRegistry, monkeypatch, caplog) -> None:
    entry, tasks = onnx_registry.get("fashion-mnist"), ["bag"]
    onnx_registry.runtime.onnx_network(entry.runtime_id, entry.ensure(tasks), tasks)
    onnx_registry.runtime.wait(EXPORT_TIMEOUT_S)
    calls = []

    def broken_run(self, x):
        calls.append(x)
        raise RuntimeError("session crashed")

    monkeypatch.setattr(runtime_module.OnnxNetwork, "__call__", broken_run)
    runtime = ServingRuntime("onnxruntime", "cpu")
    runtime._choices = onnx_registry.runtime._choices  # the ready sessions, a fresh failure record
    x = _images(1, 28)
    with caplog.at_level(logging.WARNING, logger=runtime_module.__name__):
        for _ in range(3):
            probabilities, _, which = runtime.forward(entry.runtime_id, entry.ensure(tasks), tasks,
                                                      entry.network(tasks), x)
            assert which == "torch" and list(probabilities) == tasks
    assert len(calls) == 1 and len([r for r in caplog.records if "session crashed" in r.getMessage()]) == 1


def test_without_onnxruntime_or_on_a_gpu_torch_serves(monkeypatch, caplog) -> None:
    monkeypatch.setattr(runtime_module, "onnxruntime_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger=runtime_module.__name__):
        missing = ServingRuntime("onnxruntime", "cpu")
    assert not missing.uses_onnx and "not installed" in missing.problem and "not installed" in caplog.text
    monkeypatch.undo()
    assert not ServingRuntime("auto", torch.device("cuda")).uses_onnx
    assert not ServingRuntime("torch", "cpu").uses_onnx and ServingRuntime("auto", "cpu").uses_onnx


def test_auto_picks_the_faster_runtime_measured_on_this_tick_set(banks_dir: Path) -> None:
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False, device="cpu", runtime="auto")
    entry, tasks = registry.get("fashion-mnist"), ["coat"]
    for _ in range(EXPORT_AFTER):  # a tick set asked for often enough
        registry.runtime.onnx_network(entry.runtime_id, entry.ensure(tasks), tasks)
    registry.runtime.wait(EXPORT_TIMEOUT_S)
    choice = registry.runtime.choice(entry.runtime_id, tasks)
    assert choice.reason.startswith("auto: onnxruntime ") and "vs torch" in choice.reason
    *_, which = registry.runtime.forward(entry.runtime_id, entry.ensure(tasks), tasks, entry.network(tasks),
                                         _images(1, 28))
    assert which == ("onnxruntime" if choice.network is not None else "torch")


def test_faster_runtime_compares_medians_and_a_tie_keeps_torch() -> None:
    assert faster_runtime([3.0, 1.0, 2.0], [1.5, 1.0, 9.0]) == "onnxruntime"  # medians 2.0 vs 1.5
    assert faster_runtime([1.0, 1.0, 1.0], [0.5, 2.0, 3.0]) == "torch"  # 1.0 vs 2.0
    assert faster_runtime([1.0, 2.0], [2.0, 1.0]) == "torch"  # a tie


@pytest.mark.parametrize("value", ["ort", "", None, 1, "torch,onnxruntime"])
def test_a_bad_runtime_setting_is_refused_in_words(value, monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="runtime must be one of auto, torch, onnxruntime"):
        check_runtime(value)
    assert check_runtime(" ONNXRuntime ") == "onnxruntime"
    monkeypatch.setenv("KF_RUNTIME", "tensorrt")
    monkeypatch.setenv("KF_ALLOW_HUB", "0")
    with pytest.raises(KFError, match=r"\(KF_RUNTIME / --runtime\), got 'tensorrt'"):
        BankRegistry.from_env(tmp_path)


def test_the_app_serves_with_torch_unless_told_otherwise(monkeypatch, tmp_path: Path) -> None:
    """auto is opt-in: an export keeps torch's ONNX exporter and onnxruntime in the serving process."""
    monkeypatch.delenv("KF_RUNTIME", raising=False)
    assert BankRegistry.from_env(tmp_path).runtime.setting == "torch"
    monkeypatch.setenv("KF_RUNTIME", "auto")
    assert BankRegistry.from_env(tmp_path).runtime.setting == "auto"


def test_auto_exports_only_the_tick_sets_asked_for_often_and_onnxruntime_every_one(banks_dir: Path) -> None:
    """Exports cost seconds of CPU each: under many distinct tick sets, exporting every new one starved the
    predictions. auto waits for EXPORT_AFTER requests of a tick set; onnxruntime (asked for) exports at once."""
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False, device="cpu", runtime="auto")
    entry = registry.get("fashion-mnist")
    rare, popular = ["coat"], ["coat", "bag"]
    runtime = registry.runtime
    for _ in range(EXPORT_AFTER - 1):
        for tasks in (rare, popular):
            assert runtime.onnx_network(entry.runtime_id, entry.ensure(tasks), tasks) is None
    assert not runtime._pending  # nothing asked for often enough yet: no export
    runtime.onnx_network(entry.runtime_id, entry.ensure(popular), popular)
    assert list(runtime._pending) == [(*entry.runtime_id, tuple(popular))]
    runtime.wait(EXPORT_TIMEOUT_S)
    assert runtime.choice(entry.runtime_id, popular) is not None and runtime.choice(entry.runtime_id, rare) is None
    eager = ServingRuntime("onnxruntime", "cpu")
    assert eager.export_after == 1 and runtime.export_after == EXPORT_AFTER
