"""Bring your own model and images: the bundled data exported as image folders / a metadata.csv on disk
(PNG and JPEG, RGB), a timm or torchvision network with your weights -> a head fitted on your data ->
factorized -> assembled exactly -> evaluated, pushed, pulled and served by the app. Tiny models, few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from kf_model import FactorBank
from kf_model.data import open_dataset
from kf_model.data.export import export_dataset
from kf_model.errors import KFError
from kf_model.teachers import ExternalTeacher, create_teacher
from kf_model.training import FactorizeJob, TeacherJob, run

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--limit", "48", "--batch-size", "16", "--max-steps", "3", "--warmup-steps", "1", "--log-every", "1",
         "--cpu", "--num-threads", "1"]
TINY_TSNS = ["--tsn-widths", "4", "4", "--tsn-strides", "4", "4"]
TINY_CKN = ["--ckn-width", "4", "--ckn-num-stages", "3", "--ckn-stem-stride", "2"]


def pretrained(tmp_path: Path, name: str, **kwargs) -> Path:
    """Stand-in for a user's pretrained checkpoint: a 1000-class network of seeded random weights, as safetensors."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        model = timm.create_model(name[5:], pretrained=False, num_classes=1000, **kwargs)
    else:
        model = torchvision.models.get_model(name[12:], weights=None, num_classes=1000)
    path = tmp_path / f"{name.replace(':', '-')}.safetensors"
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def garments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST as a user's image folder: train/ and test/, one sub-folder per class, RGB JPEGs."""
    out = tmp_path_factory.mktemp("data") / "garments"
    export_dataset("fashion-mnist", out, format="folder", image_format="jpeg", rgb=True, limit=120)
    return out


@pytest.fixture(scope="module")
def fitted_teacher(tmp_path_factory: pytest.TempPathFactory, garments: Path) -> Path:
    """train_teacher.py --from timm:test_resnet: an ImageNet-sized head replaced by one for the 10 classes."""
    tmp = tmp_path_factory.mktemp("teacher")
    weights = pretrained(tmp, "timm:test_resnet")
    run(TeacherJob, ["--from", "timm:test_resnet", "--teacher-weights", str(weights), "--data-dir", str(garments),
                     "--image-size", "32", "--output-dir", str(tmp / "teacher"), *STEPS])
    return tmp / "teacher"


