"""Familiarity statistics of a photo bank, calibrated on photographs (``python -m kf_model.serving.photo_familiarity
BANK --photos DIR``; ``BANK --signals-only`` refits the photo signals' limits alone).

A bank distilled from a few dozen photographs has no test split to calibrate on; its images are the
distillation photographs themselves (``index.json``'s kind "photograph" when the folder has one). The statistics
(mean, shrunk precision of the CKN's pooled features) are fitted on each whole photo as the app prepares it
(padded to a square) plus seeded augmented views of it (crops of 25-100 % of the area, flips, colour jitter).
The reference distances, whose 95th percentile is the threshold, must be those of photos the statistics have
not seen, as a visitor's are: each photo's views are measured against statistics fitted on the *other* photos
(leave one photo out). Measured against statistics that had seen them, 9 of the 11 held-out photographs were
flagged. Held-out photographs are never used here: :func:`check_photos` scores them afterwards, as the app
does.

The feature distance alone lets noise, a flat colour, a gradient and a page of text pass (their distances sit
among the held-out photographs'); the photo signals (:data:`kf_model.serving.input_signals.PHOTO_SIGNALS`: pixel
noise, no detail, a blank page), limited from the calibration photographs alone, flag them before the network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.bank import MANIFEST_FILE, FactorBank
from kf_model.data.augment import AugmentConfig, random_view, to_tensor
from kf_model.data.images import IMAGE_EXTENSIONS
from kf_model.errors import DataNotFoundError, KFError
from kf_model.serving.familiarity import (
    CONFIG,
    FLAG_RATE,
    FOLDER,
    METHOD,
    WEIGHTS,
    FamiliarityModel,
    mahalanobis,
    pooled_features,
    shrunk_precision,
)
from kf_model.serving.signal_calibration import calibrate_photo_signals, upload_signals

PHOTO_VIEWS = AugmentConfig(min_area=0.25, mix=0.0, jitter=0.3)
INPUT_DESCRIPTION = ("a colour photograph of an everyday scene or object (animals, vehicles, food, buildings...), "
                     "any size: it is scaled to the bank's input")


def photo_files(folder: Path, kind: str | None = "photograph") -> list[Path]:
    """The images of ``folder`` (only those of ``kind`` when its ``index.json``, from kf_model.data photos, says)."""
    index = Path(folder) / "index.json"
    if kind and index.is_file():
        entries = json.loads(index.read_text()).get("photos", [])
        files = sorted(Path(folder) / e["file_name"] for e in entries if e.get("kind") == kind)
    else:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataNotFoundError(f"{folder} holds no photos")
    return files


def photo_views(files: list[Path], bank: FactorBank, views: int, seed: int) -> torch.Tensor:
    """[N, 3, S, S]: each photo as the app prepares it, then ``views`` seeded augmented views of it."""
    size, out = bank.input_spec.size, []
    for index, path in enumerate(files):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        out.append(bank.preprocess(image)[0])
        for k in range(views):
            out.append(to_tensor(random_view(image, size, np.random.default_rng([seed, index, k]), PHOTO_VIEWS)))
    return torch.stack(out)


def features(bank: FactorBank, images: torch.Tensor, size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([pooled_features(bank.ckn.eval()(chunk)) for chunk in images.split(size)])


def leave_one_out(groups: list[torch.Tensor], flag_rate: float = FLAG_RATE) -> FamiliarityModel:
    """Statistics of every group's features; reference distances of each group against the others' statistics."""
    if len(groups) < 3:
        raise KFError(f"calibrating on photos needs at least 3 photos, got {len(groups)}")
    mean, precision = shrunk_precision(torch.cat(groups))
    reference = torch.cat([mahalanobis(group, *shrunk_precision(torch.cat(groups[:i] + groups[i + 1:])))
                           for i, group in enumerate(groups)]).sort().values
    threshold = float(torch.quantile(reference.double(), 1.0 - flag_rate))
    return FamiliarityModel(mean, precision, reference, threshold, flag_rate,
                            {"reference": "leave one photo out", "reference_samples": int(reference.numel())})


def opened(files: list[Path]) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of each photo file, read whole."""
    out = []
    for path in files:
        with Image.open(path) as image:
            out.append((path.name, image.convert("RGB")))
    return out


