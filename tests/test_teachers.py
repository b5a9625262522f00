"""Teachers from timm, torchvision, the Hub and kf folders: features from the libraries' own APIs, safetensors only.

timm's ``test_*`` models (random init, < 1 M parameters) stand in for real ones: nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from kf_model import FactorBank
from kf_model.data import FASHION_MNIST_TASKS
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    BankNotFoundError,
    CorruptWeightsError,
    InvalidConfigError,
    UnknownNameError,
    UnsafeWeightsError,
)
from kf_model.models import CommonKnowledgeNetwork, EncoderConfig, TaskSpecificNetwork
from kf_model.teachers import (
    ExternalTeacher,
    TeacherMismatchError,
    WeightsMismatchError,
    create_teacher,
    source_input_spec,
)
from kf_model.teachers.torchvision_teacher import stage_modules

TASKS = FASHION_MNIST_TASKS  # 10 one-vs-rest tasks
KWAY = [TaskSpec("class", tuple(t.labels[1] for t in TASKS), "which garment")]


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1).eval()
    return model, save_weights(model, tmp_path_factory.mktemp("timm") / "teacher.safetensors")


def normalised(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


def test_a_timm_teacher_reads_its_stages_from_forward_intermediates(timm_weights) -> None:
    model, weights = timm_weights
    teacher = create_teacher("timm:test_resnet", weights=weights, tasks=TASKS, one_vs_rest=True, image_size=28)
    assert isinstance(teacher, ExternalTeacher) and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    spec = teacher.input_spec
    assert (spec.channels, spec.size) == (1, 28)  # channels from the weights' first conv, size as asked
    assert spec.mean == pytest.approx((0.5,)) and spec.std == pytest.approx((0.5,))  # test_resnet's pretrained_cfg
    assert teacher.feature_widths == [f["num_chs"] for f in model.feature_info[-3:]]
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = teacher(x)
        expected = model(normalised(x, spec))
    torch.testing.assert_close(out.class_logits, expected)
    assert list(out.logits) == [t.name for t in TASKS] and out.logits["trouser"].shape == (3, 2)
    assert [f.shape[1] for f in out.features] == teacher.feature_widths
    assert source_input_spec("timm:test_resnet", weights=weights, image_size=28) == spec


def test_kway_mode_keeps_one_task(timm_weights) -> None:
    _, weights = timm_weights
    teacher = create_teacher("timm:test_resnet", weights=weights, tasks=KWAY, one_vs_rest=False, image_size=28)
    with torch.no_grad():
        out = teacher(torch.rand(2, 1, 28, 28))
    assert list(out.logits) == ["class"] and out.logits["class"].shape == (2, 10) and out.class_logits is None


def test_a_teacher_whose_classes_do_not_match_says_how_to_fit_a_head(timm_weights) -> None:
    _, weights = timm_weights
    with pytest.raises(TeacherMismatchError, match=r"predicts 10 classes but the data has 3.*train_teacher\.py --from "
                                                   r"timm:test_resnet"):
        create_teacher("timm:test_resnet", weights=weights, tasks=TASKS[:3], one_vs_rest=True)
    with pytest.raises(TeacherMismatchError,
                       match=r"2 labels .* need 20 outputs \(one head per label\).*--label-columns"):
        create_teacher("timm:test_resnet", weights=weights, tasks=KWAY * 2, one_vs_rest=False)


def test_pickled_weights_are_refused_with_the_command_that_converts_them(tmp_path: Path, timm_weights,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = timm_weights
    pickled = tmp_path / "teacher.pth"
    torch.save(model.state_dict(), pickled)
    real_load = torch.load

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(UnsafeWeightsError, match="never unpickles") as refused:
        create_teacher("timm:test_resnet", weights=pickled, tasks=TASKS, one_vs_rest=True)
    monkeypatch.setattr(torch, "load", real_load)
    command = str(refused.value).splitlines()[-1].strip()
    assert command.startswith("python -c ")
    done = subprocess.run(command.replace("python", sys.executable, 1), shell=True, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    teacher = create_teacher("timm:test_resnet", weights=pickled.with_suffix(".safetensors"), tasks=TASKS,
                             one_vs_rest=True, image_size=28)
    assert teacher.feature_widths


def test_weights_that_do_not_fit_list_the_keys(tmp_path: Path) -> None:
    other = timm.create_model("test_efficientnet", pretrained=False, num_classes=10, in_chans=1)
    weights = save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"do not fit the architecture: missing \d+: .* unexpected \d+"):
        create_teacher("timm:test_resnet", weights=weights, tasks=TASKS, one_vs_rest=True)


def test_unknown_names_suggest_close_ones(timm_weights) -> None:
    _, weights = timm_weights
    with pytest.raises(UnknownNameError, match="unknown timm model 'test_resnett'; did you mean test_resnet"):
        create_teacher("timm:test_resnett", weights=weights, tasks=TASKS, one_vs_rest=True)
    with pytest.raises(UnknownNameError, match="unknown torchvision classification model 'resnet19'; did you mean "):
        create_teacher("torchvision:resnet19", weights=weights, tasks=TASKS, one_vs_rest=True)
    with pytest.raises(UnknownNameError, match="needs --teacher-weights"):
        create_teacher("timm:test_resnet", tasks=TASKS, one_vs_rest=True)
    with pytest.raises(UnknownNameError, match="no such teacher folder"):
        create_teacher("somewhere/else", tasks=TASKS, one_vs_rest=True)


def test_a_torchvision_teacher_uses_its_feature_extractor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    weights = save_weights(model, tmp_path / "resnet18.safetensors")
    teacher = create_teacher("torchvision:resnet18", weights=weights, tasks=TASKS, one_vs_rest=True, image_size=64)
    assert teacher.stage_names == ["layer2", "layer3", "layer4"] and teacher.feature_widths == [128, 256, 512]
    spec = teacher.input_spec
    assert (spec.channels, spec.size) == (3, 64) and spec.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).class_logits, model(normalised(x, spec)))


@pytest.mark.parametrize(("name", "stages"), [
    ("mobilenet_v3_small", ["features.3", "features.8", "features"]),
    ("convnext_tiny", ["features.3", "features.5", "features"]),
    ("densenet121", ["features.denseblock2", "features.denseblock3", "features"]),
])
def test_torchvision_stages_are_discovered_not_typed(name: str, stages: list[str]) -> None:
    model = torchvision.models.get_model(name, weights=None, num_classes=3)
    assert stage_modules(model, 96) == stages


def timm_folder(folder: Path, model: torch.nn.Module, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / "model.safetensors")
    base = {"architecture": "test_resnet", "num_classes": 10, "model_args": {"in_chans": 1},
            "pretrained_cfg": {"input_size": [1, 28, 28], "mean": [0.3], "std": [0.4]},
            "label_names": [t.labels[1] for t in TASKS]}
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    return folder


def test_a_timm_folder_and_its_hostile_variants(tmp_path: Path, timm_weights) -> None:
    model, _ = timm_weights
    folder = timm_folder(tmp_path / "teacher", model)
    teacher = create_teacher(str(folder), tasks=TASKS, one_vs_rest=True)
    assert teacher.input_spec == InputSpec(1, 28, (0.3,), (0.4,))
    for change, error, message in [
        ({"model_args": {"in_chans": 1, "depth": 10**6}}, InvalidConfigError, r"model_args \['depth'\] are not"),
        ({"architecture": "hf-hub:evil/model"}, UnknownNameError, "unknown timm model"),
        ({"num_classes": 10**9}, InvalidConfigError, "num_classes must be between"),
        ({"pretrained_cfg": {"input_size": [1, 10**6, 10**6]}}, InvalidConfigError, r"input_spec\.size"),
        ({"label_names": list("abcdefghij")}, TeacherMismatchError, "classes are not the data's"),
    ]:
        timm_folder(tmp_path / "hostile", model, **change)
        with pytest.raises(error, match=message):
            create_teacher(str(tmp_path / "hostile"), tasks=TASKS, one_vs_rest=True)


def test_an_hf_hub_teacher_fetches_config_and_safetensors_only(tmp_path: Path, timm_weights, hub_server,
                                                               hub_repo_id: str, hf_cache: Path) -> None:
    model, _ = timm_weights
    folder = timm_folder(tmp_path / "teacher", model)
    hub_server.create_repo(hub_repo_id)
    hub_server.commit(hub_repo_id, add={name: (folder / name).read_bytes()
                                        for name in ("config.json", "model.safetensors")} | {
        "pytorch_model.bin": b"\x80\x04not for kf"})
    hub_server.clear_log()
    teacher = create_teacher(f"hf-hub:{hub_repo_id}", tasks=TASKS, one_vs_rest=True)
    assert sorted(hub_server.downloaded_files(hub_repo_id)) == ["config.json", "model.safetensors"]
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).class_logits, model(normalised(x, teacher.input_spec)))
    assert source_input_spec(f"hf-hub:{hub_repo_id}") == teacher.input_spec

    pickles_only = f"{hub_repo_id}-bin"
    hub_server.create_repo(pickles_only)
    hub_server.commit(pickles_only, add={"config.json": (folder / "config.json").read_bytes(),
                                         "pytorch_model.bin": b"\x80\x04pickle"})
    with pytest.raises(CorruptWeightsError, match="safetensors layout only"):
        create_teacher(f"hf-hub:{pickles_only}", tasks=TASKS, one_vs_rest=True)
    assert "pytorch_model.bin" not in hub_server.downloaded_files(pickles_only)
    with pytest.raises(BankNotFoundError, match="not found"):
        create_teacher("hf-hub:kf-tests/no-such-teacher", tasks=TASKS, one_vs_rest=True)


def test_a_timm_ckn_round_trips_through_a_bank(tmp_path: Path, hub_server, hf_cache: Path) -> None:
    spec = InputSpec(channels=1, size=32, mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    ckn = CommonKnowledgeNetwork(dict(arch="timm:test_resnet", in_channels=1, mean=[0.5], std=[0.5]))
    encoder = asdict(EncoderConfig(widths=[4, 8], strides=[2, 2], mean=[0.5], std=[0.5]))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width) for t in TASKS[:3]]
    bank = FactorBank.from_modules(ckn, tsns, input_spec=spec)
    loaded = FactorBank.from_pretrained(bank.save_pretrained(tmp_path / "bank"))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        for name, logits in loaded.assemble()(x).items():
            torch.testing.assert_close(logits, bank.assemble()(x)[name], rtol=0, atol=1e-5)

    config = tmp_path / "bank" / "ckn" / "config.json"
    for arch in ("timm:hf-hub:evil/model", "timm:local-dir:/etc", "timm:no_such_model"):
        config.write_text(json.dumps({"backbone": dict(json.loads(config.read_text())["backbone"], arch=arch)}))
        hub_server.clear_log()
        with pytest.raises(UnknownNameError, match="unknown timm model"):
            FactorBank.from_pretrained(tmp_path / "bank")
        assert hub_server.requests == []  # a config never makes timm download anything


def test_a_safetensors_file_is_never_mistaken_for_a_pickle(tmp_path: Path) -> None:
    """Its first byte is the low byte of the header length: 0x80 (pickle's opcode) must still load."""
    from kf_model.teachers import read_state_dict

    path = tmp_path / "w.safetensors"
    for pad in range(400):
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))
    torch.save({"w": torch.ones(2)}, tmp_path / "renamed.safetensors")  # a pickle with the wrong suffix
    with pytest.raises(UnsafeWeightsError, match="pickle-based"):
        read_state_dict(tmp_path / "renamed.safetensors")


