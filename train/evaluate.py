"""Evaluate a knowledge factorization: teacher vs KD baseline vs every factor vs the assembled network.

    python train/evaluate.py --teacher runs/teacher --student runs/kd --bank runs/bank --dataset dsprites \
        --limit 1000 --output-dir runs/evaluation --update-bank
    accelerate launch train/evaluate.py ...   # the same, sharded over processes (each sample counted once)

Writes results.json, results.md and PNG plots into --output-dir (main process only); with --update-bank
also records the metrics in <bank>/factors.json, re-renders <bank>/README.md and copies the report into
<bank>/evaluation/. The work is done by kf_model.evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kf_model.errors import KFError
from kf_model.limits import MAX_INPUT_SIZE

MAX_INT = 2**31 - 1
INT_RANGES = (("--limit", "limit", 1, MAX_INT), ("--batch-size", "batch_size", 1, 65_536),
              ("--probe-samples", "probe_samples", 1, MAX_INT), ("--seed", "seed", 0, 2**32 - 1),
              ("--image-size", "image_size", 1, MAX_INPUT_SIZE))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--teacher", required=True,
                        help="teacher: a folder, timm:<name>, hf-hub:<org>/<repo> or torchvision:<name>")
    parser.add_argument("--teacher-weights", help="safetensors weights of a timm:<name> / torchvision:<name> teacher")
    parser.add_argument("--student", type=Path, help="KD-baseline student folder (same format as the teacher)")
    parser.add_argument("--bank", required=True, help="factor bank folder (or Hub repo id, without --update-bank)")
    parser.add_argument("--dataset", help="a built-in dataset (dsprites, fashion-mnist) or hf:<repo>")
    parser.add_argument("--split", default="test", help="held-out split to evaluate on")
    parser.add_argument("--limit", type=int, help="evaluate a seeded random subset of this many images")
    parser.add_argument("--data-dir", help="your images (image folder, metadata.csv/jsonl), or a built-in's files")
    parser.add_argument("--download", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task-mode", choices=("one-vs-rest", "kway"), default="one-vs-rest")
    parser.add_argument("--label-columns", nargs="+")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--image-size", type=int, help="input side (default: the teacher's own)")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip corrupt images instead of refusing")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch and process")
    parser.add_argument("--probe-samples", type=int, default=2000,
                        help="images used for the linear probes (leakage) and disentanglement metrics")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset, the probe samples and split")
    parser.add_argument("--output-dir", type=Path, help="report folder (default: runs/evaluation/<dataset>-<split>)")
    parser.add_argument("--update-bank", action="store_true",
                        help="record the metrics in the bank's factors.json / README.md and copy the report "
                             "into <bank>/evaluation/")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-familiarity", action="store_true",
                        help="with --update-bank: do not fit the bank's familiarity statistics (serving.familiarity)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if an accelerator is available")
    args = parser.parse_args(argv)
    if not (args.dataset or args.data_dir):
        parser.error("give --dataset or --data-dir")
    for option, value, low, high in INT_RANGES:  # refused here, not by torch once the data and networks are loaded
        value = getattr(args, value)
        if value is not None and not low <= value <= high:
            bounds = f"at least {low}" if high == MAX_INT else f"between {low:,} and {high:,}"
            parser.error(f"{option} must be {bounds}, got {value:,}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator

    from kf_model.bank import FactorBank, load_module
    from kf_model.data import seeded_subset
    from kf_model.evaluation import evaluate, update_bank, write_report
    from kf_model.models import Teacher
    from kf_model.teachers import create_teacher, source_input_spec
    from kf_model.training import DataSourceConfig, open_data_source
    from kf_model.utils import writable_folder

    accelerator = Accelerator(cpu=args.cpu)
    try:
        if args.output_dir is not None:  # the default one is checked once the dataset's name is known
            writable_folder(args.output_dir, "--output-dir")
        if args.update_bank and not Path(args.bank).is_dir():
            raise KFError(f"--update-bank needs a local bank folder, {args.bank!r} is not one")
        bank = FactorBank.from_pretrained(args.bank)
        # your images are prepared as the teacher takes them, else as the bank was trained (its manifest)
        spec = source_input_spec(args.teacher, weights=args.teacher_weights, image_size=args.image_size)
        source = DataSourceConfig.from_args(args)
        dataset, info = open_data_source(source, args.split, spec or (None if args.dataset else bank.input_spec))
        out_dir = writable_folder(args.output_dir or Path("runs") / "evaluation" / f"{info.name}-{args.split}",
                                  "--output-dir")  # checked before the evaluation, not by write_report after it
        items = seeded_subset(len(dataset), args.limit, args.seed)
        dataset = dataset if items is None else dataset.select(items)
        teacher = create_teacher(args.teacher, tasks=info.tasks, one_vs_rest=info.one_vs_rest,
                                 weights=args.teacher_weights, image_size=args.image_size, some_tasks=True)
        student = load_module(Teacher, args.student, f"KD student {args.student}") if args.student else None
        sources = {"teacher": str(args.teacher), "kd_student": str(args.student) if args.student else None,
                   "bank": str(args.bank), "limit": args.limit, "command": " ".join(sys.argv)}
        results = evaluate(teacher, student, bank, dataset, accelerator=accelerator, batch_size=args.batch_size,
                           probe_samples=args.probe_samples, seed=args.seed, dataset_name=info.name,
                           split=args.split, sources=sources)
    except KFError as error:
        if accelerator.is_main_process:  # on stderr, as every kf command line says what it refuses
            print(f"error: {error}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        paths = write_report(results, out_dir, plots=not args.no_plots)
        if args.update_bank:
            update_bank(args.bank, results, out_dir)
            print(f"updated {Path(args.bank) / 'factors.json'}, README.md and evaluation/")
            if not args.no_familiarity:  # the app's "does this image look like the training data?" statistics
                from kf_model.serving.familiarity import calibrate

                limits = {} if args.limit is None else {"train_limit": max(2 * args.limit, 64),
                                                        "test_limit": args.limit}  # a quick run stays quick
                summary = calibrate(args.bank, args.dataset, data_dir=args.data_dir, seed=args.seed, **limits)
                print(f"familiarity statistics in {Path(args.bank) / 'familiarity'} (threshold "
                      f"{summary['threshold']}, flags {summary['flag_rate']:.0%} of held-out test images)")
        targets = results["targets"]
        print(paths["markdown"].read_text())
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        print(f"targets: {targets['num_passed']}/{targets['num_checked']} passed")
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
