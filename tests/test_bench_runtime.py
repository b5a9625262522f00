"""Section 9 of the benchmark (``--sections runtime``, quick): the app's runtimes and int8 rows are written, their
targets evaluated, and onnxruntime's answers match torch's. No timing is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kf_model.bench.runner import parse_arguments
from tests.app_fixtures import make_bank

pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency (requirements.txt)")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench-runtime")
    folder = make_bank("dsprites").save_pretrained(tmp / "banks" / "dsprites")
    out = tmp / "bench.json"
    run = subprocess.run([sys.executable, "-m", "kf_model.bench", "--quick", "--skip-serving", "--device", "cpu",
                          "--banks", str(folder), "--sections", "runtime", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_section_9_rows_only(result: dict) -> None:
    assert result["errors"] == [] and {row["section"] for row in result["rows"]} == {9}
    names = {(row["bank"], row["name"]) for row in result["rows"]}
    assert {("dsprites", f"in-process /predict p{q}, 5 tasks, runtime onnxruntime vs torch") for q in (50, 95)} <= names
    for batch in ("batch 1 latency", "batch 8 throughput"):
        assert ("dsprites", f"int8 vs float32 (onnxruntime, static QDQ), {batch}") in names
    for row in result["rows"]:
        if row["unit"] != "pt":
            assert all(isinstance(row[k], float) and math.isfinite(row[k]) and row[k] > 0
                       for k in ("value", "baseline", "ratio")), row["name"]
    assert result["checks"]["runtime_max_abs_probability_diff"]["dsprites"] <= 1e-4


def test_section_9_targets_are_evaluated(result: dict) -> None:
    targeted = {(row["bank"], row["name"]): row for row in result["rows"] if row["target"]}
    drop = targeted[("dsprites", "int8 test-accuracy drop vs float32, worst of 5 tasks")]
    assert drop["target"] == "value <= 0.5" and drop["passed"] is (drop["value"] <= 0.5)
    accuracy = result["checks"]["int8_test_accuracy_pct"]["dsprites"]
    assert set(accuracy) == {"shape", "scale", "orientation", "pos_x", "pos_y"}
    real = [row for (bank, _), row in targeted.items() if bank == "test_resnet->test_resnet @64"]
    assert len(real) == 2 and all(row["target"] == "ratio <= 0.556" and row["passed"] is not None for row in real)


def test_sections_are_checked() -> None:
    assert parse_arguments(["--sections", "runtime", "onnx"]).sections == ("runtime", "onnx")
    with pytest.raises(SystemExit):
        parse_arguments(["--sections", "everything"])
    assert parse_arguments([]).malloc == "keep" and parse_arguments(["--malloc", "default"]).malloc == "default"
    with pytest.raises(SystemExit):
        parse_arguments(["--malloc", "jemalloc"])


def test_the_readme_runtime_table_is_the_recorded_run() -> None:
    """README's section-9 table is kf_model.bench.table of docs/bench-runtime.json (a copy of runs/bench-runtime.json
    from the command the README gives)."""
    from kf_model.bench import table

    recorded = json.loads((ROOT / "docs" / "bench-runtime.json").read_text())
    assert recorded["quick"] is False and recorded["errors"] == []
    assert "--sections runtime" in recorded["command"] and {row["section"] for row in recorded["rows"]} == {9}
    readme = (ROOT / "README.md").read_text()
    assert table(recorded) in readme
    assert f"**{recorded['summary']['passed']} of {recorded['summary']['targets']} targets met.**" in readme
