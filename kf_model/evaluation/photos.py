"""How a bank factorized from a task map agrees with its teacher on photographs it never saw
(``python -m kf_model.evaluation.photos``; the photo bank's recipe runs it).

The reference is the teacher at its own size (224 px for EfficientNet-Lite0) on timm's evaluation view (the
short side resized to size / 0.875, centre crop). Each factor says yes when its P(yes) > 0.5; the teacher says yes
to a group when the softmax summed over the group's classes is > 0.5. Reported, as counts:

- per factor: agreement with the teacher's yes/no on the held-out photos and on seeded augmentations of them
  (crops of 25-100 % of the area, flips, colour jitter; no mixing), and how many of them the teacher says yes to;
- per held-out photo: the teacher's top group (and top ImageNet class) against the bank's top factor (a figure);
- exactness of assembly: every factor alone against the assembled network, max abs logit difference;
- the groups no distillation image is a positive of (teacher P > 0.5 on none of its views), and how their
  factors were checked: their false "yes" on every evaluation view, and the largest probability they gave.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.bank import MANIFEST_FILE, FactorBank, Manifest
from kf_model.data.augment import AugmentConfig, random_view, to_tensor
from kf_model.data.images import IMAGE_EXTENSIONS
from kf_model.errors import DataNotFoundError, InvalidDataError, KFError
from kf_model.limits import read_json
from kf_model.teachers import TaskMap, TeacherFolderConfig, create_task_map_teacher
from kf_model.utils import REPO_ROOT, writable_folder

RESULTS_FILE = "photo_bank.json"
FIGURE_FILE = "photo_bank.png"
EVAL_VIEWS = AugmentConfig(min_area=0.25, mix=0.0, jitter=0.3)
CROP_PCT = 0.875
NONE = "none"  # the top answer when no group / factor says yes


def list_photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a folder of photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not photos:
        raise DataNotFoundError(f"{folder} holds no photos")
    return photos


def open_rgb(photo: Path) -> Image.Image:
    """``photo`` decoded as RGB, or an InvalidDataError naming it (not PIL's UnidentifiedImageError)."""
    try:
        with Image.open(photo) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidDataError(f"{photo}: cannot read it as an image ({error})") from None


def check_photos(folder: Path) -> list[Path]:
    """The photos of ``folder``, each opened once before the teacher is loaded: a file that is no image is refused
    by name before any photo is evaluated, not after most of them were."""
    photos = list_photos(folder)
    for photo in photos:
        open_rgb(photo)
    return photos


def eval_view(image: Image.Image, size: int) -> Image.Image:
    """timm's evaluation view: short side to size / 0.875, centre crop of size x size."""
    scale = size / CROP_PCT / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                           Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def views_of(photo: Path, size: int, count: int, seed: int, index: int) -> list[Image.Image]:
    """The evaluation view, then ``count`` seeded augmentations (the same on every run)."""
    image = open_rgb(photo)
    views = [eval_view(image, size)]
    for k in range(count):
        views.append(random_view(image, size, np.random.default_rng([seed, index, k]), EVAL_VIEWS))
    return views


def batch(views: list[Image.Image], size: int) -> torch.Tensor:
    return torch.stack([to_tensor(v if v.size == (size, size) else v.resize((size, size), Image.Resampling.BICUBIC))
                        for v in views])


@torch.no_grad()
def probabilities(teacher: torch.nn.Module, bank_net: torch.nn.Module, views: list[Image.Image], sizes: dict[str, int],
                  tasks: list[str]) -> dict[str, np.ndarray]:
    """P(yes) per task of the teacher (at its size and at the bank's) and of the bank; teacher class probs."""
    big, small = batch(views, sizes["teacher"]), batch(views, sizes["bank"])
    reference = teacher(big)
    low = teacher(small)
    bank = bank_net(small)
    def yes(logits: dict[str, torch.Tensor]) -> np.ndarray:
        return np.stack([logits[t].softmax(dim=1)[:, 1].numpy() for t in tasks], axis=1)

    return {"teacher": yes(reference.logits), "teacher_at_bank_size": yes(low.logits), "bank": yes(bank),
            "classes": reference.class_logits.softmax(dim=1).numpy()}


def top_answer(p_yes: np.ndarray, tasks: list[str]) -> tuple[str, float]:
    best = int(p_yes.argmax())
    return (tasks[best], float(p_yes[best])) if p_yes[best] > 0.5 else (NONE, float(p_yes[best]))


def agreement(a: np.ndarray, b: np.ndarray, tasks: list[str]) -> dict[str, dict[str, int]]:
    """Per task: yes/no agreements of ``b`` with ``a`` (the reference), and the reference's yes count."""
    yes_a, yes_b = a > 0.5, b > 0.5
    return {t: {"agree": int((yes_a[:, i] == yes_b[:, i]).sum()), "of": len(a),
                "teacher_yes": int(yes_a[:, i].sum()), "bank_yes": int(yes_b[:, i].sum()),
                "both_yes": int((yes_a[:, i] & yes_b[:, i]).sum())} for i, t in enumerate(tasks)}


def assembly_exactness(bank: FactorBank, images: torch.Tensor) -> float:
    """Max abs logit difference between each factor alone and the network assembled from all of them."""
    assembled = bank.assemble()
    with torch.no_grad():
        together = assembled(images)
        return max(float((bank.factor(t)(images) - together[t]).abs().max()) for t in together)


def positives_in(teacher: torch.nn.Module, folder: Path, tasks: list[str], size: int, views: int, seed: int
                 ) -> dict[str, int]:
    """Per task: distillation images with at least one view (the centre view + ``views`` seeded ones) the
    teacher says yes to."""
    counts = dict.fromkeys(tasks, 0)
    for index, photo in enumerate(list_photos(folder)):
        with torch.no_grad():
            out = teacher(batch(views_of(photo, size, views, seed + 1, index), size))
        for t in tasks:
            counts[t] += int((out.logits[t].softmax(dim=1)[:, 1] > 0.5).any())
    return counts


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def evaluate_photos(teacher_dir: Path, task_map_path: Path, bank_dir: Path, photos: Path, distill: Path | None,
                    views: int = 20, seed: int = 0) -> dict[str, Any]:
    """Everything the module docstring lists, as one JSON-able dict."""
    for folder in (photos, distill):
        if folder is not None:
            check_photos(folder)
    task_map = TaskMap.read(task_map_path)
    teacher = create_task_map_teacher(str(teacher_dir), task_map)
    labels = TeacherFolderConfig.read(teacher_dir).label_names or []
    bank = FactorBank.from_pretrained(bank_dir).to("cpu")
    tasks = [t.name for t in task_map.tasks]
    if [t.name for t in bank.tasks] != tasks:
        raise KFError(f"the bank {bank_dir} solves {[t.name for t in bank.tasks]}, not the task map's {tasks}")
    sizes = {"teacher": teacher.input_spec.size, "bank": bank.input_spec.size}
    network = bank.assemble().eval()
    per_photo, centre, augmented, centre_small = [], [], [], []
    for index, photo in enumerate(list_photos(photos)):
        p = probabilities(teacher, network, views_of(photo, sizes["teacher"], views, seed, index), sizes, tasks)
        centre.append({k: v[0] for k, v in p.items()})
        augmented.append({k: v[1:] for k, v in p.items()})
        teacher_top, teacher_p = top_answer(p["teacher"][0], tasks)
        bank_top, bank_p = top_answer(p["bank"][0], tasks)
        best_class = int(p["classes"][0].argmax())
        per_photo.append({"photo": photo.name, "teacher": teacher_top, "teacher_p": round(teacher_p, 3),
                          "teacher_class": labels[best_class] if labels else str(best_class),
                          "teacher_class_p": round(float(p["classes"][0][best_class]), 3),
                          "bank": bank_top, "bank_p": round(bank_p, 3), "same": teacher_top == bank_top,
                          "p_yes": {"teacher": dict(zip(tasks, np.round(p["teacher"][0], 4).tolist())),
                                    "bank": dict(zip(tasks, np.round(p["bank"][0], 4).tolist()))}})
        centre_small.append(batch(views_of(photo, sizes["bank"], 0, seed, index), sizes["bank"]))
    kinds = ("teacher", "teacher_at_bank_size", "bank")
    held = {k: np.stack([r[k] for r in centre]) for k in kinds}
    aug = {k: np.concatenate([r[k] for r in augmented]) for k in kinds}
    results: dict[str, Any] = {
        "tasks": tasks, "sizes": sizes, "views_per_photo": views, "seed": seed, "photos": len(per_photo),
        "held_out": {"bank": agreement(held["teacher"], held["bank"], tasks),
                     "teacher_at_bank_size": agreement(held["teacher"], held["teacher_at_bank_size"], tasks)},
        "augmented": {"bank": agreement(aug["teacher"], aug["bank"], tasks),
                      "teacher_at_bank_size": agreement(aug["teacher"], aug["teacher_at_bank_size"], tasks)},
        "top_answers": per_photo,
        "top_answer_matches": sum(r["same"] for r in per_photo),
        "assembly_max_abs_diff": assembly_exactness(bank, torch.cat(centre_small)),
        "max_bank_p_yes_augmented": dict(zip(tasks, np.round(aug["bank"].max(axis=0), 4).tolist())),
    }
    if distill is not None:
        positives = positives_in(teacher, distill, tasks, sizes["teacher"], views, seed)
        results["distillation_positives"] = positives
        results["groups_without_positive"] = [t for t in tasks if positives[t] == 0]
    return results


def photo_table(results: dict[str, Any]) -> str:
    """The README's table: per factor, agreement with the teacher (held-out photos; their augmentations)."""
    lines = ["| factor | held-out photos: agree / teacher yes | augmented views: agree / teacher yes | "
             "positives among distillation images |", "|---|---:|---:|---:|"]
    positives = results.get("distillation_positives", {})
    for t in results["tasks"]:
        held, aug = results["held_out"]["bank"][t], results["augmented"]["bank"][t]
        lines.append(f"| {t} | {held['agree']}/{held['of']} / {held['teacher_yes']} | {aug['agree']}/{aug['of']} / "
                     f"{aug['teacher_yes']} | {positives.get(t, '-')} |")
    return "\n".join(lines)


def answers_table(results: dict[str, Any]) -> str:
    """Teacher's vs bank's top answer on every held-out photo."""
    lines = ["| photo | teacher's top class | teacher's group (P) | bank's factor (P) |", "|---|---|---|---|"]
    for row in results["top_answers"]:
        lines.append(f"| {row['photo']} | {row['teacher_class'].split(',')[0]} ({row['teacher_class_p']:.2f}) | "
                     f"{row['teacher']} ({row['teacher_p']:.2f}) | {row['bank']} ({row['bank_p']:.2f}) |")
    return "\n".join(lines)


def answers_figure(results: dict[str, Any], photos: Path, path: Path) -> None:
    """Every held-out photo with the teacher's and the bank's top answers under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["top_answers"]
    columns = 4
    figure, axes = plt.subplots((len(rows) + columns - 1) // columns, columns, figsize=(3.2 * columns,
                                                                                    3.4 * ((len(rows) + 3) // 4)))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, row in zip(np.ravel(axes), rows):
        with Image.open(photos / row["photo"]) as image:
            ax.imshow(eval_view(image.convert("RGB"), 224))
        colour = "black" if row["same"] else "crimson"
        ax.set_title(f"{row['photo'][:28]}\nteacher: {row['teacher']} ({row['teacher_p']:.2f})\n"
                     f"bank: {row['bank']} ({row['bank_p']:.2f})", fontsize=8, color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


CARD_MARK = "## On photographs: agreement with the teacher"


def card_section(results: dict[str, Any], task_map: TaskMap, label_names: list[str]) -> str:
    """The model card's section: the agreement tables and every factor's teacher classes (its group)."""
    groups = [f"- **{t.name}** ({sum(map(len, t.groups.values()))} classes): " + "; ".join(
        label_names[c].split(",")[0] if label_names else str(c) for g in t.groups.values() for c in g)
        for t in task_map.tasks]
    missing = results.get("groups_without_positive", [])
    return "\n".join([
        CARD_MARK, "",
        f"Held-out photographs ({results['photos']}, never distilled from) and {results['views_per_photo']} seeded "
        "augmentations of each; a factor says yes when P(yes) > 0.5, the teacher when the softmax summed over the "
        f"group is > 0.5 (teacher at {results['sizes']['teacher']} px, bank at {results['sizes']['bank']} px).", "",
        photo_table(results), "", answers_table(results), "",
        f"Top answers alike on {results['top_answer_matches']} of {results['photos']} held-out photos; assembly "
        f"max abs logit difference {results['assembly_max_abs_diff']:.2e}.", "",
        "Groups with no positive among the distillation images (the teacher said yes to none of their views): "
        + (", ".join(missing) if missing else "none") + ". Their factors were only ever taught the teacher's low "
        "probabilities; the table above counts their false 'yes' on held-out views.", "",
        "### The teacher's classes of each factor (WordNet 3.0 hypernyms, `python -m kf_model.teachers task-map`)",
        "", *groups, ""])


def untested_reasons(results: dict[str, Any]) -> dict[str, str]:
    """The factors no distillation image was a positive of, each with the reason the app shows next to it."""
    return {task: "no photo of one among the distillation images"
            for task in results.get("groups_without_positive", [])}


def mark_untested(bank: Path, results: dict[str, Any]) -> None:
    """Write the untested factors into the bank's ``factors.json`` (``untested_tasks``), checked as a manifest
    before it replaces the old one, so that the app can say which answers were never checked."""
    path = bank / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["untested_tasks"] = untested_reasons(results)
    Manifest.from_dict(data, source=str(path))
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(staged, path)


def update_card(bank: Path, section: str) -> None:
    """Replace (or add) the photo section of the bank's README.md."""
    path = bank / "README.md"
    text = path.read_text() if path.is_file() else ""
    text = text.split(CARD_MARK)[0].rstrip() + "\n\n" + section
    path.write_text(text)


def write_card(args: argparse.Namespace) -> None:
    """``--card``: the model card section and untested factors of the bank, from --out's photo_bank.json (whose
    absence is said in words, with the command that writes it)."""
    if not (args.out / RESULTS_FILE).is_file():
        raise DataNotFoundError(f"--out {args.out}: no {RESULTS_FILE} there; run this command without --card first")
    if not (args.bank / MANIFEST_FILE).is_file():
        raise DataNotFoundError(f"--bank {args.bank}: no {MANIFEST_FILE} there; pass the bank folder")
    results = read_json(args.out / RESULTS_FILE, f"--out {args.out / RESULTS_FILE}", error=InvalidDataError)
    section = card_section(results, TaskMap.read(args.task_map),
                           TeacherFolderConfig.read(args.teacher).label_names or [])
    update_card(args.bank, section)
    mark_untested(args.bank, results)
    (args.out / "card.md").write_text(section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the K-way teacher folder")
    parser.add_argument("--task-map", type=Path, required=True)
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="held-out photos (never distilled from)")
    parser.add_argument("--distill-photos", type=Path, help="the distillation images: which groups had a positive")
    parser.add_argument("--views", type=int, default=20, choices=range(0, 201), metavar="[0-200]",
                        help="augmented views per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--card", action="store_true",
                        help="only write the bank's model card section and its untested factors (factors.json) "
                             "from --out's photo_bank.json")
    args = parser.parse_args(argv)
    try:
        if args.card:
            return write_card(args)
        writable_folder(args.out, "--out")
        results = evaluate_photos(args.teacher, args.task_map, args.bank, args.photos, args.distill_photos,
                                  args.views, args.seed)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    results["commit"] = git_commit()
    results["command"] = shlex.join(["python", "-m", "kf_model.evaluation.photos",
                                     *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    answers_figure(results, args.photos, args.out / FIGURE_FILE)
    print(photo_table(results))
    print(answers_table(results))
    print(f"top answers alike on {results['top_answer_matches']}/{results['photos']} held-out photos; assembly "
          f"max abs logit difference {results['assembly_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
