"""The bundled factor banks load and reach the accuracy their manifests record.

The manifests record accuracy on the whole test split (``make assets``); here a fixed 1,000-image
subset of it must land within sampling error of those figures (3 binomial standard errors), so a bank
whose weights, preprocessing or evaluation drifted fails.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from kf_model import FactorBank
from kf_model.data import load_dataset

BANKS = Path(__file__).resolve().parents[1] / "assets" / "factors"
SUBSET = 1000


def tolerance(p: float, n: int = SUBSET) -> float:
    return 3 * math.sqrt(max(p * (1 - p), 1e-4) / n) + 1e-3


@functools.cache
def run_shipped(name: str) -> tuple[FactorBank, dict[str, torch.Tensor], torch.Tensor]:
    """The bundled bank, its assembled logits on the fixed subset, and the subset's targets."""
    bank = FactorBank.from_pretrained(BANKS / name)
    dataset = load_dataset(name, "test", limit=SUBSET, seed=0)
    images, targets = dataset.get_batch(range(len(dataset)))
    with torch.inference_mode():
        logits = bank.assemble()(images)
    return bank, logits, targets


@pytest.fixture(params=["dsprites", "fashion-mnist"])
def shipped(request: pytest.FixtureRequest) -> tuple[FactorBank, dict[str, torch.Tensor], torch.Tensor]:
    return run_shipped(request.param)


def test_manifest_describes_the_bank(shipped) -> None:
    bank, _, _ = shipped
    manifest = bank.manifest
    assert [t.name for t in bank.tasks] == [t.name for t in manifest.tasks]
    assert manifest.training.get("commands"), "the recipe's command lines must be recorded"
    assert set(manifest.metrics["tasks"]) == {t.name for t in bank.tasks}
    card = (BANKS / manifest.dataset / "README.md").read_text()
    assert "library_name: kf" in card and "## Results" in card and "No evaluation recorded" not in card
    size = sum(f.stat().st_size for f in (BANKS / manifest.dataset).rglob("*") if f.is_file())
    assert size < 20 * 1024 * 1024


def test_each_factor_reaches_its_recorded_accuracy(shipped) -> None:
    bank, logits, targets = shipped
    recorded = bank.manifest.metrics["tasks"]
    for column, task in enumerate(bank.tasks):
        accuracy = (logits[task.name].argmax(-1) == targets[:, column]).float().mean().item()
        expected = recorded[task.name]["accuracy"]
        assert abs(accuracy - expected) <= tolerance(expected), (task.name, accuracy, expected)


def test_fashion_mnist_argmax_over_factors_reaches_its_recorded_accuracy() -> None:
    bank, logits, targets = run_shipped("fashion-mnist")
    positive = torch.stack([logits[t.name].softmax(-1)[:, 1] for t in bank.tasks], dim=1)
    accuracy = (positive.argmax(1) == targets.argmax(1)).float().mean().item()
    expected = bank.manifest.metrics["summary"]["assembled_argmax_kway_accuracy"]
    assert abs(accuracy - expected) <= tolerance(expected), (accuracy, expected)
