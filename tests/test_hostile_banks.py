"""Banks as an attacker or an unlucky user would make them: every one is refused with a kf error, early.

A bank from the Hub is data. Its task names become folders, its configs become widths and loops, its
manifest becomes sizes: each is checked before it is used (kf_model.data.specs, kf_model.limits, kf_model.bank).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kf_model import FactorBank, TaskSpec
from kf_model.bank import bank_path
from kf_model.data.specs import InputSpec, validate_task_name
from kf_model.errors import (
    BankNotFoundError,
    CorruptWeightsError,
    EmptySelectionError,
    IncompatibleFactorsError,
    InvalidConfigError,
    InvalidTaskNameError,
    KFError,
    UnknownTaskError,
    name_list,
)
from kf_model.limits import MAX_PARAMETERS
from tests.test_bank import make_bank


@pytest.fixture(scope="module")
def bank() -> FactorBank:
    return make_bank()


@pytest.fixture
def bank_dir(bank: FactorBank, tmp_path: Path) -> Path:
    return bank.save_pretrained(tmp_path / "banks" / "bank")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    data = change(data) or data
    path.write_text(json.dumps(data))


def rename_task(bank_dir: Path, old: str, new: str) -> None:
    """What a hostile author does: the manifest and the TSN's own config both name ``new``."""
    def manifest(data):
        for task in data["tasks"]:
            if task["name"] == old:
                task["name"] = new
    edit_json(bank_dir / "factors.json", manifest)
    edit_json(bank_dir / f"tsn/{old}/config.json", lambda data: data["task"].update(name=new))


# ----------------------------------------------------------------------------- one rule for task names

@pytest.mark.parametrize("name", ["shape", "pos_x", "t_shirt_top", "class-3", "0", "a" * 64])
def test_slugs_are_task_names(name: str) -> None:
    assert validate_task_name(name) == name
    assert TaskSpec(name, ("no", "yes"), "").name == name


@pytest.mark.parametrize("name", ["../../../outside_shape", "/etc/passwd", "..", ".", "a/b", "a\\b", "Shape",
                                  "shape.png", "", "_x", "-x", "a" * 65, "con", "nul", "x y", "tâche", 7, None])
def test_anything_else_is_refused(name) -> None:
    with pytest.raises(InvalidTaskNameError, match="task name"):
        validate_task_name(name)
    with pytest.raises(InvalidTaskNameError):
        TaskSpec(name, ("no", "yes"), "")


def test_bank_paths_stay_inside_the_bank(tmp_path: Path) -> None:
    assert bank_path(tmp_path, "tsn", "shape") == tmp_path / "tsn" / "shape"
    for parts in (("tsn", "../../x"), ("tsn", "/abs"), ("..",), ("tsn", "a", "..", "..", "..")):
        with pytest.raises(InvalidConfigError, match="outside the bank folder"):
            bank_path(tmp_path, *parts)


# ----------------------------------------------------------------------------- 1. path traversal

def test_a_task_named_like_a_path_never_reads_outside_the_bank(bank_dir: Path) -> None:
    outside = bank_dir.parent / "outside_shape"  # a valid TSN, planted where ../outside_shape would reach
    shutil.copytree(bank_dir / "tsn/shape", outside)
    for hostile in ("../../outside_shape", str(outside)):  # relative and absolute
        folder = bank_dir.parent / f"hostile-{len(hostile)}"
        shutil.copytree(bank_dir, folder)
        rename_task(folder, "shape", hostile)
        with pytest.raises(InvalidTaskNameError, match="invalid task name"):
            FactorBank.from_pretrained(folder)
        with pytest.raises(InvalidTaskNameError):
            FactorBank.from_pretrained(folder, tasks=["scale"])  # the manifest is refused as a whole


def test_save_pretrained_never_writes_outside_its_folder(bank: FactorBank, tmp_path: Path) -> None:
    sneaky = bank.subset(["shape"])
    sneaky.tsns = {"../../escaped": sneaky.tsns["shape"]}  # a name that bypassed TaskSpec (defence in depth)
    with pytest.raises(InvalidConfigError, match="outside the bank folder"):
        sneaky.save_pretrained(tmp_path / "export" / "bank")
    assert not (tmp_path / "escaped").exists()


def test_a_tsn_must_sit_in_the_folder_of_its_task(bank_dir: Path) -> None:
    shutil.rmtree(bank_dir / "tsn/scale")
    shutil.copytree(bank_dir / "tsn/shape", bank_dir / "tsn/scale")  # shape's TSN under scale's name
    with pytest.raises(IncompatibleFactorsError, match=r"tsn/scale: the TSN in this folder was trained for task "
                                                       r"'shape', not 'scale'"):
        FactorBank.from_pretrained(bank_dir, tasks=["scale"])