def test_the_fitted_teacher_is_a_timm_folder_with_only_a_new_head(fitted_teacher: Path, garments: Path) -> None:
    config = json.loads((fitted_teacher / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and "Trouser" in config["label_names"]
    assert config["kf"]["finetune"] is False  # a linear probe by default
    data = open_dataset(garments, "test", input_spec=None)
    teacher = create_teacher(str(fitted_teacher), tasks=data.tasks, one_vs_rest=True)
    assert isinstance(teacher, ExternalTeacher) and teacher.input_spec.size == 32
    torch.manual_seed(0)
    original = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    for key, value in original.state_dict().items():
        if not key.startswith("fc.") and "running" not in key and "num_batches" not in key:
            assert torch.equal(teacher.network.state_dict()[key], value), f"the linear probe changed {key}"


def test_factorize_evaluate_push_pull_and_serve(fitted_teacher: Path, garments: Path, tmp_path: Path, hub_server,
                                                hub_repo_id: str, hf_cache: Path) -> None:
    out = tmp_path / "bank"
    run(FactorizeJob, ["--teacher", str(fitted_teacher), "--data-dir", str(garments), "--ckn-arch",
                       "timm:test_resnet", "--init-ckn-from-teacher", *TINY_TSNS, "--output-dir", str(out),
                       "--push-to-hub", hub_repo_id, *STEPS])
    bank = FactorBank.from_pretrained(out)
    assert bank.manifest.teacher["architecture"] == "test_resnet"
    assert bank.input_spec.channels == 3 and bank.input_spec.size == 32  # the teacher's, recorded for serving
    assert bank.ckn.init_config["backbone"]["arch"] == "timm:test_resnet"
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        full = bank.assemble()(x)
        two = bank.assemble(["trouser", "bag"])(x)
        for name in two:
            torch.testing.assert_close(two[name], full[name], rtol=0, atol=1e-5)
            torch.testing.assert_close(bank.factor(name)(x), full[name], rtol=0, atol=1e-5)

    report = tmp_path / "report"
    command = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--teacher", str(fitted_teacher), "--bank",
               str(out), "--data-dir", str(garments), "--split", "test", "--limit", "40", "--batch-size", "16",
               "--probe-samples", "40", "--cpu", "--output-dir", str(report), "--no-plots"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((report / "results.json").read_text())
    assert results["samples"]["evaluated"] == 40 and set(results["accuracy"]["factor"]) == {t.name for t in bank.tasks}

    pulled = FactorBank.from_pretrained(hub_repo_id, tasks=["trouser", "bag"])
    with torch.no_grad():
        for name, logits in pulled.assemble()(x).items():
            torch.testing.assert_close(logits, two[name], rtol=0, atol=1e-5)

    from kf_model.serving import BankRegistry

    photo = tmp_path / "photo.jpg"
    gradients = [Image.linear_gradient("L"), Image.radial_gradient("L"), Image.new("L", (256, 256), 40)]
    Image.merge("RGB", [g.resize((4000, 3000)) for g in gradients]).save(photo, quality=80)  # phone-sized, colour
    result = BankRegistry(None, warmup=False).api_predict(str(photo), hub_repo_id, ["trouser", "bag"])
    report = result.pop("_input")  # how the input looked: this bank has no familiarity statistics
    assert report["unfamiliar"] is None and set(result) == {"trouser", "bag"}
    assert all(abs(sum(p.values()) - 1) < 1e-4 for p in result.values())


def test_a_torchvision_teacher_on_png_folders(tmp_path: Path) -> None:
    data = tmp_path / "png"
    export_dataset("fashion-mnist", data, format="folder", image_format="png", limit=80)  # grey PNGs
    weights = pretrained(tmp_path, "torchvision:mobilenet_v3_small")
    run(TeacherJob, ["--from", "torchvision:mobilenet_v3_small", "--teacher-weights", str(weights), "--data-dir",
                     str(data), "--image-size", "32", "--output-dir", str(tmp_path / "teacher"), *STEPS])
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["architecture"] == "torchvision:mobilenet_v3_small"
    run(FactorizeJob, ["--teacher", str(tmp_path / "teacher"), "--data-dir", str(data), *TINY_CKN, *TINY_TSNS,
                       "--output-dir", str(tmp_path / "bank"), *STEPS])
    bank = FactorBank.from_pretrained(tmp_path / "bank")
    assert bank.manifest.teacher["architecture"] == "torchvision:mobilenet_v3_small"
    with torch.no_grad():
        assert set(bank.assemble(["sandal"])(torch.rand(2, 3, 32, 32))) == {"sandal"}


def test_a_metadata_csv_of_attributes_makes_one_task_per_column(tmp_path: Path) -> None:
    data = tmp_path / "sprites"
    export_dataset("dsprites", data, format="csv", limit=96)
    common = ["--data-dir", str(data), "--label-columns", "shape", "scale", *STEPS]
    run(TeacherJob, ["--arch", "cnn", "--width", "4", "--num-stages", "3", "--stem-stride", "2",
                     "--output-dir", str(tmp_path / "teacher"), *common])
    run(FactorizeJob, ["--teacher", str(tmp_path / "teacher"), *TINY_CKN, *TINY_TSNS,
                       "--output-dir", str(tmp_path / "bank"), *common])
    bank = FactorBank.from_pretrained(tmp_path / "bank")
    assert [t.name for t in bank.tasks] == ["shape", "scale"] and bank.input_spec.size == 64
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bank.assemble(["scale"])(x)["scale"], bank.assemble()(x)["scale"], rtol=0,
                                   atol=1e-5)


def test_a_teacher_that_does_not_fit_the_data_is_refused_before_training(tmp_path: Path) -> None:
    weights = pretrained(tmp_path, "torchvision:mobilenet_v3_small")
    with pytest.raises(KFError, match=r"3-channel 224-px images, fashion-mnist has 1-channel 28-px ones: export "
                                      r"the data .* --rgb\)"):
        run(TeacherJob, ["--from", "torchvision:mobilenet_v3_small", "--teacher-weights", str(weights),
                         "--dataset", "fashion-mnist", "--output-dir", str(tmp_path / "t"), *STEPS])
    timm_weights = pretrained(tmp_path, "timm:test_resnet", in_chans=1)  # grey weights: channels match
    with pytest.raises(KFError, match="predicts 1000 classes but the data has 10"):
        run(FactorizeJob, ["--teacher", "timm:test_resnet", "--teacher-weights", str(timm_weights), "--dataset",
                           "fashion-mnist", "--image-size", "28", "--output-dir", str(tmp_path / "b"), *STEPS])
