"""How well the familiarity check tells a bank's own images from others: ``docs/familiarity.json`` and the
README's tables.

Every image goes through the app's own path (:meth:`BankRegistry.predict`: downscaling, grey conversion,
automatic inversion, pre-network signals, feature distance). Per bundled bank: its own test images (others
than those that set the threshold), the real photographs of :mod:`kf_model.data.photos` (the held-out part,
never calibrated on, as its own row; the calibration part apart), illustrations, the procedural "photos" of
earlier measurements, the other bank's dataset, noise, and the bank's test objects on a plain light
background (the share of those that stays answerable).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from kf_model.data import load_dataset
from kf_model.data.photos import offline_photos, open_photo
from kf_model.serving.familiarity import split_positions
from kf_model.serving.probe_images import (
    PLAIN_BACKGROUNDS,
    dataset_arrays,
    dataset_images,
    noise_images,
    plain_background_images,
    synthetic_photos,
)
from kf_model.serving.registry import BankRegistry
from kf_model.utils import git_commit

COMMAND = "python -m kf_model.serving.familiarity_check measure --out docs/familiarity.json"
TARGETS = {"photographs": ("flagged", ">=", 0.97), "test": ("flagged", "<=", 0.06)}
ROWS = {  # key -> words (the README's row label)
    "test": "the bank's own test images (not calibrated on)",
    "photographs": "real photographs, held-out part (never calibrated on)",
    "photographs-calibration": "real photographs, calibration part (the signal limits were fitted on them)",
    "illustrations": "illustrations: drawn and abstract wallpapers (never calibrated on)",
    "procedural": "procedural colour \"photos\" (gradients, blobs, stripes; the earlier measurement)",
    "other-dataset": "the other bundled dataset's test images",
    "noise": "uniform RGB noise (640x480)",
}
PLAIN_ROWS = {f"plain: {kind}": words for kind, (words, _) in PLAIN_BACKGROUNDS.items()}


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else math.nan


def measure(banks_dir: str | Path, *, test_images: int = 2_000, others: int = 2_000, generated: int = 200,
            plain: int = 100, seed: int = 0, data_dir: str | None = None) -> dict[str, Any]:
    """The measurement of every bundled bank with familiarity statistics (see the module's docstring)."""
    registry = BankRegistry(banks_dir, allow_hub=False, warmup=False)
    photos = {part: offline_photos("photograph", part) for part in ("held-out", "calibration")}
    named = {
        "photographs": [(p.name, open_photo(p)) for p in photos["held-out"]],
        "photographs-calibration": [(p.name, open_photo(p)) for p in photos["calibration"]],
        "illustrations": [(p.name, open_photo(p)) for p in offline_photos("illustration")],
    }
    results: dict[str, Any] = {
        "format_version": 2, "command": COMMAND, "git_commit": git_commit(), "seed": seed,
        "targets": {row: f"{what} {op} {value:.0%}" for row, (what, op, value) in TARGETS.items()},
        "rows": {**ROWS, **PLAIN_ROWS}, "banks": {}}
    for key, entry in registry.bundled.items():
        if entry.familiarity is None or entry.dataset is None:
            continue
        flagged = _flagger(registry, key, entry.task_names[:1])
        info = entry.familiarity.info or {}
        n_test = len(load_dataset(entry.dataset, "test", root=data_dir))
        _, own = split_positions(n_test, int(info.get("reference_samples", 0)), test_images, int(info.get("seed", 0)))
        rows: dict[str, Any] = {"test": {"dataset": entry.dataset, **flagged(dataset_images(entry.dataset, own,
                                                                                            data_dir))}}
        for row, images in named.items():
            rows[row] = flagged([image for _, image in images], [name for name, _ in images])
        rows["procedural"] = flagged(synthetic_photos(generated, seed))
        other = next((e.dataset for e in registry.bundled.values() if e.dataset and e.dataset != entry.dataset), None)
        if other is not None:
            positions = split_positions(len(load_dataset(other, "test", root=data_dir)), others, 0, seed)[0]
            rows["other-dataset"] = {"dataset": other, **flagged(dataset_images(other, positions, data_dir))}
        rows["noise"] = flagged(noise_images(generated, seed))
        arrays = dataset_arrays(entry.dataset, own[:plain], data_dir)
        for kind in PLAIN_BACKGROUNDS:
            row = flagged(plain_background_images(arrays, kind, seed))
            rows[f"plain: {kind}"] = {**row, "answerable": round(1 - row["share"], 4)}
        limits = entry.familiarity.signal_limits
        results["banks"][key] = {"threshold": round(entry.familiarity.threshold, 3),
                                 "signal_limits": limits.to_json() if limits is not None else None,
                                 "rows": rows, "targets_met": targets_met(rows)}
    return results


def _flagger(registry: BankRegistry, key: str, tasks: list[str]) -> Callable[..., dict[str, Any]]:
    def flagged(images: list[Image.Image], names: list[str] | None = None) -> dict[str, Any]:
        predictions = [registry.predict(image, key, tasks) for image in images]
        flags = [bool(p.unfamiliar) for p in predictions]
        row: dict[str, Any] = {"images": len(flags), "flagged": sum(flags), "share": _share(flags)}
        if names is not None:
            row["passed"] = [name for name, flag in zip(names, flags, strict=True) if not flag]
        return row
    return flagged


def targets_met(rows: dict[str, Any]) -> dict[str, bool]:
    """Each target of :data:`TARGETS` on one bank's rows (a row without images misses its target)."""
    met = {}
    for row, (_, op, value) in TARGETS.items():
        share = rows.get(row, {}).get("share", math.nan)
        met[row] = bool(share >= value) if op == ">=" else bool(share <= value)
    return met


def _cell(row: dict[str, Any] | None, field: str = "share") -> str:
    if row is None or not row.get("images"):
        return "–"
    value = row[field]
    return f"{100 * value:.1f} % of {row['images']:,}" + (f" ({row['dataset']})" if "dataset" in row else "")


def markdown_tables(results: dict[str, Any]) -> str:
    """The README's two tables: the share flagged per input set, and the share of objects on a plain light
    background that stays answerable; one column per bank."""
    banks = list(results["banks"])
    head = " | ".join(f"`{b}` bank" for b in banks)
    lines = [f"| flagged as unfamiliar | {head} |", "|---|" + "---:|" * len(banks)]
    for row, words in ROWS.items():
        lines.append(f"| {words} | " + " | ".join(_cell(results["banks"][b]["rows"].get(row)) for b in banks) + " |")
    lines += ["", f"| object on a plain light background: stays answerable | {head} |", "|---|" + "---:|" * len(banks)]
    for row, words in PLAIN_ROWS.items():
        lines.append(f"| {words} | " + " | ".join(_cell(results["banks"][b]["rows"].get(row), "answerable")
                                                  for b in banks) + " |")
    return "\n".join(lines)
