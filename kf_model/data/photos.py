"""Real photographs available offline: the one catalogue that calibration, distillation and evaluation share.

No natural-image dataset is reachable here, but real photographs ship inside packages: scikit-image's wheel
(``skimage/data``), scikit-learn's ``china.jpg`` / ``flower.jpg``, matplotlib's ``grace_hopper.jpg``, and the
Debian packages ``plasma-workspace-wallpapers`` and ``sway-backgrounds``. This module lists the ones that are
installed, says which are photographs and which are illustrations (abstract or drawn wallpapers), and fixes
one split that every user of them shares: ``held-out`` photos are never used to fit anything (distillation,
calibration); ``calibration`` photos may be. The split is by a hash of each photo's stable name, so it does
not depend on which packages happen to be installed.

``python -m kf_model.data photos --out DIR`` writes downscaled copies and an ``index.json`` (name, source,
kind, part) for recipes that train on them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from kf_model.errors import DataNotFoundError, UnknownNameError

KINDS = ("photograph", "illustration")
PARTS = ("calibration", "held-out")
HELD_OUT_SHARE = 3  # one photo in three (by name hash) is held out
DEBIAN_PACKAGES = ("plasma-workspace-wallpapers", "sway-backgrounds")

# scikit-image's sample files that are photographs of real scenes (its charts, text scans, silhouettes,
# synthetic phantoms and microscopy stains are left out: they are not what a visitor uploads).
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                  "grass.png", "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png",
                  "motorcycle_right.png", "retina.jpg", "rocket.jpg")
# Plasma's wallpapers, by theme folder: photographs, the rest are drawn or abstract (looked at one by one).
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
PLASMA_DIR = Path("/usr/share/wallpapers")
SWAY_DIR = Path("/usr/share/backgrounds/sway")


@dataclass(frozen=True)
class Photo:
    name: str    # stable across machines: "<source>/<file or theme>"
    path: Path
    source: str  # skimage, sklearn, matplotlib, plasma, sway
    kind: str    # photograph or illustration

    @property
    def part(self) -> str:
        """calibration or held-out, from the name alone (the same on every machine)."""
        digest = int(hashlib.sha1(self.name.encode()).hexdigest(), 16)
        return PARTS[1] if digest % HELD_OUT_SHARE == 0 else PARTS[0]


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec and spec.origin else None


def _python_package_photos() -> list[Photo]:
    photos = []
    skimage = _package_dir("skimage")
    if skimage is not None:
        photos += [Photo(f"skimage/{f}", skimage / "data" / f, "skimage", "photograph")
                   for f in SKIMAGE_PHOTOS if (skimage / "data" / f).is_file()]
    sklearn = _package_dir("sklearn")
    if sklearn is not None:
        photos += [Photo(f"sklearn/{f}", sklearn / "datasets" / "images" / f, "sklearn", "photograph")
                   for f in ("china.jpg", "flower.jpg") if (sklearn / "datasets" / "images" / f).is_file()]
    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            photos.append(Photo("matplotlib/grace_hopper.jpg", hopper, "matplotlib", "photograph"))
    return photos


def _largest_image(folder: Path) -> Path | None:
    files = [f for f in folder.glob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    return max(files, key=lambda f: (f.stat().st_size, f.name)) if files else None


def _debian_photos() -> list[Photo]:
    photos = []
    if PLASMA_DIR.is_dir():
        for theme in sorted(p for p in PLASMA_DIR.iterdir() if (p / "contents" / "images").is_dir()):
            image = _largest_image(theme / "contents" / "images")
            if image is not None:
                kind = "photograph" if theme.name in PLASMA_PHOTOS else "illustration"
                photos.append(Photo(f"plasma/{theme.name}", image, "plasma", kind))
    if SWAY_DIR.is_dir():  # eight sizes of one drawing: one entry
        image = _largest_image(SWAY_DIR)
        if image is not None:
            photos.append(Photo("sway/Sway_Wallpaper_Blue", image, "sway", "illustration"))
    return photos


def offline_photos(kind: str | None = "photograph", part: str | None = None) -> list[Photo]:
    """The installed photos of one kind (None: both) and one part (None: both), sorted by name."""
    if kind is not None and kind not in KINDS:
        raise UnknownNameError(f"unknown photo kind {kind!r}; known: {', '.join(KINDS)}")
    if part is not None and part not in PARTS:
        raise UnknownNameError(f"unknown photo part {part!r}; known: {', '.join(PARTS)}")
    photos = [p for p in _python_package_photos() + _debian_photos()
              if (kind is None or p.kind == kind) and (part is None or p.part == part)]
    return sorted(photos, key=lambda p: p.name)


def open_photo(photo: Photo, max_side: int = 1024) -> Image.Image:
    """The photo as RGB, its longer side at most ``max_side`` (JPEGs decoded at reduced size directly)."""
    with Image.open(photo.path) as image:
        image.draft("RGB", (max_side, max_side))
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def export_photos(out: str | Path, *, kind: str | None = None, part: str | None = None, max_side: int = 1024) -> dict:
    """Write every installed photo (of one kind and part, if given) as a downscaled JPEG plus ``index.json``;
    returns the index."""
    photos = offline_photos(kind, part)
    if not photos:
        raise DataNotFoundError("no offline photographs found: install scikit-image (pip) or the Debian packages "
                                + " ".join(DEBIAN_PACKAGES))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for photo in photos:
        file_name = photo.name.replace("/", "__").rsplit(".", 1)[0] + ".jpg"
        open_photo(photo, max_side).save(out / file_name, quality=92)
        entries.append({"file_name": file_name, "name": photo.name, "source": photo.source, "kind": photo.kind,
                        "part": photo.part})
    index = {"max_side": max_side, "photos": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index
