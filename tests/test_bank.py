"""FactorBank: save/load, push/pull through the test Hub, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kf_model import FactorBank
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    BankNotFoundError,
    CorruptWeightsError,
    HubUnavailableError,
    IncompatibleFactorsError,
    InvalidConfigError,
    UnknownTaskError,
    UnsafeWeightsError,
)
from kf_model.models import CommonKnowledgeNetwork, EncoderConfig, TaskSpecificNetwork
from tests.test_networks import randomize_batchnorm

TASKS = [TaskSpec("shape", ("square", "ellipse", "heart"), "Which shape"),
         TaskSpec("scale", tuple(f"{s}" for s in range(6)), "How big"),
         TaskSpec("pos_x", tuple(f"{s}" for s in range(4)), "Where")]
SPEC = InputSpec(channels=1, size=32, mean=(0.1,), std=(0.3,))


def make_bank(seed: int = 0) -> FactorBank:
    torch.manual_seed(seed)
    ckn = CommonKnowledgeNetwork(dict(arch="cnn", width=4, coord_channels=True))
    encoder = asdict(EncoderConfig(widths=[4, 4, 8], coord_channels=True))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width) for t in TASKS]
    randomize_batchnorm(ckn, *tsns)
    return FactorBank.from_modules(ckn, tsns, input_spec=SPEC, dataset="dsprites",
                                   teacher={"description": "test teacher", "parameters": 1000})


@pytest.fixture(scope="module")
def bank() -> FactorBank:
    return make_bank()


@pytest.fixture
def bank_dir(bank: FactorBank, tmp_path: Path) -> Path:
    return bank.save_pretrained(tmp_path / "bank")


def outputs(bank: FactorBank, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return bank.assemble()(x)


def test_save_load_round_trip_is_strict_and_bit_identical(bank: FactorBank, bank_dir: Path) -> None:
    files = sorted(str(p.relative_to(bank_dir)) for p in bank_dir.rglob("*") if p.is_file())
    assert files == ["README.md", "ckn/config.json", "ckn/model.safetensors", "factors.json",
                     *[f"tsn/{t.name}/{f}" for t in sorted(TASKS, key=lambda t: t.name)
                       for f in ("config.json", "model.safetensors")]]
    loaded = FactorBank.from_pretrained(bank_dir)
    x = torch.rand(4, 1, 32, 32)
    for name, logits in outputs(bank, x).items():
        assert torch.equal(logits, outputs(loaded, x)[name])
    assert [t.name for t in loaded.tasks] == [t.name for t in TASKS]
    manifest = json.loads((bank_dir / "factors.json").read_text())
    assert manifest["format_version"] == 1 and manifest["input_spec"]["size"] == 32
    tsn_config = json.loads((bank_dir / "tsn/shape/config.json").read_text())
    assert tsn_config["ckn_fingerprint"] == manifest["ckn_fingerprint"] == loaded.manifest.ckn_fingerprint


def test_model_card_has_hub_metadata_and_usage(bank_dir: Path) -> None:
    card = (bank_dir / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: kf" in card and "license: apache-2.0" in card
    assert "FactorBank.from_pretrained" in card and "| `pos_x` | 4 |" in card


def test_subset_and_factor_api(bank: FactorBank, bank_dir: Path) -> None:
    two = FactorBank.from_pretrained(bank_dir, tasks=["pos_x", "shape"])
    assert [t.name for t in two.tasks] == ["shape", "pos_x"]  # manifest order
    assert [t.name for t in two.available_tasks] == ["shape", "scale", "pos_x"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(two.factor("pos_x")(x), bank.factor("pos_x")(x), rtol=0, atol=1e-6)
    with pytest.raises(UnknownTaskError, match=r"'scale'.*not loaded"):
        two.assemble(["scale"])
    with pytest.raises(UnknownTaskError, match=r"available: 'shape', 'scale', 'pos_x'$"):
        FactorBank.from_pretrained(bank_dir, tasks=["colour"])


def test_preprocess_matches_the_input_spec(bank: FactorBank) -> None:
    from PIL import Image

    x = bank.preprocess(Image.new("RGB", (100, 50), (255, 255, 255)))
    assert x.shape == (1, 1, 32, 32) and x.max() <= 1 and x.min() >= 0
    assert x[0, 0, 16, 16] == pytest.approx(1.0, abs=1e-3) and x[0, 0, 0, 16] == 0  # padded, not stretched


def test_pickled_weights_are_refused_and_never_unpickled(bank_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    (bank_dir / "tsn/scale/model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, bank_dir / "tsn/scale/pytorch_model.bin")  # real torch.save: a pickle
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin.*never unpickles"):
        FactorBank.from_pretrained(bank_dir)
    assert FactorBank.from_pretrained(bank_dir, tasks=["shape"]).tasks[0].name == "shape"


def test_corrupt_weights_name_the_file(bank_dir: Path) -> None:
    weights = bank_dir / "tsn/pos_x/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptWeightsError, match=r"tsn/pos_x/model\.safetensors"):
        FactorBank.from_pretrained(bank_dir)


def test_wrong_shaped_weights_are_refused_strictly(bank_dir: Path) -> None:
    save_file({"proj.weight": torch.zeros(3, 3)}, bank_dir / "tsn/shape/model.safetensors")
    with pytest.raises(CorruptWeightsError, match="tsn/shape"):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])


def test_a_config_with_absurd_sizes_is_refused_before_allocating(bank_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = bank_dir / "tsn/shape/config.json"
    values = json.loads(config.read_text())
    values["encoder"]["widths"] = [10**6] * len(values["encoder"]["widths"])  # terabytes, if it were built
    config.write_text(json.dumps(values))
    real_conv = torch.nn.Conv2d

    def conv_on_meta_only(in_channels, out_channels, *args, **kwargs):
        if max(in_channels, out_channels) >= 10**6:
            assert torch.empty(0).device.type == "meta", "a layer of the absurd config was allocated"
        return real_conv(in_channels, out_channels, *args, **kwargs)

    monkeypatch.setattr(torch.nn, "Conv2d", conv_on_meta_only)
    with pytest.raises(InvalidConfigError, match=r"tsn/shape.*encoder\.widths\[0\] must be between 1 and 4,096"):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])
    values["encoder"]["widths"] = [8, 8, 64]  # within the limits, but not the shapes of the weights file
    config.write_text(json.dumps(values))
    with pytest.raises(CorruptWeightsError, match=r"tsn/shape.*does not match its config\.json: encoder"):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])


def test_factors_from_two_factorizations_are_refused(bank_dir: Path, tmp_path: Path) -> None:
    other = make_bank(seed=1).save_pretrained(tmp_path / "other")
    shutil.rmtree(bank_dir / "tsn/scale")
    shutil.copytree(other / "tsn/scale", bank_dir / "tsn/scale")
    with pytest.raises(IncompatibleFactorsError, match="different factorizations"):
        FactorBank.from_pretrained(bank_dir)
    shutil.copy(other / "ckn/model.safetensors", bank_dir / "ckn/model.safetensors")
    with pytest.raises(IncompatibleFactorsError, match="CKN was replaced"):
        FactorBank.from_pretrained(bank_dir, tasks=["shape"])


def test_missing_folder_manifest_and_unsupported_format(bank_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BankNotFoundError, match="neither an existing folder nor a Hub repo id"):
        FactorBank.from_pretrained(str(tmp_path / "does/not/exist"))
    with pytest.raises(BankNotFoundError, match=r"no factors\.json"):
        FactorBank.from_pretrained(tmp_path)
    manifest = json.loads((bank_dir / "factors.json").read_text())
    (bank_dir / "factors.json").write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(IncompatibleFactorsError, match="format 99"):
        FactorBank.from_pretrained(bank_dir)
    (bank_dir / "factors.json").write_text("{not json")
    with pytest.raises(CorruptWeightsError, match=r"factors\.json"):
        FactorBank.from_pretrained(bank_dir)


# ----------------------------------------------------------------------------- through the test Hub

def test_push_pull_by_tag_two_tasks_then_offline(bank: FactorBank, hub_server, hub_repo_id: str,
                                                 hf_cache: Path) -> None:
    first = bank.push_to_hub(hub_repo_id, commit_message="first bank", tag="v1")
    assert hub_server.resolve(hub_repo_id, "v1") == first
    # a later push replaces every file of the bank: the tag keeps serving v1
    make_bank(seed=2).subset(["shape"]).push_to_hub(hub_repo_id, commit_message="second bank")
    assert "tsn/scale/model.safetensors" not in hub_server.list_files(hub_repo_id)

    hub_server.clear_log()
    pulled = FactorBank.from_pretrained(hub_repo_id, tasks=["shape", "pos_x"], revision="v1")
    fetched = sorted(hub_server.downloaded_files(hub_repo_id))
    assert fetched == sorted(["factors.json", "ckn/config.json", "ckn/model.safetensors",
                              "tsn/shape/config.json", "tsn/shape/model.safetensors",
                              "tsn/pos_x/config.json", "tsn/pos_x/model.safetensors"])
    x = torch.rand(3, 1, 32, 32)
    expected = outputs(bank.subset(["shape", "pos_x"]), x)
    for name, logits in outputs(pulled, x).items():
        assert torch.equal(logits, expected[name])

    hub_server.clear_log()
    cached = FactorBank.from_pretrained(hub_repo_id, tasks=["shape", "pos_x"], revision="v1", local_files_only=True)
    assert hub_server.downloaded_files(hub_repo_id) == []
    assert torch.equal(outputs(cached, x)["shape"], expected["shape"])
    with pytest.raises(HubUnavailableError, match="not in the local cache"):
        FactorBank.from_pretrained(hub_repo_id, tasks=["scale"], revision="v1", local_files_only=True)

    # HF_HUB_OFFLINE=1 in a fresh process serves the same factors from the cache
    script = ("import sys; from kf_model import FactorBank; "
              f"b = FactorBank.from_pretrained({hub_repo_id!r}, tasks=['shape', 'pos_x'], revision='v1'); "
              "print(b.manifest.ckn_fingerprint)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache), HF_ENDPOINT="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == bank.manifest.ckn_fingerprint


def test_hub_refusals(bank: FactorBank, hub_server, hub_repo_id: str, hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BankNotFoundError, match="not found"):
        FactorBank.from_pretrained("kf-tests/no-such-repo")
    bank.push_to_hub(hub_repo_id)
    with pytest.raises(BankNotFoundError, match="revision 'v9' not found"):
        FactorBank.from_pretrained(hub_repo_id, revision="v9")

    # a repo whose CKN exists only as a pickle: refused, and the pickle is not even downloaded
    hub_server.commit(hub_repo_id, add={"ckn/pytorch_model.bin": b"\x80\x04pickle"}, delete=["ckn/model.safetensors"])
    hub_server.clear_log()
    with pytest.raises(CorruptWeightsError, match=r"ckn.*model\.safetensors is missing"):
        FactorBank.from_pretrained(hub_repo_id, tasks=["shape"])
    assert "ckn/pytorch_model.bin" not in hub_server.downloaded_files(hub_repo_id)

    other = f"{hub_repo_id}-plain"
    hub_server.create_repo(other)
    hub_server.commit(other, add={"README.md": b"# just a model\n"})
    with pytest.raises(BankNotFoundError, match="not a factor bank"):
        FactorBank.from_pretrained(other)


def test_unreachable_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, hf_cache: Path) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(HubUnavailableError, match="kf-tests/anything"):
        FactorBank.from_pretrained("kf-tests/anything")
    with pytest.raises(HubUnavailableError):
        make_bank().push_to_hub("kf-tests/anything")


# ------------------------------------------------------------------ the Python API refuses what it would lose

def test_save_pretrained_never_writes_over_what_it_did_not_make(bank: FactorBank, bank_dir: Path,
                                                                tmp_path: Path) -> None:
    """Its own folder (a Hub snapshot's files are links into the cache; a subset would be written back as the
    whole bank), someone's folder, an empty path (the current folder): refused before anything is written. An
    earlier bank's folder is replaced as before."""
    from kf_model.errors import InvalidArgumentError

    subset = FactorBank.from_pretrained(bank_dir, tasks=["shape"])
    with pytest.raises(InvalidArgumentError, match="is the folder this bank was read from"):
        subset.save_pretrained(bank_dir)
    assert [t.name for t in FactorBank.from_pretrained(bank_dir).tasks] == ["shape", "scale", "pos_x"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("mine")
    with pytest.raises(InvalidArgumentError, match=r"holds README\.md and is not a factor bank"):
        bank.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["README.md"] and (mine / "README.md").read_text() == "mine"
    for empty in ("", None):
        with pytest.raises(InvalidArgumentError, match="needs a folder path"):
            bank.save_pretrained(empty)
    subset.save_pretrained(tmp_path / "copy")
    assert subset.save_pretrained(tmp_path / "copy") == tmp_path / "copy"  # an earlier bank: replaced


def test_push_to_hub_checks_before_staging_and_keeps_unloaded_tasks(bank_dir: Path, monkeypatch) -> None:
    """A bank pulled with some tasks and pushed back would have deleted the others on the Hub (the upload
    replaces tsn/ whole); a bad repo id or extra_files failed only after staging the whole bank."""
    from kf_model.bank import factor_bank
    from kf_model.errors import InvalidArgumentError

    staged = []
    monkeypatch.setattr(factor_bank.FactorBank, "save_pretrained", lambda *a, **k: staged.append(a))
    subset = FactorBank.from_pretrained(bank_dir, tasks=["shape"])
    subset.source = "org/bank@v1"  # as pulled from the Hub
    with pytest.raises(InvalidArgumentError, match=r"loaded without 'scale', 'pos_x'.*delete their factors"):
        subset.push_to_hub("org/bank")
    for repo_id, extra, message in (("../x", None, "is not a Hub repo id"), (5, None, "is not a Hub repo id"),
                                    ("org/other", bank_dir / "nope", "is not a folder")):
        with pytest.raises(InvalidArgumentError, match=message):
            subset.push_to_hub(repo_id, extra_files=extra)
    assert staged == []


def test_the_python_api_refuses_task_lists_devices_and_paths_in_words(bank: FactorBank, bank_dir: Path,
                                                                       tmp_path: Path) -> None:
    from kf_model.errors import InvalidArgumentError, UnwritablePathError

    for tasks in (5, [["shape"]], b"shape", {5}):
        with pytest.raises(InvalidArgumentError, match="task name"):
            bank.assemble(tasks)
    with pytest.raises(InvalidArgumentError, match="task name"):
        FactorBank.from_pretrained(bank_dir, tasks=5)
    for path in (None, 3, ""):
        with pytest.raises(BankNotFoundError, match="needs a bank folder or a Hub repo id"):
            FactorBank.from_pretrained(path)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="no CUDA device"):
            FactorBank.from_pretrained(bank_dir, device="cuda")
    with pytest.raises(InvalidArgumentError, match="is not a device"):
        bank.to("gpu0")
    weights = bank_dir / "ckn" / "model.safetensors"
    before = weights.read_bytes()
    for path, message in ((weights, "must end in .onnx"), (None, "needs a file path")):
        with pytest.raises(UnwritablePathError, match=message):
            bank.export_onnx(["shape"], path)
    assert weights.read_bytes() == before
    for revision in ("../../../x", "/etc/passwd", "a//b"):  # a path in the Hub cache's refs/ otherwise
        with pytest.raises(BankNotFoundError, match="is not a revision"):
            FactorBank.from_pretrained("org/repo", revision=revision, local_files_only=True)


def test_a_manifest_whose_input_spec_the_ckn_cannot_read_is_refused(bank_dir: Path) -> None:
    """channels=3 over a 1-channel CKN loaded, then refused every image and failed inside the ONNX exporter."""
    manifest = json.loads((bank_dir / "factors.json").read_text())
    manifest["input_spec"].update(channels=3, mean=[0.1] * 3, std=[0.3] * 3)
    (bank_dir / "factors.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleFactorsError, match="says 3-channel images but the CKN reads 1"):
        FactorBank.from_pretrained(bank_dir)


def test_add_task_takes_a_spec_and_a_tsn(bank_dir: Path) -> None:
    from kf_model.errors import InvalidArgumentError

    bank = FactorBank.from_pretrained(bank_dir)
    for spec, tsn in ((None, bank.tsns["shape"]), ("shape", bank.tsns["shape"]), (TASKS[0], None)):
        with pytest.raises(InvalidArgumentError, match="takes a TaskSpec and the TaskSpecificNetwork"):
            bank.add_task(spec, tsn)