def test_a_tsn_whose_classes_differ_from_the_manifest_is_refused(bank_dir: Path) -> None:
    edit_json(bank_dir / "tsn/shape/config.json", lambda data: data["task"].update(labels=["a", "b", "c"]))
    with pytest.raises(IncompatibleFactorsError, match="classes differ"):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])


def test_a_task_listed_twice_is_refused(bank_dir: Path) -> None:
    edit_json(bank_dir / "factors.json", lambda data: data["tasks"].append(dict(data["tasks"][0])))
    with pytest.raises(CorruptWeightsError, match="'shape' more than once"):
        FactorBank.from_pretrained(bank_dir)
    with pytest.raises(CorruptWeightsError, match="more than once"):
        FactorBank.from_modules(make_bank().ckn, [make_bank().tsns["shape"]] * 2,
                                input_spec=make_bank().input_spec)


def test_a_hostile_hub_bank_is_refused_before_any_tsn_download(bank: FactorBank, hub_server, hub_repo_id: str,
                                                               hf_cache: Path, tmp_path: Path) -> None:
    from kf_model.serving import BankRegistry

    bank.push_to_hub(hub_repo_id)
    manifest = json.loads(hub_server.read_file(hub_repo_id, "factors.json"))
    manifest["tasks"][0]["name"] = "../../../outside_shape"
    hub_server.commit(hub_repo_id, add={"factors.json": json.dumps(manifest).encode()})
    hub_server.clear_log()
    with pytest.raises(InvalidTaskNameError, match="outside_shape"):
        FactorBank.from_pretrained(hub_repo_id)
    registry = BankRegistry(None, warmup=False)  # the app: loading the bank, then Export, never get that far
    with pytest.raises(InvalidTaskNameError):
        registry.get(hub_repo_id)
    with pytest.raises(KFError):
        registry.export_zip(hub_repo_id, None, out_dir=tmp_path / "exports")
    assert hub_server.downloaded_files(hub_repo_id) == ["factors.json"]
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


# ----------------------------------------------------------------------------- 2. configs are bounded first