def calibrate_on_photos(bank_folder: str | Path, photos: str | Path, *, views: int = 24, seed: int = 0
                        ) -> dict[str, Any]:
    """Fit and save ``familiarity/`` of a photo bank (see the module docstring); returns the manifest summary."""
    folder = Path(bank_folder)
    bank = FactorBank.from_pretrained(folder).to("cpu")
    files = photo_files(Path(photos))
    model = leave_one_out(list(features(bank, photo_views(files, bank, views, seed)).split(views + 1)))
    samples = len(files) * (views + 1)
    model.info = {**(model.info or {}), "train_samples": samples, "dataset": bank.manifest.dataset, "seed": seed,
                  "ckn_fingerprint": bank.manifest.ckn_fingerprint,
                  "calibration": f"{len(files)} distillation photographs: each whole + {views} seeded augmented "
                                 "views; reference distances: each photo against the others' statistics",
                  "input_signals": calibrate_photo_signals(bank.input_spec, opened(files))}
    model.save(folder)
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["input_description"] = INPUT_DESCRIPTION
    raw["familiarity"] = {"file": f"{FOLDER}/{WEIGHTS}", "method": METHOD, "flag_rate": model.flag_rate,
                          "threshold": round(model.threshold, 4), "train_samples": samples,
                          "reference_samples": int(model.reference.numel()), "input_signals": True}
    (folder / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
    return raw["familiarity"]


def recalibrate_photo_signals(bank_folder: str | Path) -> dict[str, Any]:
    """Refit only the photo signals' limits of a calibrated photo bank: the feature statistics and the weights
    stay byte-identical (``--signals-only``)."""
    folder = Path(bank_folder)
    bank = FactorBank.from_pretrained(folder)
    if FamiliarityModel.load(folder, feature_dim=sum(bank.ckn.feature_widths)) is None:
        raise KFError(f"{folder}: no familiarity statistics to add signal limits to; calibrate it first")
    config_path = folder / FOLDER / CONFIG
    config = json.loads(config_path.read_text())
    config["input_signals"] = calibrate_photo_signals(bank.input_spec)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw.setdefault("familiarity", {})["input_signals"] = True
    (folder / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
    return config["input_signals"]


def check_photos(bank_folder: str | Path, photos: str | Path) -> list[dict[str, Any]]:
    """Each photo of ``photos`` as the app sees it: its familiarity score (``unfamiliar`` = flagged)."""
    bank = FactorBank.from_pretrained(bank_folder).to("cpu")
    model = FamiliarityModel.load(bank_folder, bank.manifest.ckn_fingerprint)
    if model is None:
        raise KFError(f"{bank_folder} has no familiarity statistics: calibrate it first")
    files = photo_files(Path(photos))
    signals = upload_signals((image for _, image in opened(files)), bank.input_spec)  # as the app reads uploads
    return [{"photo": f.name, **score} for f, score in zip(files, model.score(features(bank, photo_views(
        files, bank, 0, 0)), signals))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bank", type=Path)
    parser.add_argument("--photos", type=Path, help="the bank's distillation photos (required unless --signals-only)")
    parser.add_argument("--views", type=int, default=24, choices=range(1, 201), metavar="[1-200]")
    parser.add_argument("--check", type=Path, help="held-out photos to score afterwards (never fitted on)")
    parser.add_argument("--signals-only", action="store_true",
                        help="refit only the photo signals' limits (noise, no detail, a blank page); the feature "
                             "statistics stay as they are")
    args = parser.parse_args(argv)
    if args.photos is None and not args.signals_only:
        parser.error("--photos is required (unless --signals-only)")
    try:
        if args.signals_only:
            print(json.dumps(recalibrate_photo_signals(args.bank)))
        else:
            print(json.dumps(calibrate_on_photos(args.bank, args.photos, views=args.views)))
        if args.check:
            for row in check_photos(args.bank, args.check):
                print(json.dumps(row))
    except KFError as error:
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
