"""The photo bank's examples: its held-out photographs, with the teacher's answers as the reference
(``python -m kf_model.serving.photo_examples --evaluation photo_bank.json --photos DIR --bank BANK``).

Photographs have no true labels here: what a visitor can check the bank against is its teacher's answer
(EfficientNet-Lite0 at 224 px, the group probabilities of the task map), taken from the bank's evaluation JSON.
The photos are copied (longer side 480 px, JPEG) to ``assets/examples/`` and listed in ``photos.json`` beside
``examples.json``, so the datasets' examples and these are generated apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image

from kf_model.bank import FactorBank
from kf_model.errors import DataNotFoundError, InvalidDataError, KFError
from kf_model.limits import read_json
from kf_model.serving.examples import EXAMPLES_DIR, PHOTO_EXAMPLES_FILE, listed_files
from kf_model.utils import writable_folder

MAX_SIDE = 480


def photo_records(results: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """One examples record per held-out photo: the teacher's yes/no per task, its top group and class."""
    records = []
    for row in results["top_answers"]:
        p_yes = row["p_yes"]["teacher"]
        labels = {task: (task if p > 0.5 else f"not {task}") for task, p in p_yes.items()}
        file = "photo-" + Path(row["photo"]).stem.replace("__", "-").replace("_", "-").lower() + ".jpg"
        records.append({"file": file, "source": row["photo"], "dataset": dataset, "labels": labels,
                        "reference": "teacher", "teacher_class": row["teacher_class"].split(",")[0],
                        "teacher_class_p": row["teacher_class_p"],
                        "caption": f"{row['teacher']} (teacher)" if row["teacher"] != "none" else
                                   f"{row['teacher_class'].split(',')[0]} (teacher: no group)"})
    return records


def read_evaluation(evaluation: Path) -> dict[str, Any]:
    """The bank's photo evaluation JSON, or a kf error saying what is wrong with ``--evaluation``."""
    if not evaluation.is_file():
        raise DataNotFoundError(f"--evaluation {evaluation}: no such file; pass the bank's "
                                "evaluation/photo_bank.json (python -m kf_model.evaluation.photos writes it)")
    results = read_json(evaluation, f"--evaluation {evaluation}", error=InvalidDataError)
    if not isinstance(results, dict) or not isinstance(results.get("top_answers"), list):
        raise InvalidDataError(f"--evaluation {evaluation}: not a photo evaluation (no \"top_answers\" list)")
    return results


def write_photo_examples(evaluation: Path, photos: Path, bank: Path, out: Path = EXAMPLES_DIR) -> list[dict]:
    results = read_evaluation(evaluation)
    writable_folder(out, "--out")
    dataset = FactorBank.from_pretrained(bank).manifest.dataset
    records = photo_records(results, dataset)
    missing = [r["source"] for r in records if not (photos / r["source"]).is_file()]
    if missing:  # found before the old copies are deleted
        raise DataNotFoundError(f"--photos {photos}: {len(missing)} photo(s) of the evaluation are missing, "
                                f"e.g. {missing[0]}")
    out.mkdir(parents=True, exist_ok=True)
    for old in listed_files(out, PHOTO_EXAMPLES_FILE, ".jpg"):
        old.unlink()
    for record in records:
        with Image.open(photos / record.pop("source")) as image:
            copy = image.convert("RGB")
        copy.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        copy.save(out / record["file"], quality=88, optimize=True)
    (out / PHOTO_EXAMPLES_FILE).write_text(json.dumps({
        "format_version": 1, "generated_by": "python -m kf_model.serving.photo_examples",
        "note": "held-out photographs of the photo bank (never distilled from); labels are the teacher's answers "
                "(EfficientNet-Lite0 at 224 px: P(group) > 0.5), a reference, not a ground truth",
        "evaluation_commit": results.get("commit"), "examples": records}, indent=2, ensure_ascii=False) + "\n")
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", type=Path, required=True, help="the bank's evaluation/photo_bank.json")
    parser.add_argument("--photos", type=Path, required=True, help="the held-out photos it names")
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    try:
        records = write_photo_examples(args.evaluation, args.photos, args.bank, args.out)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"wrote {len(records)} photo examples to {args.out}")


if __name__ == "__main__":
    main()
