"""int8 export (issue 22 item 3): ``export_onnx(..., quantize="int8")``, static QDQ, calibrated on held-out images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kf_model.data import DSPRITES_INPUT_SPEC, FASHION_MNIST_INPUT_SPEC
from kf_model.data.calibration import calibration_images
from kf_model.data.splits import validation_order
from kf_model.errors import DataNotFoundError, InvalidArgumentError, KFError
from tests.app_fixtures import make_bank

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency (requirements.txt)")
TASKS = ["trouser", "bag", "sneaker"]


def _calibration(n: int = 64, seed: int = 1) -> torch.Tensor:
    """Stand-in held-out images for the untrained tiny bank: smooth blobs in [0, 1], like the data's range."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 7, 7, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=28, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    bank = make_bank("fashion-mnist")
    folder = tmp_path_factory.mktemp("int8")
    fp32 = bank.export_onnx(TASKS, folder / "fp32.onnx")
    int8 = bank.export_onnx(TASKS, folder / "int8.onnx", quantize="int8", calibration=_calibration())
    return fp32, int8


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_int8_is_a_valid_qdq_model_with_the_same_interface(exported) -> None:
    import onnx

    fp32, int8 = exported
    model = onnx.load(str(int8))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["kf.quantization"] == "int8"
    assert {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}["kf.quantization"] == "none"
    session = _session(int8)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == TASKS
    assert int8.stat().st_size < fp32.stat().st_size  # 8-bit weights (the tiny bank's graph overhead is fixed)


def test_int8_outputs_agree_with_float32(exported) -> None:
    """Held-out-like images (not the calibration ones): logits close, and the same answer almost always."""
    fp32, int8 = exported
    x = _calibration(200, seed=7).numpy()
    reference, quantized = _session(fp32).run(None, {"image": x}), _session(int8).run(None, {"image": x})
    for name, ref, got in zip(TASKS, reference, quantized):
        spread = float(ref.max() - ref.min())
        assert float(np.abs(got - ref).mean()) <= 0.05 * spread, name
        assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.9, name


@pytest.mark.parametrize("value", ["int4", "INT8", "fp16", 8, True, ""])
def test_a_bad_quantize_value_is_a_kf_error_before_any_export(value, tmp_path: Path) -> None:
    bank = make_bank("fashion-mnist")
    with pytest.raises(InvalidArgumentError, match=r"quantize must be None or one of 'int8', got"):
        bank.export_onnx(TASKS, tmp_path / "x.onnx", quantize=value, calibration=_calibration(4))
    with pytest.raises(InvalidArgumentError, match=r"quantize must be None or one of 'int8'"):
        bank.export_onnx(TASKS, tmp_path / "x.onnx", quantize=value)
    assert not list(tmp_path.iterdir())


def test_int8_needs_calibration_images_that_fit_the_network(tmp_path: Path) -> None:
    bank = make_bank("fashion-mnist")
    with pytest.raises(KFError, match=r"calibration images of shape \(1, 64, 64\) do not fit .* \(1, 28, 28\)"):
        bank.export_onnx(TASKS, tmp_path / "x.onnx", quantize="int8", calibration=torch.rand(4, 1, 64, 64))
    with pytest.raises(InvalidArgumentError, match="needs calibration images"):
        bank.export_onnx(TASKS, tmp_path / "x.onnx", quantize="int8", calibration=torch.rand(0, 1, 28, 28))
    bank.manifest.dataset = None  # no dataset named, one channel: nothing to calibrate on by default
    with pytest.raises(DataNotFoundError, match="no calibration images for a bank of 'unnamed data'"):
        bank.export_onnx(TASKS, tmp_path / "x.onnx", quantize="int8")


def test_default_calibration_is_the_validation_carve_out_of_the_train_split() -> None:
    """Held-out training images, never the test split: the first of the carve-out no training stage sees."""
    from kf_model.data import load_dataset

    images = calibration_images("dsprites", DSPRITES_INPUT_SPEC, 6)
    train = load_dataset("dsprites", "train")
    expected = train.get_batch(validation_order(len(train))[:6])[0]
    assert images.shape == (6, 1, 64, 64) and torch.equal(images, expected)
    with pytest.raises(InvalidArgumentError, match="calibration count"):
        calibration_images("dsprites", DSPRITES_INPUT_SPEC, 0)


def test_the_apps_int8_export_names_its_file(tmp_path: Path) -> None:
    from kf_model.serving import BankRegistry

    bank = make_bank("dsprites")
    bank.save_pretrained(tmp_path / "banks" / "dsprites")
    registry = BankRegistry(tmp_path / "banks", allow_hub=False, warmup=False)
    path = registry.export_onnx("dsprites", ["shape"], tmp_path / "out", quantize="int8")
    assert path.name == "kf-dsprites-shape-int8.onnx"
    assert [o.name for o in _session(path).get_outputs()] == ["shape"]
    with pytest.raises(InvalidArgumentError, match="quantize must be None"):
        registry.export_onnx("dsprites", ["shape"], tmp_path / "out", quantize="int3")


def test_missing_training_data_is_refused_in_one_line(monkeypatch) -> None:
    from kf_model.data import calibration

    def missing(*args, **kwargs):
        raise DataNotFoundError("Fashion-MNIST (train) not found\n  - put the idx files in a folder ...")

    monkeypatch.setattr(calibration, "load_dataset", missing)
    with pytest.raises(DataNotFoundError, match=r"^int8 calibration needs fashion-mnist's training images, not found "
                                                r"here: Fashion-MNIST \(train\) not found$"):
        calibration_images("fashion-mnist", FASHION_MNIST_INPUT_SPEC)
