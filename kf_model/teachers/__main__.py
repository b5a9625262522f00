"""Teacher tools.

``python -m kf_model.teachers convert CHECKPOINT.pth --arch NAME --out DIR``: a trusted plain state dict becomes
a teacher folder (safetensors + timm's config.json), usable as ``--teacher DIR``.
``python -m kf_model.teachers task-map --out FILE.json``: ImageNet-1k's classes grouped into everyday questions
(dog, cat, vehicle, food...) through WordNet's hypernyms, for ``factorize.py --task-map``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from kf_model.errors import InvalidArgumentError, InvalidConfigError, KFError
from kf_model.utils import writable_file, writable_folder

if TYPE_CHECKING:
    from kf_model.teachers.task_maps import TaskMap


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m kf_model.teachers", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="a trusted .pth state dict -> safetensors teacher folder "
                                                  "(the only command that unpickles, weights_only=True)")
    convert.add_argument("checkpoint", type=Path, help="the plain state dict (.pth) you trust")
    convert.add_argument("--arch", required=True, help="the timm architecture it is for, e.g. efficientnet_lite0")
    convert.add_argument("--out", required=True, type=Path, help="the teacher folder to write")
    convert.add_argument("--map", dest="mapping", choices=("auto", "name", "order"), default="auto",
                         help="match keys by name, or by order with every shape checked (auto: name, else order)")
    convert.add_argument("--mean", type=float, nargs=3, required=True, help="per-channel input mean the weights "
                                                                             "expect ([0, 1] pixels)")
    convert.add_argument("--std", type=float, nargs=3, required=True, help="per-channel input std")
    convert.add_argument("--image-size", type=int, default=224)
    convert.add_argument("--num-classes", type=int, default=1000)
    convert.add_argument("--check-image", type=Path, help="an image whose class is known ...")
    convert.add_argument("--check-class", type=int, help="... and that class's index: the conversion is refused "
                                                          "unless the network's top answer is it")
    task_map = commands.add_parser("task-map", help="ImageNet-1k classes -> everyday one-vs-rest groups "
                                                    "(WordNet hypernyms)")
    task_map.add_argument("--out", required=True, type=Path, help="the task map JSON to write")
    task_map.add_argument("--wordnet", type=Path, default=None, help="WordNet 3.0 data.noun "
                                                                     "(default /usr/share/wordnet/data.noun)")
    task_map.add_argument("--check", type=Path, help="fail unless the derived map equals this committed one")
    return main


def read_check(path: Path) -> TaskMap:
    """The committed map ``--check`` names, read before WordNet is, its errors naming ``--check`` (TaskMap.read
    names the option that usually passes a map, ``--task-map``)."""
    from kf_model.teachers.task_maps import TaskMap

    try:
        return TaskMap.read(path)
    except InvalidConfigError as error:
        message = str(error)
        if message.startswith("--task-map "):
            message = "--check " + message.removeprefix("--task-map ")
        raise InvalidConfigError(message) from None


def check_convert_args(args: argparse.Namespace) -> None:
    """Refuse what ``convert`` would only find after the network is built and converted: an --out that cannot be
    a folder, a --check-class outside --num-classes, a missing --check-image."""
    if (args.check_image is None) != (args.check_class is None):
        raise InvalidArgumentError("--check-image and --check-class go together")
    if args.check_class is not None and not 0 <= args.check_class < args.num_classes:
        raise InvalidArgumentError(f"--check-class must be in [0, {args.num_classes - 1}] (--num-classes "
                                   f"{args.num_classes}), got {args.check_class}")
    if args.check_image is not None and not args.check_image.is_file():
        raise InvalidArgumentError(f"--check-image {args.check_image}: no such file")
    writable_folder(args.out, "--out")


def write_task_map(args: argparse.Namespace) -> None:
    from kf_model.teachers.wordnet import WORDNET_NOUNS, imagenet_task_map

    command = "python -m kf_model.teachers task-map --out " + str(args.out)
    writable_file(args.out, "--out")
    committed = read_check(args.check) if args.check is not None else None
    task_map = imagenet_task_map(args.wordnet or WORDNET_NOUNS, command=command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if committed is not None:
        if [(t.name, t.groups) for t in committed.tasks] != [(t.name, t.groups) for t in task_map.tasks]:
            raise SystemExit(f"error: WordNet derives another map than {args.check}: regenerate it with "
                             f"python -m kf_model.teachers task-map --out {args.check}")
    task_map.write(args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{t.name} ({sum(map(len, t.groups.values()))} classes)"
                                             for t in task_map.tasks))


def main(argv: list[str] | None = None) -> None:
    from kf_model.teachers.convert import ClassCheck, convert_checkpoint

    args = parser().parse_args(argv)
    if args.command == "task-map":
        try:
            return write_task_map(args)
        except KFError as error:
            raise SystemExit(f"error: {error}") from error
    try:
        check_convert_args(args)
        check = ClassCheck(args.check_image, args.check_class) if args.check_image else None
        config = convert_checkpoint(args.checkpoint, args.arch, args.out, mean=args.mean, std=args.std,
                                    image_size=args.image_size, num_classes=args.num_classes, mapping=args.mapping,
                                    check=check)
    except KFError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"wrote {args.out} ({config.architecture}, {config.num_classes} classes, keys mapped by "
          f"{config.extra['mapping']}); use it as --teacher {args.out}")
    if "class_check" in config.extra:
        print("check: " + json.dumps(config.extra["class_check"]))


if __name__ == "__main__":
    main()
