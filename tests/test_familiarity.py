"""Familiarity scores: the maths on known values, the stored statistics, calibration, and the bundled banks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from kf_model.bank import FactorBank
from kf_model.data.photos import offline_photos, open_photo
from kf_model.errors import CorruptWeightsError
from kf_model.serving import BankRegistry, familiarity, familiarity_check
from kf_model.serving.familiarity import FamiliarityModel, mahalanobis, shrunk_precision
from tests.app_fixtures import make_bank

BANKS = Path(__file__).resolve().parents[1] / "assets" / "factors"


def test_shrunk_precision_and_distance_on_known_values() -> None:
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    mean, precision = shrunk_precision(x, shrinkage=0.1)
    # covariance diag(2/3, 8/3), mean variance 5/3: shrunk = 0.9·cov + 0.1·(5/3)·I
    expected = torch.diag(torch.tensor([1 / (0.6 + 1 / 6), 1 / (2.4 + 1 / 6)]))
    torch.testing.assert_close(mean, torch.zeros(2))
    torch.testing.assert_close(precision, expected)
    distance = mahalanobis(torch.tensor([[1.0, 1.0], [0.0, 0.0]]), mean, precision)
    torch.testing.assert_close(distance, torch.tensor([expected[0, 0] + expected[1, 1], 0.0]))


def test_a_constant_feature_does_not_break_the_inverse() -> None:
    x = torch.randn(50, 3)
    x[:, 1] = 7.0  # a dead channel: zero variance
    _, precision = shrunk_precision(x)
    assert torch.isfinite(precision).all()


@pytest.mark.parametrize("bad", [torch.zeros(1, 3), torch.zeros(3)])
def test_too_few_features_are_refused(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        shrunk_precision(bad)


def test_familiarity_is_the_share_of_reference_images_farther_away() -> None:
    model = FamiliarityModel(torch.zeros(1), torch.ones(1, 1), torch.arange(1.0, 101.0), threshold=95.0)
    torch.testing.assert_close(model.familiarity(torch.tensor([0.5, 50.0, 100.0, 1000.0])),
                               torch.tensor([1.0, 0.5, 0.0, 0.0]))
    scores = model.score(torch.tensor([[3.0], [10.0]]))  # squared distances 9 and 100
    assert [s["unfamiliar"] for s in scores] == [False, True]
    assert scores[0]["familiarity"] == pytest.approx(0.91)


def fitted(tmp_path: Path) -> tuple[FactorBank, Path]:
    bank = make_bank("dsprites")
    folder = bank.save_pretrained(tmp_path / "bank")
    return bank, folder


def test_fit_flags_the_chosen_share_of_reference_images_and_round_trips(tmp_path: Path) -> None:
    bank, folder = fitted(tmp_path)
    torch.manual_seed(0)
    train = [torch.rand(64, 1, 64, 64) * 0.3 for _ in range(4)]
    test = [torch.rand(100, 1, 64, 64) * 0.3 for _ in range(2)]
    model = familiarity.fit(bank.ckn, train, test, flag_rate=0.1)
    distances = model.distance(familiarity.features_of(bank.ckn, test))
    assert (distances > model.threshold).float().mean().item() == pytest.approx(0.1, abs=0.01)
    model.save(folder, {"ckn_fingerprint": bank.manifest.ckn_fingerprint})
    loaded = FamiliarityModel.load(folder, bank.manifest.ckn_fingerprint)
    torch.testing.assert_close(loaded.precision, model.precision)
    assert loaded.threshold == model.threshold and loaded.flag_rate == 0.1
    assert FamiliarityModel.load(folder, "another-ckn") is None  # statistics of another CKN are not used
    assert FamiliarityModel.load(tmp_path / "nowhere") is None  # an older bank: no statistics, no score
    noise = torch.rand(20, 1, 64, 64)  # brighter than anything seen: flagged
    assert all(s["unfamiliar"] for s in model.score(familiarity.features_of(bank.ckn, [noise])))


def test_corrupt_statistics_are_refused_with_the_folder_named(tmp_path: Path) -> None:
    _, folder = fitted(tmp_path)
    stats = folder / "familiarity"
    stats.mkdir()
    (stats / "model.safetensors").write_bytes(b"not a safetensors file")
    (stats / "config.json").write_text(json.dumps({"method": familiarity.METHOD, "threshold": 1.0}))
    with pytest.raises(CorruptWeightsError, match="familiarity"):
        FamiliarityModel.load(folder)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*.safetensors") if "familiarity" not in p.parts}


def test_calibrate_adds_statistics_and_leaves_the_weights_alone(tmp_path: Path) -> None:
    _, folder = fitted(tmp_path)
    before = digest(folder)
    summary = familiarity.calibrate(folder, train_limit=256, test_limit=128)
    assert digest(folder) == before
    assert summary["reference_samples"] == 128 and summary["train_samples"] == 256
    manifest = json.loads((folder / "factors.json").read_text())
    assert manifest["familiarity"]["threshold"] == summary["threshold"]
    assert "white shape" in manifest["input_description"]
    loaded = FactorBank.from_pretrained(folder)  # still a valid bank, and the manifest keeps the new keys
    assert loaded.manifest.familiarity == manifest["familiarity"]
    assert loaded.manifest.to_dict()["input_description"] == manifest["input_description"]
    registry = BankRegistry(tmp_path, allow_hub=False, warmup=False)
    prediction = registry.predict(torch_image(), "bank", ["shape"])
    assert prediction.familiarity is not None and 0.0 <= prediction.familiarity["familiarity"] <= 1.0
    assert registry.api_predict(torch_image(), "bank", ["shape"])["_input"]["unfamiliar"] in (True, False)


def torch_image():
    from PIL import Image

    return Image.new("L", (64, 64))


def test_input_description_falls_back_to_the_input_spec() -> None:
    manifest = make_bank("dsprites").manifest
    manifest.dataset = "cells"
    assert familiarity.describe_input(manifest) == "64x64 grey images like the cells training images"
    manifest.input_description = "one stained cell"
    assert familiarity.describe_input(manifest) == "one stained cell"


def test_synthetic_photos_are_colour_and_reproducible() -> None:
    first, again = familiarity_check.synthetic_photos(3, seed=1), familiarity_check.synthetic_photos(3, seed=1)
    assert [p.size for p in first] == [(640, 480)] * 3 and {p.mode for p in first} == {"RGB"}
    assert [p.tobytes() for p in first] == [p.tobytes() for p in again]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dsprites", "fashion-mnist"])
def test_the_bundled_banks_flag_about_5_percent_of_their_own_test_images_and_the_photographs(name: str) -> None:
    registry = BankRegistry(BANKS, allow_hub=False, warmup=False)
    entry = registry.get(name)
    assert entry.familiarity is not None and entry.manifest.input_description
    info = entry.familiarity.info
    _, own = familiarity.split_positions(10_000, info["reference_samples"], 300, info["seed"])  # not calibrated on

    def share(images) -> float:
        return sum(registry.predict(image, name, entry.task_names[:1]).unfamiliar for image in images) / len(images)

    assert share(familiarity_check.dataset_images(name, own)) <= 0.05 + 3 * (0.05 * 0.95 / 300) ** 0.5
    assert share(familiarity_check.synthetic_photos(10)) >= 0.9
    photographs = [open_photo(p, 512) for p in offline_photos("photograph", "held-out")]  # never calibrated on
    assert photographs and share(photographs) >= 0.97


def test_a_saved_or_pushed_bank_keeps_its_familiarity_statistics(tmp_path: Path, hub_server, hub_repo_id: str,
                                                                 hf_cache: Path) -> None:
    source = Path(__file__).resolve().parents[1] / "assets" / "factors" / "fashion-mnist"
    bank = FactorBank.from_pretrained(source, tasks=["bag", "trouser"])
    saved = bank.save_pretrained(tmp_path / "subset")
    assert (saved / "familiarity" / "model.safetensors").is_file()
    assert json.loads((saved / "factors.json").read_text())["familiarity"]
    bank.push_to_hub(hub_repo_id)
    assert "familiarity/model.safetensors" in hub_server.list_files(hub_repo_id)
    pulled = FactorBank.from_pretrained(hub_repo_id, tasks=["bag"])  # the statistics come down with the factors
    pulled.save_pretrained(tmp_path / "from-hub")  # ... so a pulled bank saves them (issue 18 item 10)
    assert json.loads((tmp_path / "from-hub" / "factors.json").read_text())["familiarity"]
    assert (tmp_path / "from-hub" / "familiarity" / "model.safetensors").is_file()
    (tmp_path / "from-hub" / "familiarity" / "model.safetensors").unlink()  # statistics gone: never claimed
    FactorBank.from_pretrained(tmp_path / "from-hub").save_pretrained(tmp_path / "again")
    assert "familiarity" not in json.loads((tmp_path / "again" / "factors.json").read_text())
