"""The private torch ops seam (kf_model/models/onednn.py): the fused oneDNN path and its fallback give the same
outputs; a changed or missing op falls back instead of raising; every op is checked."""

from __future__ import annotations

import pytest
import torch

from kf_model.data import load_dataset
from kf_model.models import onednn
from kf_model.models.folded import onednn_available
from tests.test_growing import make_bank


@pytest.fixture(autouse=True)
def fresh_check():
    onednn.reset()
    yield
    onednn.reset()


@pytest.fixture
def x() -> torch.Tensor:
    return load_dataset("dsprites", "test", limit=4).get_batch(torch.arange(4))[0]


def outputs(bank, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return bank.assemble()(x)


def separate_factors(bank, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return {t: bank.factor(t)(x) for t in bank.tsns}


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-5, name


def test_the_fast_path_forced_off_gives_the_same_outputs(x: torch.Tensor) -> None:
    bank = make_bank()
    reference = separate_factors(bank, x)
    fast = outputs(bank, x)
    with onednn.disabled():
        assert not onednn_available()
        assembled = bank.assemble()
        assert assembled.tsns.execution_path(x) != "onednn"
        assert_close(outputs(bank, x), reference)
    assert_close(fast, reference)


@pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build")
def test_a_failing_private_op_falls_back_instead_of_raising(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    bank = make_bank()
    reference = separate_factors(bank, x)
    assembled = bank.assemble()
    assert assembled.tsns.execution_path(x) == "onednn"  # checked (and cached) while the op still works

    def changed_signature(*args, **kwargs):
        raise TypeError("_convolution_pointwise() takes 9 positional arguments but 10 were given")

    monkeypatch.setattr(onednn, "_pointwise", lambda: changed_signature)
    with torch.inference_mode():
        got = assembled(x)
    assert_close(got, reference)
    assert "using conv2d from now on" in caplog.text
    assert not onednn_available()  # off for the rest of the process, not retried on every call


@pytest.mark.parametrize("missing", ["_pointwise", "_reorder"])
def test_every_private_op_is_checked(missing: str, monkeypatch: pytest.MonkeyPatch, x: torch.Tensor) -> None:
    monkeypatch.setattr(onednn, missing, lambda: None)
    assert not onednn_available()
    bank = make_bank()
    assert_close(outputs(bank, x), separate_factors(bank, x))


def test_a_smoke_call_that_fails_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(onednn, "_reorder", lambda: broken)
    assert not onednn_available()


def test_reordered_weights_are_kept_per_thread_count(x: torch.Tensor) -> None:
    """Weights packed while torch ran 2 threads made every later 1-thread call 7x dearer (the app warms its banks up
    before it sets KF_TORCH_THREADS): a new thread count packs its own, and the outputs do not change."""
    if not onednn_available():
        pytest.skip("no oneDNN fast path here")
    network = make_bank().assemble().eval()
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(2)
            two = network(x[:1])
            torch.set_num_threads(1)
            one = network(x[:1])
    finally:
        torch.set_num_threads(before)
    assert_close(one, two)
    caches = [module._derived.entries for module in network.modules() if hasattr(module, "_derived")]
    counts = {key[2] for entries in caches for key in entries if key[0] == "onednn"}
    assert counts == {1, 2}
