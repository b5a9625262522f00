"""Large, odd and broken photographs: decoded at a reduced scale where the format allows, refused or noted in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from kf_model.data.preprocess import image_to_tensor
from kf_model.data.specs import InputSpec
from kf_model.errors import InvalidImageError
from kf_model.serving import images, open_image, prepare_image


def test_a_6000x4000_jpeg_is_reported_at_its_own_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (6000, 4000), (40, 120, 200)).save(path, quality=80)
    image, notes = open_image(path)
    assert image.size == (3000, 2000)  # the reduced-scale decode (fast)
    prepared, more = prepare_image(image)
    assert notes[0] == "JPEG RGB 6000x4000"
    assert "downscaled from 6000x4000 to 1024x683" in more and prepared.size == (1024, 683)


def test_a_photo_with_a_malformed_exif_block_is_answered_as_stored(tmp_path: Path) -> None:
    """A camera or editor that wrote a broken EXIF block still took a photograph: used as stored, with a note."""
    path = tmp_path / "broken-exif.jpg"
    Image.new("RGB", (300, 200), (200, 120, 40)).save(path, exif=b"Exif\0\0" + b"\xff" * 50)
    image, _ = open_image(path)
    prepared, notes = prepare_image(image)
    assert prepared.size == (300, 200) and any("EXIF data could not be read" in note for note in notes)
    assert image_to_tensor(prepared, InputSpec(3, 32, (0.5,) * 3, (0.5,) * 3)).shape == (1, 3, 32, 32)


def test_a_large_transparent_palette_image_is_downscaled_before_it_is_flattened(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Flattening works in float32 (16 bytes a pixel): a 16 KB palette PNG of 6600x6000 took 3 GB and 6 s of a
    worker's CPU when flattened at full size."""
    path = tmp_path / "palette.png"
    Image.new("P", (6600, 6000), 1).save(path, transparency=0)
    flattened = []
    real = images._flatten_transparency
    monkeypatch.setattr(images, "_flatten_transparency", lambda image: flattened.append(image.size) or real(image))
    prepared, notes = prepare_image(open_image(path)[0])
    assert flattened == [(1024, 931)] and prepared.size == (1024, 931)
    assert "downscaled from 6600x6000 to 1024x931" in notes


def test_a_50_megapixel_jpeg_is_decoded_small_and_a_png_that_large_is_refused(tmp_path: Path) -> None:
    """A JPEG decodes at a reduced scale, so one up to twice the pixel limit is read; a PNG is not."""
    jpeg, png = tmp_path / "phone.jpg", tmp_path / "huge.png"
    Image.new("RGB", (8160, 6120), (90, 140, 60)).save(jpeg, quality=70)
    image, notes = open_image(jpeg)
    assert notes[0] == "JPEG RGB 8160x6120" and max(image.size) <= 2040
    assert prepare_image(image)[0].size == (1024, 768)
    Image.new("L", (8160, 6120)).save(png)
    with pytest.raises(InvalidImageError, match=r"50 megapixels; the limit is 40 megapixels"):
        open_image(png)
