"""Command-line options of the train/ scripts, and ``--config`` files checked exactly like the flags."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kf_model.data import DATASET_NAMES
from kf_model.data.tasks import TASK_MODES
from kf_model.limits import MAX_IMAGE_PIXELS, MAX_INPUT_SIZE, MAX_STRIDE, MAX_WIDTH

SEED_RANGE = (0, 2**32 - 1)  # what numpy's seeding accepts
OPTIMIZERS = ("adamw", "sgd")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
TRACKERS = ("none", "tensorboard")


def ranged(kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
           above: bool = False, below: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` in [low, high] (``above``: > low, ``below``: < high). A config
    file's values go through it too, so a value is checked the same way wherever it comes from."""
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low}, got {text}")
        if high is not None and (value >= high if below else value > high):
            raise argparse.ArgumentTypeError(f"must be {'<' if below else '<='} {high}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


POSITIVE_INT, COUNT = ranged(int, 1), ranged(int, 0)  # >= 1, >= 0
SEED = ranged(int, *SEED_RANGE)
POSITIVE, NON_NEGATIVE, FRACTION = ranged(float, 0, above=True), ranged(float, 0), ranged(float, 0, 1)
SMOOTHING = ranged(float, 0, 1, below=True)  # label smoothing 1 would erase the labels
WIDTH, STRIDE = ranged(int, 1, MAX_WIDTH), ranged(int, 1, MAX_STRIDE)  # kf_model.limits: what a bank may hold


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every script shares: data, schedule, optimizer, Accelerate, checkpoints, logging."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of option values (keys: option names); flags override it")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help=f"a built-in dataset ({', '.join(DATASET_NAMES)}) or hf:<repo>[@rev] "
                                        "(🤗 datasets); without it, --data-dir is the data")
    data.add_argument("--data-dir", help="your labelled images: an image-folder tree, or a folder with metadata.csv "
                                         "/ metadata.jsonl; with a built-in --dataset, where its files are")
    data.add_argument("--task-mode", choices=TASK_MODES, default="one-vs-rest",
                      help="a single class label as K one-vs-rest tasks (the paper's setting) or as one K-way task")
    data.add_argument("--label-columns", nargs="+", help="metadata / 🤗 datasets columns that are tasks (default: all)")
    data.add_argument("--image-column", default="image", help="🤗 datasets column holding the images")
    data.add_argument("--unlabelled", action="store_true",
                      help="--data-dir is images without labels (automatic for a folder of loose images): the "
                           "teacher gives every target (KD + InfoMax, no label loss); the tasks come from --task-map")
    data.add_argument("--augment", choices=("none", "heavy"), default="none",
                      help="unlabelled images: heavy = random resized crops at many scales, flips, colour jitter, "
                           "CutMix / MixUp (distilling from few images)")
    data.add_argument("--views-per-image", type=ranged(int, 1, 1_000_000), default=1,
                      help="unlabelled images: each stands for this many augmented views (the epoch's length)")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="skip (and count) corrupt images of --data-dir instead of refusing the data before training")
    data.add_argument("--max-image-pixels", type=ranged(int, 1, 10 * MAX_IMAGE_PIXELS), default=MAX_IMAGE_PIXELS,
                      help="larger images of --data-dir (width x height) are refused by the scan, with their names")
    data.add_argument("--image-size", type=ranged(int, 1, MAX_INPUT_SIZE),
                      help="input side in pixels (default: the teacher's own, from its config)")
    data.add_argument("--download", action="store_true", help="download missing dataset files")
    data.add_argument("--limit", type=POSITIVE_INT, help="train on a seeded random subset of this many images")
    data.add_argument("--data-seed", type=SEED, default=0, help="seed of the --limit subset (same for every stage)")
    data.add_argument("--val-size", type=COUNT, default=0,
                      help="images carved out of the train split (fixed seed, never trained on) for a quick "
                           "validation at the end; 0 skips it")
    data.add_argument("--num-workers", type=COUNT, default=0, help="DataLoader worker processes")

    schedule = parser.add_argument_group("schedule and optimizer")
    schedule.add_argument("--batch-size", type=POSITIVE_INT, default=128, help="per process and per micro-batch")
    schedule.add_argument("--eval-batch-size", type=POSITIVE_INT, default=256)
    schedule.add_argument("--max-steps", type=POSITIVE_INT,
                          help="optimizer steps (with --epochs: whichever comes first)")
    schedule.add_argument("--epochs", type=POSITIVE,
                          help="passes over the training set (default 1 without --max-steps)")
    schedule.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    schedule.add_argument("--lr", type=POSITIVE, default=2e-3, help="peak learning rate")
    schedule.add_argument("--momentum", type=FRACTION, default=0.9, help="SGD momentum")
    schedule.add_argument("--weight-decay", type=NON_NEGATIVE, default=1e-4,
                          help="not applied to biases and norm layers")
    schedule.add_argument("--warmup-steps", type=COUNT, default=100, help="linear warm-up, then cosine decay")
    schedule.add_argument("--min-lr-ratio", type=FRACTION, default=0.01, help="final LR as a fraction of --lr")
    schedule.add_argument("--clip-grad-norm", type=NON_NEGATIVE, default=0.0, help="clip the gradient norm (0: off)")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", help="where outputs, checkpoints and logs go (required)")
    run.add_argument("--seed", type=SEED, default=0)
    run.add_argument("--mixed-precision", choices=MIXED_PRECISIONS, default="no")
    run.add_argument("--gradient-accumulation-steps", type=POSITIVE_INT, default=1)
    run.add_argument("--cpu", action="store_true", help="run on the CPU even if an accelerator is available")
    run.add_argument("--num-threads", type=POSITIVE_INT, default=None,
                     help="CPU threads of torch (default: all cores); 1 is much faster on a machine other jobs share")
    run.add_argument("--checkpoint-every", type=COUNT, default=0,
                     help="save a resumable checkpoint every N steps in <output-dir>/checkpoints (0: never)")
    run.add_argument("--checkpoints-total-limit", type=POSITIVE_INT, default=2,
                     help="keep only the newest N complete checkpoints (older ones go once a new one is complete)")
    run.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH|latest",
                     help="continue from a checkpoint folder, or from the newest complete one in "
                          "<output-dir>/checkpoints")
    run.add_argument("--stop-after-steps", type=POSITIVE_INT, default=None,
                     help="stop (with a checkpoint) after this many steps, keeping the schedule of the full run: "
                          "a deliberate interruption, to be continued with --resume")
    run.add_argument("--log-with", choices=TRACKERS, default="none",
                     help="experiment tracker (tensorboard needs `pip install tensorboard`)")
    run.add_argument("--log-every", type=POSITIVE_INT, default=20, help="steps between progress-bar/log updates")
    return parser


