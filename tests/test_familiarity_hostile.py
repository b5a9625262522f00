"""Hostile familiarity statistics (issue 18 item 5): a bank whose ``familiarity/`` files lie about their size,
hold text where numbers belong, or NaN, still answers; its statistics are dropped with a message that names
the file and the key; and nothing ever reads as "familiar" on NaN."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from kf_model.serving import BankRegistry
from kf_model.serving.familiarity import FamiliarityModel, features_of, fit
from kf_model.serving.input_signals import SignalLimits
from tests.app_fixtures import make_bank


def calibrated_bank(root: Path) -> Path:
    """A small dsprites bank (folder ``root/bank``) with familiarity statistics fitted on random images."""
    bank = make_bank("dsprites")
    folder = bank.save_pretrained(root / "bank")
    torch.manual_seed(0)
    model = fit(bank.ckn, [torch.rand(64, 1, 64, 64) * 0.3], [torch.rand(100, 1, 64, 64) * 0.3])
    model.save(folder, {"ckn_fingerprint": bank.manifest.ckn_fingerprint,
                        "input_signals": {"applies": True, "limits": {"border_colour": 0.05}}})
    manifest = json.loads((folder / "factors.json").read_text())
    manifest["familiarity"] = {"file": "familiarity/model.safetensors", "method": "mahalanobis-ckn-pooled"}
    (folder / "factors.json").write_text(json.dumps(manifest))
    return folder


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "familiarity" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(folder: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    path = folder / "familiarity" / "model.safetensors"
    save_file(change(load_file(str(path))), str(path))


def hundred_features(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Statistics of 100 features, consistent among themselves, for a network that gives another number."""
    return {"mean": torch.zeros(100), "precision": torch.eye(100), "reference": tensors["reference"]}


def nan_mean(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**tensors, "mean": torch.full_like(tensors["mean"], math.nan)}


HOSTILE = {
    "size 100 against the network's features": (lambda f: (edit_tensors(f, hundred_features),
                                                           edit_config(f, dim=100)),
                                                "statistics of 100 features, but this bank's network gives"),
    "flag_rate 'abc'": (lambda f: edit_config(f, flag_rate="abc"), "'flag_rate' must be a number, got str"),
    "NaN mean": (lambda f: edit_tensors(f, nan_mean), "'mean' holds NaN or infinite values"),
    "NaN threshold": (lambda f: edit_config(f, threshold=math.nan), "'threshold' must be a finite number"),
    "text signal limit": (lambda f: edit_config(f, input_signals={"limits": {"border_colour": "x"}}),
                          "'border_colour' must be a number"),
    "config of the wrong kind": (lambda f: (f / "familiarity" / "config.json").write_text("[1, 2]"),
                                 "must hold a JSON object"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_statistics_are_dropped_with_a_message_and_the_bank_still_answers(tmp_path: Path,
                                                                                  case: str) -> None:
    spoil, words = HOSTILE[case]
    folder = calibrated_bank(tmp_path)
    spoil(folder)
    registry = BankRegistry(tmp_path, allow_hub=False, warmup=False)
    result = registry.api_predict(_image(tmp_path), "bank", ["shape"])
    assert set(result["shape"]) == {"square", "ellipse", "heart"}
    report = result["_input"]
    assert report["unfamiliar"] is None and report["familiarity"] is None  # it cannot tell; never "familiar"
    problem = registry.get("bank").familiarity_problem
    assert problem is not None and words in problem and "familiarity" in problem


def test_the_untouched_statistics_load_and_score(tmp_path: Path) -> None:
    calibrated_bank(tmp_path)
    registry = BankRegistry(tmp_path, allow_hub=False, warmup=False)
    report = registry.api_predict(_image(tmp_path), "bank", ["shape"])["_input"]
    assert report["unfamiliar"] in (True, False) and 0.0 <= report["familiarity"] <= 1.0
    assert registry.get("bank").familiarity.signal_limits == SignalLimits({"border_colour": 0.05})


def test_nan_features_or_signals_are_never_familiar(tmp_path: Path) -> None:
    folder = calibrated_bank(tmp_path)
    model = FamiliarityModel.load(folder)
    features = features_of(make_bank("dsprites").ckn, [torch.zeros(2, 1, 64, 64)])
    features[0, 0] = math.nan
    nan_score, _ = model.score(features)
    assert nan_score["unfamiliar"] is True and nan_score["familiarity"] == 0.0 and nan_score["distance"] is None
    assert "not finite" in nan_score["reason"]
    typical = model.score(features[1:], [{"border_colour": math.nan}])[0]
    assert typical["unfamiliar"] is True and "colour around the edges" in typical["reason"]
    model.precision = torch.full_like(model.precision, math.nan)  # statistics spoiled after loading
    assert all(s["unfamiliar"] for s in model.score(features[1:]))


def test_a_hub_banks_hostile_statistics_are_refused_when_it_loads(tmp_path: Path, hub_server, hub_repo_id: str,
                                                                hf_cache: Path) -> None:
    from huggingface_hub import HfApi

    folder = calibrated_bank(tmp_path / "upload")
    edit_config(folder, flag_rate="abc")
    api = HfApi()
    api.create_repo(hub_repo_id, exist_ok=True)
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder)
    registry = BankRegistry(tmp_path / "no-bundled", warmup=False)
    result = registry.api_predict(_image(tmp_path), hub_repo_id, ["shape"])
    assert result["_input"]["unfamiliar"] is None
    assert "'flag_rate' must be a number" in registry.get(hub_repo_id).familiarity_problem


def _image(folder: Path) -> str:
    path = folder / "shape.png"
    picture = Image.new("L", (64, 64))
    picture.paste(255, (24, 24, 40, 40))
    picture.save(path)
    return str(path)


def test_an_oversized_statistics_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kf_model.errors import CorruptWeightsError
    from kf_model.serving import familiarity

    folder = calibrated_bank(tmp_path)
    monkeypatch.setattr(familiarity, "MAX_WEIGHTS_BYTES", 1024)  # the real bound is ~135 MB: no such file here
    with pytest.raises(CorruptWeightsError, match="larger than 0 MB"):
        FamiliarityModel.load(folder)
