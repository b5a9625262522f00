"""`python -m kf_model.data preview SOURCE --out FILE.png`, `stats SOURCE`, `export NAME --out DIR`, `photos --out DIR`.

SOURCE is anything `open_dataset` reads: dsprites, fashion-mnist, a folder of images, hf:<dataset>.
"""

from __future__ import annotations

import argparse
import sys

import torch

from kf_model.data import DATASET_NAMES, open_dataset
from kf_model.data.export import EXPORT_SPLITS, FORMATS, IMAGE_FORMATS, export_dataset
from kf_model.data.photos import KINDS as PHOTO_KINDS
from kf_model.data.photos import PARTS as PHOTO_PARTS
from kf_model.data.photos import export_photos
from kf_model.data.splits import SPLIT_NAMES
from kf_model.errors import InvalidArgumentError, KFError
from kf_model.utils import writable_folder

MIN_PHOTO_SIDE, MAX_PHOTO_SIDE = 16, 10_000  # --max-side of `photos`: a thumbnail to beyond any photo's own size


def pixel_stats(dataset, batch_size: int = 4096) -> tuple[list[float], list[float]]:
    """Exact per-channel pixel mean and std (population) over a whole dataset, accumulated in float64."""
    total = total_sq = count = 0
    for start in range(0, len(dataset), batch_size):
        images = dataset.get_batch(list(range(start, min(start + batch_size, len(dataset)))))[0].double()
        total = total + images.sum(dim=(0, 2, 3))
        total_sq = total_sq + images.pow(2).sum(dim=(0, 2, 3))
        count += images[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean**2).sqrt()
    return mean.tolist(), std.tolist()


def check_args(args: argparse.Namespace) -> None:
    """Refuse an unusable --out or number before a dataset is read, downloaded or written (a file where a folder
    goes failed with NotADirectoryError half-way; --max-side -1 in PIL, after the first photo)."""
    if args.command == "photos":
        if not MIN_PHOTO_SIDE <= args.max_side <= MAX_PHOTO_SIDE:
            raise InvalidArgumentError(f"--max-side must be between {MIN_PHOTO_SIDE} and {MAX_PHOTO_SIDE:,} "
                                       f"pixels, got {args.max_side}")
        writable_folder(args.out, "--out")
    elif args.command == "export":
        if args.limit is not None and args.limit < 1:
            raise InvalidArgumentError(f"--limit must be a positive number of items, got {args.limit}")
        writable_folder(args.out, "--out")
    elif args.command == "preview":
        from kf_model.data.preview import check_preview_out

        check_preview_out(args.out, args.n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kf_model.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser("preview", help="save a labelled grid of samples as a PNG")
    preview.add_argument("name", help=f"{', '.join(DATASET_NAMES)}, a folder of images, or hf:<dataset>")
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--split", default="test", choices=SPLIT_NAMES)
    preview.add_argument("--n", type=int, default=32, help="number of samples")
    preview.add_argument("--seed", type=int, default=0)
    stats = commands.add_parser("stats", help="print the pixel mean/std of a split (the InputSpec constants)")
    stats.add_argument("name", help=f"{', '.join(DATASET_NAMES)}, a folder of images, or hf:<dataset>")
    stats.add_argument("--split", default="train", choices=SPLIT_NAMES)
    export = commands.add_parser("export", help="write a built-in dataset as image files (folder tree or csv)")
    export.add_argument("name", choices=DATASET_NAMES)
    export.add_argument("--out", required=True, help="new or empty folder to write")
    export.add_argument("--format", default="folder", choices=FORMATS,
                        help="folder: <split>/<class>/<file> (single-label only); csv: metadata.csv + files")
    export.add_argument("--image-format", default="png", choices=tuple(IMAGE_FORMATS))
    export.add_argument("--rgb", action="store_true", help="write RGB images instead of greyscale")
    export.add_argument("--limit", type=int, default=None, help="a seeded subset of N items per split")
    export.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    export.add_argument("--split", default="both", choices=EXPORT_SPLITS)
    photos = commands.add_parser("photos", help="write the offline real photographs (kf_model.data.photos) to DIR")
    photos.add_argument("--out", required=True, help="folder to write (downscaled JPEGs + index.json)")
    photos.add_argument("--kind", default=None, choices=PHOTO_KINDS, help="only this kind (default: both)")
    photos.add_argument("--part", default=None, choices=PHOTO_PARTS,
                        help="only this part (held-out photos are for evaluation only; default: both)")
    photos.add_argument("--max-side", type=int, default=1024, help="longer side of the copies, in pixels")
    for command in (preview, stats, export):
        command.add_argument("--data-dir", default=None, help="folder holding the built-in dataset's files")
        command.add_argument("--download", action="store_true", help="download the built-in dataset if missing")
    args = parser.parse_args(argv)
    try:
        check_args(args)
        if args.command == "photos":
            index = export_photos(args.out, kind=args.kind, part=args.part, max_side=args.max_side)
            print(f"wrote {len(index['photos'])} photos to {args.out} (index.json says which are held out)")
            return 0
        if args.command == "export":
            done = export_dataset(args.name, args.out, format=args.format, image_format=args.image_format,
                                  rgb=args.rgb, limit=args.limit, split=args.split, seed=args.seed,
                                  root=args.data_dir, download=args.download)
            counts = ", ".join(f"{split} {n:,}" for split, n in done["counts"].items())
            print(f"wrote {done['out']} ({args.format}, {args.image_format}): {counts} images")
            return 0
        dataset = open_dataset(args.name, args.split, root=args.data_dir, download=args.download)
        if args.command == "preview":
            from kf_model.data.preview import save_preview

            out = save_preview(dataset, args.out, n=args.n, seed=args.seed, title=f"{args.name} ({args.split})")
            print(f"wrote {out}")
        else:
            torch.set_num_threads(1)
            mean, std = pixel_stats(dataset)
            print(f"{args.name} {args.split}: {len(dataset)} images, mean={mean}, std={std}")
    except KFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