REQUIRED = ("output_dir",)


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's optional arguments by destination (``--help`` and ``--config`` left out). argparse has no
    public way to list them: its private ``_actions`` is read here only (the seam its test pins down)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}


def config_values(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The option values of a ``--config`` JSON file, converted and checked by the parser itself: each value
    is written as the flag it stands for and parsed, so a file is held to the command line's types, choices
    and ranges. Refusals go through ``parser.error`` and name the key."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"cannot read --config {path}: {error}")
    if not isinstance(raw, dict):
        parser.error(f"--config {path} must hold a JSON object of option values")
    actions = option_actions(parser)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dest = str(key).lstrip("-").replace("-", "_")
        action = actions.get(dest)
        if action is None:
            close = difflib.get_close_matches(dest, actions, n=3)
            parser.error(f"--config {path}: unknown option {key!r} ("
                         + (f"did you mean {', '.join(close)}? " if close else "")
                         + f"{len(actions)} options are known: see --help)")
        flag = action.option_strings[0]
        if action.nargs == 0:  # a switch: true / false
            negative = [s for s in action.option_strings if s.startswith("--no-")]
            if not isinstance(value, bool) or (not value and not negative and value != action.default):
                parser.error(f"--config {path}: {key} must be true or false, got {json.dumps(value)}")
            argv = [flag] if value else negative
        elif value is None and action.default is None:
            argv = []
        elif action.nargs in ("+", "*") or isinstance(action.nargs, int):
            if not isinstance(value, list) or not all(isinstance(v, str | int | float) and not isinstance(v, bool)
                                                      for v in value):
                parser.error(f"--config {path}: {key} must be a list of values (like {json.dumps(action.default)})"
                             f", got {json.dumps(value)}")
            argv = [flag, *map(str, value)]
        else:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                parser.error(f"--config {path}: {key} must be a single value, got {json.dumps(value)}")
            argv = [f"{flag}={value}"]
        exit_on_error, parser.exit_on_error = parser.exit_on_error, False
        try:
            parsed, extra = parser.parse_known_args(argv, argparse.Namespace())
        except argparse.ArgumentError as error:
            parser.error(f"--config {path}: {key}: {error.message}")
        finally:
            parser.exit_on_error = exit_on_error
        if extra:
            parser.error(f"--config {path}: {key}: cannot read {json.dumps(value)} as {flag}'s value")
        values[dest] = getattr(parsed, dest)
    return values


def check_output_dir(parser: argparse.ArgumentParser, output_dir: str | None) -> None:
    """The output folder, or the first of its parents that exists, must be a folder."""
    if not output_dir:
        return
    for path in (Path(output_dir), *Path(output_dir).parents):
        if path.exists():
            if not path.is_dir():
                parser.error(f"--output-dir {output_dir}: {path} is a file, not a folder")
            return


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               required: Sequence[str] = REQUIRED) -> argparse.Namespace:
    """Parse ``argv``; values of ``--config FILE`` become defaults, so flags given on the command line win."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    config_path = early.parse_known_args(argv)[0].config
    if config_path:
        parser.set_defaults(**config_values(parser, config_path))
    args = parser.parse_args(argv)
    missing = [f"--{name.replace('_', '-')}" for name in required if getattr(args, name, None) in (None, "")]
    if required and not (args.dataset or args.data_dir):  # a run needs data; reading a config alone does not
        missing.insert(0, "--dataset or --data-dir")
    if args.dataset and args.dataset not in DATASET_NAMES and not args.dataset.startswith("hf:"):
        parser.error(f"--dataset {args.dataset!r}: give {', '.join(DATASET_NAMES)} or hf:<repo>, or your own images "
                     "with --data-dir")
    if missing:
        parser.error(f"missing required option(s): {', '.join(missing)} (on the command line or in --config)")
    check_output_dir(parser, getattr(args, "output_dir", None))
    if args.log_with == "tensorboard" and not (importlib.util.find_spec("tensorboard")
                                               or importlib.util.find_spec("tensorboardX")):
        parser.error("--log-with tensorboard needs the tensorboard package, which is not installed: "
                     "`pip install tensorboard`, or drop the option (log.jsonl is always written)")
    args.argv = argv
    return args
