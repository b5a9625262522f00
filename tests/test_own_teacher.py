"""Bring your own teacher: a timm / torchvision network with your weights -> a head fitted on your data ->
factorized -> assembled exactly -> pushed, pulled and served by the app. Tiny models, a few steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from kf_model import FactorBank
from kf_model.errors import KFError
from kf_model.teachers import ExternalTeacher, create_teacher
from kf_model.training import FactorizeJob, TeacherJob, run

STEPS = ["--limit", "48", "--batch-size", "16", "--max-steps", "3", "--warmup-steps", "1", "--log-every", "1",
         "--cpu", "--num-threads", "1"]
TINY_TSNS = ["--tsn-widths", "4", "4", "--tsn-strides", "4", "4"]


def pretrained(tmp_path: Path, name: str, **kwargs) -> Path:
    """Stand-in for a user's pretrained checkpoint: a 1000-class network of random weights, as safetensors."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        model = timm.create_model(name[5:], pretrained=False, num_classes=1000, **kwargs)
    else:
        model = torchvision.models.get_model(name[12:], weights=None, num_classes=1000)
    path = tmp_path / f"{name.replace(':', '-')}.safetensors"
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def fitted_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_teacher.py --from timm:test_resnet: an ImageNet-sized head replaced by one for 10 classes."""
    tmp = tmp_path_factory.mktemp("teacher")
    weights = pretrained(tmp, "timm:test_resnet", in_chans=1)
    run(TeacherJob, ["--from", "timm:test_resnet", "--teacher-weights", str(weights), "--dataset", "fashion-mnist",
                     "--image-size", "28", "--output-dir", str(tmp / "teacher"), *STEPS])
    return tmp / "teacher"


def test_the_fitted_teacher_is_a_timm_folder_with_only_a_new_head(fitted_teacher: Path) -> None:
    config = json.loads((fitted_teacher / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [1, 28, 28] and config["label_names"][1] == "Trouser"
    assert config["kf"]["finetune"] is False  # a linear probe by default
    from kf_model.data import FASHION_MNIST_TASKS

    teacher = create_teacher(str(fitted_teacher), tasks=FASHION_MNIST_TASKS, one_vs_rest=True)
    assert isinstance(teacher, ExternalTeacher) and teacher.input_spec.size == 28
    original = timm.create_model("test_resnet", pretrained=False, num_classes=1000, in_chans=1)
    torch.manual_seed(0)
    original = timm.create_model("test_resnet", pretrained=False, num_classes=1000, in_chans=1)
    trunk = {k: v for k, v in original.state_dict().items() if not k.startswith("fc.")}
    for key, value in teacher.network.state_dict().items():
        if key in trunk and "running" not in key and "num_batches" not in key:
            assert torch.equal(value, trunk[key]), f"the linear probe changed {key}"


def test_factorize_a_timm_teacher_into_a_timm_ckn(fitted_teacher: Path, tmp_path: Path, hub_server,
                                                  hub_repo_id: str, hf_cache: Path) -> None:
    out = tmp_path / "bank"
    run(FactorizeJob, ["--teacher", str(fitted_teacher), "--dataset", "fashion-mnist", "--ckn-arch",
                       "timm:test_resnet", "--init-ckn-from-teacher", *TINY_TSNS, "--output-dir", str(out),
                       "--push-to-hub", hub_repo_id, *STEPS])
    bank = FactorBank.from_pretrained(out)
    manifest = bank.manifest
    assert manifest.teacher["architecture"] == "test_resnet" and manifest.teacher["input_spec"]["size"] == 28
    assert bank.ckn._hub_mixin_config["backbone"]["arch"] == "timm:test_resnet"
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        full = bank.assemble()(x)
        two = bank.assemble(["trouser", "bag"])(x)
        for name in two:
            torch.testing.assert_close(two[name], full[name], rtol=0, atol=1e-5)
            torch.testing.assert_close(bank.factor(name)(x), full[name], rtol=0, atol=1e-5)

    pulled = FactorBank.from_pretrained(hub_repo_id, tasks=["trouser", "bag"])
    with torch.no_grad():
        for name, logits in pulled.assemble()(x).items():
            torch.testing.assert_close(logits, two[name], rtol=0, atol=1e-5)

    from kf_model.serving import BankRegistry

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (200, 120, 40)).save(photo, quality=80)  # a phone-sized colour photo
    registry = BankRegistry(None, warmup=False)
    result = registry.api_predict(str(photo), hub_repo_id, ["trouser", "bag"])
    assert set(result) == {"trouser", "bag"}
    assert all(abs(sum(p.values()) - 1) < 1e-4 for p in result.values())


def test_a_torchvision_head_is_fitted_and_refuses_mismatched_data(tmp_path: Path) -> None:
    weights = pretrained(tmp_path, "torchvision:mobilenet_v3_small")
    with pytest.raises(KFError, match="3-channel 224-px images, fashion-mnist has 1-channel 28-px"):
        run(TeacherJob, ["--from", "torchvision:mobilenet_v3_small", "--teacher-weights", str(weights),
                         "--dataset", "fashion-mnist", "--output-dir", str(tmp_path / "t"), *STEPS])
