"""The offline photo catalogue: stable split, kinds, export (scikit-image's photos ship with the dev set-up)."""

import json

import pytest

from kf_model.data import photos as P
from kf_model.errors import UnknownNameError


def test_catalogue_has_scikit_image_photos_and_a_stable_split():
    found = P.offline_photos()
    names = {p.name for p in found}
    assert {"skimage/chelsea.png", "skimage/astronaut.png", "sklearn/china.jpg"} <= names
    assert all(p.kind == "photograph" and p.path.is_file() for p in found)
    held_out = {p.name for p in P.offline_photos(part="held-out")}
    assert held_out and held_out < names
    # the part depends on the name alone
    assert P.Photo("skimage/chelsea.png", found[0].path, "skimage", "photograph").part == "held-out"
    assert P.Photo("skimage/coffee.png", found[0].path, "skimage", "photograph").part == "calibration"


def test_bad_kind_or_part_is_a_kf_error():
    with pytest.raises(UnknownNameError, match="kind"):
        P.offline_photos(kind="painting")
    with pytest.raises(UnknownNameError, match="part"):
        P.offline_photos(part="test")


def test_export_writes_downscaled_copies_and_an_index(tmp_path):
    from kf_model.data.__main__ import main

    assert main(["photos", "--out", str(tmp_path), "--kind", "photograph", "--max-side", "64"]) == 0
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["max_side"] == 64 and len(index["photos"]) >= 10
    from PIL import Image

    first = index["photos"][0]
    with Image.open(tmp_path / first["file_name"]) as image:
        assert max(image.size) <= 64 and image.mode == "RGB"
    assert {e["part"] for e in index["photos"]} == set(P.PARTS)
