"""The familiarity measurement: docs/familiarity.json against the README, its targets, and a toy-scale run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kf_model.serving.familiarity_measure import (
    COMMAND,
    PLAIN_ROWS,
    ROWS,
    markdown_tables,
    measure,
    targets_met,
)

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "familiarity.json"


def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_the_readme_tables_are_the_recorded_json() -> None:
    """README's familiarity tables are markdown_tables(docs/familiarity.json), written by the measure command."""
    results = recorded()
    assert results["command"] == COMMAND and len(results["git_commit"]) >= 40
    readme = (ROOT / "README.md").read_text()
    assert markdown_tables(results) in readme
    assert "docs/familiarity.json" in readme and COMMAND in readme


def test_the_recorded_measurement_meets_the_targets_on_both_bundled_banks() -> None:
    results = recorded()
    assert set(results["banks"]) == {"dsprites", "fashion-mnist"}
    for bank in results["banks"].values():
        rows = bank["rows"]
        assert set(rows) == set(ROWS) | set(PLAIN_ROWS)
        for row in rows.values():
            assert row["share"] == pytest.approx(row["flagged"] / row["images"], abs=1e-4)
        assert targets_met(rows) == bank["targets_met"] == {"photographs": True, "test": True}
        assert rows["photographs"]["images"] >= 10 and rows["test"]["images"] >= 1000


def test_targets_are_read_from_the_rows() -> None:
    rows = {"photographs": {"share": 0.97}, "test": {"share": 0.061}}
    assert targets_met(rows) == {"photographs": True, "test": False}
    assert targets_met({}) == {"photographs": False, "test": False}  # no images: the target is missed


@pytest.mark.slow
def test_measure_at_a_toy_scale_fills_every_row() -> None:
    results = measure(ROOT / "assets" / "factors", test_images=8, others=8, generated=1, plain=2)
    for bank in results["banks"].values():
        assert set(bank["rows"]) == set(ROWS) | set(PLAIN_ROWS)
        assert all(0.0 <= row["share"] <= 1.0 for row in bank["rows"].values())
        assert bank["rows"]["photographs"]["images"] > 0 and "passed" in bank["rows"]["photographs"]
    assert all(words in markdown_tables(results) for words in [*ROWS.values(), *PLAIN_ROWS.values()])


def test_signals_only_calibration_adds_limits_and_leaves_the_statistics_alone(tmp_path: Path) -> None:
    from kf_model.serving.familiarity import FamiliarityModel
    from kf_model.serving.familiarity_check import main
    from kf_model.serving.input_signals import PHOTO_SIGNALS
    from tests.test_familiarity_hostile import calibrated_bank

    folder = calibrated_bank(tmp_path)
    weights = (folder / "familiarity" / "model.safetensors").read_bytes()
    main(["calibrate", str(folder), "--signals-only"])
    config = json.loads((folder / "familiarity" / "config.json").read_text())
    assert config["input_signals"]["applies"] is True and config["input_signals"]["validation_images"] == 100
    assert set(config["input_signals"]["limits"]) <= {"border_colour", "border_level", "border_spread", "object_fill"}
    assert (folder / "familiarity" / "model.safetensors").read_bytes() == weights
    assert json.loads((folder / "factors.json").read_text())["familiarity"]["input_signals"] is True
    main(["calibrate", str(folder), "--signals-only", "--photographs"])  # a bank of photographs: the photo signals
    assert set(FamiliarityModel.load(folder).signal_limits.limits) == set(PHOTO_SIGNALS)
    block = json.loads((folder / "familiarity" / "config.json").read_text())["input_signals"]
    assert block["inputs"] == "photographs" and len(block["calibration_photographs"]) >= 5