def test_a_teacher_name_is_parsed_once_into_its_registered_source(tmp_path: Path) -> None:
    from kf_model.teachers import SOURCE_FORMS, SOURCES, TeacherSource, parse_source
    from kf_model.teachers.sources import FolderSource, HubSource, TimmSource, TorchvisionSource

    cases = {"timm:resnet18.a1_in1k": (TimmSource, "resnet18.a1_in1k"),
             "torchvision:resnet18": (TorchvisionSource, "resnet18"),
             "hf-hub:org/repo@v1": (HubSource, "org/repo@v1"), str(tmp_path): (FolderSource, str(tmp_path))}
    for name, (kind, rest) in cases.items():
        source = parse_source(name)
        assert type(source) is kind and source.name == rest and str(source) == name
    assert all(kind.form in SOURCE_FORMS for kind in SOURCES)
    with pytest.raises(UnknownNameError, match="no such teacher folder"):
        parse_source(tmp_path / "missing").build(tasks=TASKS, one_vs_rest=True)
    with pytest.raises(UnknownNameError, match=r"a folder without config\.json, not a teacher"):
        parse_source(tmp_path).build(tasks=TASKS, one_vs_rest=True)
    with pytest.raises(UnknownNameError, match="timm:<name> or torchvision:<name>"):
        parse_source("hf-hub:org/repo").with_new_head(weights=None, tasks=TASKS, one_vs_rest=True)

    class EchoSource(TeacherSource):  # adding a source is one class in the registry
        prefix, form = "echo:", "echo:<anything>"

    SOURCES.append(EchoSource)
    try:
        assert type(parse_source("echo:x")) is EchoSource
    finally:
        SOURCES.remove(EchoSource)
