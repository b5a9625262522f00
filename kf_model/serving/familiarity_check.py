"""The familiarity check's commands: calibrate a bank, measure how well the score tells familiar images from
others.

    python -m kf_model.serving.familiarity_check calibrate BANK [--dataset NAME] [--train-limit N] [--test-limit N]
    python -m kf_model.serving.familiarity_check measure [--banks assets/factors] [--out runs/familiarity.json]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.data import load_dataset
from kf_model.serving.familiarity import calibrate, image_batches, split_positions
from kf_model.serving.registry import FACTORS_DIR, BankRegistry

log = logging.getLogger(__name__)


# ============================================================================ measurement

def synthetic_photos(count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """Procedural colour "photos" (gradients, blobs, stripes, textures): RGB, not real photographs."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    photos = []
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        direction = rng.uniform(-1, 1, 2)
        gradient = (xx * direction[0] / width + yy * direction[1] / height)[..., None]
        image = base + gradient * rng.uniform(-160, 160, 3)
        for _ in range(rng.integers(2, 7)):  # soft coloured blobs ("objects")
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 200)
            mask = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            image = image * (1 - mask) + rng.uniform(0, 255, 3) * mask
        if i % 2:  # stripes or a checker texture on half of them
            period = rng.uniform(8, 60)
            image += 40 * np.sin(2 * np.pi * (xx + yy * rng.uniform(-1, 1)) / period)[..., None]
        image += rng.normal(0, 8, image.shape)  # sensor-like noise
        photos.append(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB"))
    return photos


def noise_images(count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Image.Image]:
    """Uniform RGB noise images."""
    rng = np.random.default_rng(seed + 1)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")
            for _ in range(count)]


def dataset_images(name: str, positions: Sequence[int], data_dir: str | None = None) -> list[Image.Image]:
    """Test images of a dataset as the grey PIL pictures a user would upload."""
    test = load_dataset(name, "test", root=data_dir)
    images = []
    for batch in image_batches(test, positions):
        for array in (batch[:, 0] * 255).round().to(torch.uint8).numpy():
            images.append(Image.fromarray(array, mode="L"))
    return images


SETS = ("own held-out test images", "the other dataset's test images", "synthetic colour photos (640x480 RGB)",
        "uniform RGB noise (640x480)")


def measure(banks_dir: str | Path, *, held_out: int = 2_000, others: int = 2_000, photos: int = 200,
            noise: int = 200, seed: int = 0, data_dir: str | None = None) -> dict[str, Any]:
    """Share of inputs flagged, per bundled bank: its own held-out test images (disjoint from those that set the
    threshold), the other dataset's test images, synthetic colour photos and noise, all through the app's path
    (``BankRegistry.predict``: downscaling, grey conversion, automatic inversion)."""
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False)
    generated = {SETS[2]: synthetic_photos(photos, seed), SETS[3]: noise_images(noise, seed)}
    results: dict[str, Any] = {"command": "python -m kf_model.serving.familiarity_check measure", "seed": seed,
                               "note": "the colour photos are procedural (gradients, blobs, stripes, noise), not real "
                                       "photographs", "banks": {}}
    for key, entry in registry.bundled.items():
        model = entry.familiarity
        if model is None or entry.dataset is None:
            log.warning("%s has no familiarity statistics: skipped", key)
            continue
        info = model.info or {}
        n_test = len(load_dataset(entry.dataset, "test", root=data_dir))
        _, own = split_positions(n_test, int(info.get("reference_samples", 0)), held_out, int(info.get("seed", seed)))
        task = entry.task_names[:1]

        def flagged(images: list[Image.Image], key: str = key, task: list[str] = task) -> dict[str, Any]:
            flags = [bool(registry.predict(image, key, task).unfamiliar) for image in images]
            return {"images": len(flags), "flagged": sum(flags), "share": round(sum(flags) / max(1, len(flags)), 4)}

        row = {SETS[0]: {"dataset": entry.dataset, **flagged(dataset_images(entry.dataset, own, data_dir))}}
        other = next((e.dataset for e in registry.bundled.values() if e.dataset and e.dataset != entry.dataset), None)
        if other is not None:
            positions = split_positions(len(load_dataset(other, "test", root=data_dir)), others, 0, seed)[0]
            row[SETS[1]] = {"dataset": other, **flagged(dataset_images(other, positions, data_dir))}
        for label, images in generated.items():
            row[label] = flagged(images)
        results["banks"][key] = {"threshold": round(model.threshold, 3), "flagged": row}
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The measurement as a README table: one row per input set, one column per bank."""
    banks = list(results["banks"])
    lines = ["| inputs | " + " | ".join(f"flagged by the `{b}` bank" for b in banks) + " |",
             "|---|" + "---:|" * len(banks)]
    for label in SETS:
        cells = []
        for b in banks:
            cell = results["banks"][b]["flagged"].get(label)
            cells.append("–" if cell is None else f"{cell['share']:.1%} of {cell['images']:,}"
                         + (f" ({cell['dataset']})" if "dataset" in cell else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kf_model.serving.familiarity_check",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="add familiarity statistics to a bank folder (weights untouched)")
    cal.add_argument("bank")
    cal.add_argument("--dataset", default=None, help="default: the manifest's dataset")
    cal.add_argument("--train-limit", type=int, default=20_000)
    cal.add_argument("--test-limit", type=int, default=5_000)
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--data-dir", default=None)
    cal.add_argument("--input-description", default=None, help="what a good input looks like, in words")
    mea = sub.add_parser("measure", help="share flagged of own / other / synthetic photo / noise images")
    mea.add_argument("--banks", default=None, help="default: assets/factors")
    mea.add_argument("--out", default="runs/familiarity.json")
    mea.add_argument("--data-dir", default=None)
    mea.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if args.command == "calibrate":
        summary = calibrate(args.bank, args.dataset, train_limit=args.train_limit, test_limit=args.test_limit,
                            seed=args.seed, data_dir=args.data_dir, input_description=args.input_description)
        print(json.dumps(summary, indent=2))
    else:
        results = measure(args.banks or FACTORS_DIR, seed=args.seed, data_dir=args.data_dir)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(markdown_table(results))
        print(f"wrote {out}")


if __name__ == "__main__":
    _main()
