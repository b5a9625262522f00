"""ONNX export of an assembled network, run by onnxruntime and compared with torch."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from kf_model import FactorBank

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency (requirements.txt)")
BANK = Path(__file__).resolve().parents[1] / "assets" / "factors" / "fashion-mnist"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[FactorBank, list[str], Path]:
    bank = FactorBank.from_pretrained(BANK)
    tasks = ["trouser", "bag", "sneaker"]
    return bank, tasks, bank.export_onnx(tasks, tmp_path_factory.mktemp("onnx") / "kf.onnx")


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_matches_torch(exported, batch: int) -> None:
    bank, tasks, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == tasks  # one named output per task, in order
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    outputs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = bank.assemble(tasks)(x)
    for name, got in zip(tasks, outputs):
        assert got.shape == (batch, 2)
        np.testing.assert_allclose(got, expected[name].numpy(), atol=1e-4, rtol=0)


def test_the_file_says_how_to_prepare_images_and_read_answers(exported) -> None:
    import onnx

    bank, tasks, path = exported
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["kf.input_spec"]) == bank.input_spec.to_dict()
    assert [t["name"] for t in json.loads(metadata["kf.tasks"])] == tasks
    assert json.loads(metadata["kf.tasks"])[1]["labels"] == ["not Bag", "Bag"]
    assert metadata["kf.ckn_fingerprint"] == bank.manifest.ckn_fingerprint


# ----------------------------------------------------------------------------- issue 18: concurrency, bad paths

CONCURRENT = 8


def test_eight_concurrent_exports_all_succeed(tmp_path: Path) -> None:
    """torch.onnx.export is not thread-safe: two threads used to get a TorchExportError, 8 at once 0 of 8 files."""
    from concurrent.futures import ThreadPoolExecutor

    from kf_model.serving import BankRegistry

    bank = FactorBank.from_pretrained(BANK)
    registry = BankRegistry(BANK.parent, allow_hub=False, warmup=False)
    start = threading.Barrier(CONCURRENT)

    def export(i: int) -> Path:
        start.wait(timeout=120)  # all eight at once
        if i % 2:  # half through the library, half through the app's registry (the Export button)
            return bank.export_onnx(["coat", "bag"], tmp_path / f"bank-{i}" / "kf.onnx")
        return registry.export_onnx("fashion-mnist", ["bag", "coat"], tmp_path / f"app-{i}")

    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        paths = list(pool.map(export, range(CONCURRENT)))
    for path in paths:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["coat", "bag"]  # the bank's order
    assert not [p for p in tmp_path.rglob("*.partial*")]  # no half-written file left


def test_an_export_to_a_folder_or_an_unwritable_place_is_a_kf_error(tmp_path: Path) -> None:
    from kf_model.errors import UnwritablePathError

    bank = FactorBank.from_pretrained(BANK)
    with pytest.raises(UnwritablePathError, match=re.escape(f"{tmp_path}: it is a folder")):
        bank.export_onnx(["bag"], tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UnwritablePathError, match=r"a-file/sub/kf\.onnx: cannot make its folder"):
        bank.export_onnx(["bag"], blocker / "sub" / "kf.onnx")
    with pytest.raises(UnwritablePathError, match=r"/proc/kf/kf\.onnx"):
        bank.export_onnx(["bag"], "/proc/kf/kf.onnx")
