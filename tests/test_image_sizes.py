"""A large JPEG is decoded at a reduced scale; the notes still say its real size."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from kf_model.serving import open_image, prepare_image


def test_a_6000x4000_jpeg_is_reported_at_its_own_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (6000, 4000), (40, 120, 200)).save(path, quality=80)
    image, notes = open_image(path)
    assert image.size == (3000, 2000)  # the reduced-scale decode (fast)
    prepared, more = prepare_image(image)
    assert notes[0] == "JPEG RGB 6000x4000"
    assert "downscaled from 6000x4000 to 1024x683" in more and prepared.size == (1024, 683)