def count_convs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every Conv2d that gets built (on any device) is counted: a refused config builds none."""
    built: list[int] = []
    real = torch.nn.Conv2d

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn, "Conv2d", counting)
    return built


def test_a_deep_ckn_config_is_refused_before_anything_is_built(bank_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    edit_json(bank_dir / "ckn/config.json", lambda data: data["backbone"].update(num_stages=200_000))
    built = count_convs(monkeypatch)
    with pytest.raises(InvalidConfigError, match=r"ckn.*backbone\.num_stages must be between 3 and 8, got 200,000"):
        FactorBank.from_pretrained(bank_dir)
    assert built == []


@pytest.mark.parametrize(("key", "value", "message"), [
    ("width", 10**6, r"backbone\.width must be between 1 and 4,096"),
    ("width", "32", r"backbone\.width must be an integer"),
    ("width", 32.0, r"backbone\.width must be an integer"),
    ("stem_stride", 0, r"backbone\.stem_stride must be between 1 and 4"),
    ("in_channels", 10**9, r"backbone\.in_channels must be between 1 and 4"),
    ("mean", [0.1] * 10**4, r"backbone\.mean must be a list of 1 or 1 numbers"),
    ("std", [0.0], r"backbone\.std\[0\] must be one of positive finite numbers"),
    ("coord_channels", "yes", r"backbone\.coord_channels must be true or false"),
])
def test_each_ckn_value_is_checked(bank_dir: Path, key: str, value, message: str) -> None:
    edit_json(bank_dir / "ckn/config.json", lambda data: data["backbone"].update({key: value}))
    with pytest.raises(InvalidConfigError, match=message):
        FactorBank.from_pretrained(bank_dir)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["encoder"].update(widths=[8] * 10**5), r"encoder\.widths must be a list of 1 to 8 integers"),
    (lambda d: d["encoder"].update(strides=[2, 2]), "need the same length"),
    (lambda d: d.update(ckn_width=-1), r"ckn_width must be between 1 and 4,096"),
    (lambda d: d["task"].update(labels=["x"] * 100_000), r"labels must be a list of 2 to 32,768"),
    (lambda d: d.update(variational="no"), "variational must be true or false"),
    (lambda d: d.update(unknown_key=1), "does not describe a TaskSpecificNetwork"),
])
def test_each_tsn_value_is_checked(bank_dir: Path, change, message: str) -> None:
    edit_json(bank_dir / "tsn/shape/config.json", change)
    with pytest.raises(KFError, match=message):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])


def test_the_parameter_total_is_checked_on_the_meta_device(bank_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every value within its own limit, together 8 stages doubling from 4,096 channels: trillions of weights
    edit_json(bank_dir / "ckn/config.json", lambda data: data["backbone"].update(width=4096, num_stages=8))
    real = torch.nn.Conv2d

    def conv_on_meta_only(in_channels, out_channels, *args, **kwargs):
        assert torch.empty(0).device.type == "meta", "a layer of the oversized config was allocated"
        return real(in_channels, out_channels, *args, **kwargs)

    monkeypatch.setattr(torch.nn, "Conv2d", conv_on_meta_only)
    with pytest.raises(InvalidConfigError, match=rf"ckn.*parameters; kf loads at most {MAX_PARAMETERS:,}"):
        FactorBank.from_pretrained(bank_dir)


def test_a_hostile_hub_config_is_refused(bank: FactorBank, hub_server, hub_repo_id: str, hf_cache: Path) -> None:
    bank.push_to_hub(hub_repo_id)
    config = json.loads(hub_server.read_file(hub_repo_id, "ckn/config.json"))
    config["backbone"]["num_stages"] = 200_000
    hub_server.commit(hub_repo_id, add={"ckn/config.json": json.dumps(config).encode()})
    with pytest.raises(InvalidConfigError, match=r"num_stages must be between 3 and 8"):
        FactorBank.from_pretrained(hub_repo_id, tasks=["shape"])


@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda d: [d], CorruptWeightsError, "holds a JSON list, not an object"),
    (lambda d: d.update(tasks={"shape": 1}), CorruptWeightsError, "'tasks' must be a list"),
    (lambda d: d.update(tasks=[]), CorruptWeightsError, "'tasks' must be a list of 1 to"),
    (lambda d: d.update(ckn_fingerprint=7), CorruptWeightsError, "sha256"),
    (lambda d: d.__delitem__("input_spec"), CorruptWeightsError, "lacks 'input_spec'"),
    (lambda d: d["input_spec"].update(size=10**6), InvalidConfigError, r"input_spec\.size must be between 1 and"),
    (lambda d: d["input_spec"].update(channels=0), InvalidConfigError, r"input_spec\.channels"),
    (lambda d: d.update(teacher=[1]), CorruptWeightsError, "'teacher' must be a JSON object"),
    (lambda d: d["tasks"][0].update(labels="abc"), InvalidConfigError, "labels must be a list"),
    (lambda d: d["tasks"].__setitem__(0, "shape"), InvalidConfigError, "a task must be an object"),
])
def test_each_manifest_field_is_checked(bank_dir: Path, change, error: type[Exception], message: str) -> None:
    edit_json(bank_dir / "factors.json", change)
    with pytest.raises(error, match=message):
        FactorBank.from_pretrained(bank_dir)


# ----------------------------------------------------------------------------- 5. kf errors, short messages

def test_empty_selections_are_kf_errors(bank: FactorBank, bank_dir: Path) -> None:
    with pytest.raises(EmptySelectionError, match="at least one task"):
        bank.assemble([])
    with pytest.raises(EmptySelectionError, match="at least one task"):
        FactorBank.from_pretrained(bank_dir, tasks=[])


def test_a_single_task_name_is_not_split_into_letters(bank: FactorBank, bank_dir: Path) -> None:
    assert list(FactorBank.from_pretrained(bank_dir, tasks="shape").tsns) == ["shape"]
    assert [t.name for t in bank.assemble("scale").tasks] == ["scale"]


def test_a_name_too_long_for_the_file_system_is_a_kf_error() -> None:
    with pytest.raises(BankNotFoundError, match="neither a folder nor a Hub repo id"):
        FactorBank.from_pretrained("x" * 300)
    with pytest.raises(BankNotFoundError, match="neither an existing folder nor a Hub repo id"):
        FactorBank.from_pretrained("org/" + "x" * 300)


def test_ten_thousand_unknown_tasks_make_a_short_message(bank: FactorBank, bank_dir: Path) -> None:
    names = [f"task{i}" for i in range(10_000)]
    for call in (lambda: bank.assemble(names), lambda: FactorBank.from_pretrained(bank_dir, tasks=names)):
        with pytest.raises(UnknownTaskError, match="'task4' and 9,995 more") as raised:
            call()
        assert len(str(raised.value)) < 400


def test_name_list() -> None:
    assert name_list([]) == ""
    assert name_list(["a", "b"]) == "'a', 'b'"
    assert name_list([f"n{i}" for i in range(7)], limit=3) == "'n0', 'n1', 'n2' and 4 more"


def test_input_specs_are_checked_in_code_too() -> None:
    with pytest.raises(InvalidConfigError, match="std"):
        InputSpec(channels=1, size=28, mean=(0.5,), std=(0.0,))
    with pytest.raises(InvalidConfigError, match="mean must be a list of 1 or 3"):
        InputSpec(channels=3, size=28, mean=(0.5, 0.5), std=(0.2,))
