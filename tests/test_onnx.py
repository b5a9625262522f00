"""ONNX export of an assembled network, run by onnxruntime and compared with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kf_model import FactorBank

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (requirements-dev.txt)")
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
