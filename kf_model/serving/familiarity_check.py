"""The familiarity check's commands: calibrate a bank, measure how well the check tells familiar images from
others.

    python -m kf_model.serving.familiarity_check calibrate BANK [--dataset NAME] [--photographs] [--signals-only]
    python -m kf_model.serving.familiarity_check measure [--banks assets/factors] [--out docs/familiarity.json]

``--photographs``: the bank's inputs are photographs (instead of the object signals, the signals of what no
photograph looks like: pixel noise, no detail, a blank page; limits from the calibration photographs);
``--signals-only``: refit only the photo signal limits of an already calibrated bank (fast, no training data).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from kf_model.errors import KFError
from kf_model.serving.familiarity import calibrate, recalibrate_signals
from kf_model.serving.familiarity_measure import markdown_tables, measure
from kf_model.serving.probe_images import dataset_images, noise_images, synthetic_photos
from kf_model.serving.registry import FACTORS_DIR
from kf_model.utils import writable_file

__all__ = ["dataset_images", "main", "noise_images", "synthetic_photos"]  # the image sets, where tests find them


def _parser() -> argparse.ArgumentParser:
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
    cal.add_argument("--photographs", action="store_true",
                     help="the bank's inputs are photographs: flag noise, flat colours, gradients and pages "
                          "of text instead")
    cal.add_argument("--signals-only", action="store_true",
                     help="refit only the photo signal limits of a calibrated bank")
    mea = sub.add_parser("measure", help="share flagged of own test images, real photographs, illustrations, "
                                         "procedural photos, the other dataset, noise; objects on a plain background")
    mea.add_argument("--banks", default=None, help="default: assets/factors")
    mea.add_argument("--out", default="docs/familiarity.json")
    mea.add_argument("--data-dir", default=None)
    mea.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    try:
        _run(args)
    except KFError as error:  # a missing bank, a bad limit, corrupt weights: in words, not a traceback
        raise SystemExit(f"error: {error}") from None


def _run(args: argparse.Namespace) -> None:
    if args.command == "measure":
        writable_file(args.out, "--out")  # before the measurement, not after it
    if args.command == "calibrate" and args.signals_only:
        print(json.dumps(recalibrate_signals(args.bank, photographs=args.photographs, data_dir=args.data_dir),
                         indent=2))
    elif args.command == "calibrate":
        summary = calibrate(args.bank, args.dataset, train_limit=args.train_limit, test_limit=args.test_limit,
                            seed=args.seed, data_dir=args.data_dir, input_description=args.input_description,
                            photographs=args.photographs)
        print(json.dumps(summary, indent=2))
    else:
        results = measure(args.banks or FACTORS_DIR, seed=args.seed, data_dir=args.data_dir)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(markdown_tables(results))
        for bank, row in results["banks"].items():
            met = ", ".join(f"{target} {'met' if ok else 'MISSED'}" for target, ok in row["targets_met"].items())
            print(f"{bank}: targets {met}")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
